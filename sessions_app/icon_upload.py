"""What an uploaded catalog icon may be (``Template.icon_file``).

PNG, JPEG or WebP (decoded by Pillow to prove it) or SVG (parsed with defusedxml, which
refuses entity expansion and external references), at most :data:`MAX_ICON_BYTES`. The
portal serves uploads with a ``sandbox`` Content-Security-Policy and ``nosniff`` and shows them
through ``<img>``, where an SVG's scripts never run.
"""

from __future__ import annotations

import io
from typing import Any

from defusedxml import ElementTree
from django import forms
from django.core.exceptions import ValidationError
from PIL import Image, UnidentifiedImageError

MAX_ICON_BYTES = 256 * 1024
RASTER_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
SVG_TYPE = "image/svg+xml"


def read_icon(data: bytes) -> str:
    """The content type of an acceptable icon file, or :class:`ValidationError` saying why not."""
    if len(data) > MAX_ICON_BYTES:
        raise ValidationError(
            f"An icon may be at most {MAX_ICON_BYTES // 1024} KiB (this one is {len(data) // 1024} KiB)."
        )
    if not data:
        raise ValidationError("The icon file is empty.")
    head = data.lstrip()[:5].lower()
    if head.startswith((b"<?xml", b"<svg", b"<!--")):
        try:
            root = ElementTree.fromstring(data)
        except (ElementTree.ParseError, ValueError) as exc:  # ValueError: defusedxml refusals
            raise ValidationError(f"The SVG icon cannot be read: {exc}") from exc
        if not root.tag.endswith("svg"):
            raise ValidationError("The SVG icon's root element is not <svg>.")
        return SVG_TYPE
    try:
        with Image.open(io.BytesIO(data)) as picture:
            kind = picture.format
            picture.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValidationError("The icon must be a PNG, JPEG, WebP or SVG image.") from exc
    if kind not in RASTER_TYPES:
        raise ValidationError(f"{kind} icons are not accepted: use PNG, JPEG, WebP or SVG.")
    return RASTER_TYPES[kind]


class IconUploadForm(forms.Form):
    """Form fields that upload or remove a template's icon; mixed into the template forms of
    the Django admin and the operator panel (``class F(IconUploadForm, forms.ModelForm)``).

    The checked file is applied to the instance by ``save`` (with ``commit`` or without, as the
    admin calls it), so the upload is stored with the rest of the template in one save.
    """

    icon_upload = forms.FileField(
        required=False,
        label="Upload an icon",
        help_text=f"PNG, JPEG, WebP or SVG, at most {MAX_ICON_BYTES // 1024} KiB; shown instead of the icon URL.",
    )
    icon_remove = forms.BooleanField(required=False, label="Remove the uploaded icon")

    def clean_icon_upload(self) -> Any:
        upload = self.cleaned_data.get("icon_upload")
        if upload:
            data = upload.read(MAX_ICON_BYTES + 1)
            self._icon = (data, read_icon(data))
        return upload

    def save(self, commit: bool = True) -> Any:
        instance = super().save(commit=False)
        if getattr(self, "_icon", None):
            instance.set_icon_file(*self._icon)
        elif self.cleaned_data.get("icon_remove"):
            instance.set_icon_file(b"", "")
        if commit:
            instance.save()
            self._save_m2m()
        return instance
