"""Catalog icons: which picture a template shows.

A template shows, in order: its uploaded icon (``Template.icon_file``, stored in the database
so every control-plane replica serves it without shared storage; checked on upload by
``sessions_app.icon_upload``), else the image URL in ``Template.icon`` (an ``https://``
address or a path on this site such as ``/static/icons/desktop.svg``), else a text badge of
the template's initials with the emoji ``icon`` holds (if any) as its tooltip: emoji render
as empty boxes on machines without an emoji font, so an emoji is never what is drawn.
"""

from __future__ import annotations

import hashlib

from django.urls import reverse


def digest(data: bytes) -> str:
    """A short content hash: part of the icon's URL, so a new upload is never served stale."""
    return hashlib.sha256(data).hexdigest()[:16]


def is_image_url(icon: str) -> bool:
    """Whether ``Template.icon`` names a picture (rather than holding an emoji)."""
    return icon.startswith(("https://", "http://", "/"))


def initials(name: str) -> str:
    """Up to two letters for the text badge: "Linux desktop (Selkies)" → "LD"."""
    words = [word for word in name.replace("(", " ").replace("-", " ").split() if word[:1].isalnum()]
    return "".join(word[0] for word in words[:2]).upper() or "?"


def badge(*, slug: str, display_name: str, icon: str, icon_digest: str) -> dict[str, str]:
    """What a template's icon slot shows: ``{"src": url}`` or ``{"emoji", "label"}``."""
    if icon_digest:
        return {"src": f"{reverse('portal:template-icon', args=[slug])}?v={icon_digest}"}
    if is_image_url(icon):
        return {"src": icon}
    return {"emoji": icon, "label": initials(display_name)}
