"""Names of users' persistent homes: one per exact user name, never shared (pure functions).

A home's name is a readable slug of the user name plus 16 hex digits of the SHA-256 of the
exact user name (UTF-8): ``alice`` → ``alice-2bd806c97f0e00af``, ``alice_`` →
``alice-2310328f6e4e7d0e``. The digest makes the mapping injective however the slug folds
characters (``alice``, ``alice_``, ``alice.``, ``_alice``, ``bob@corp`` and ``bob_corp``
all get different homes); 64 bits keep a deliberate collision out of reach of anyone who
can choose their user name. The slug is lower-case ``[a-z0-9-]``, so the same key names a
Docker volume, a directory or a Kubernetes object.

Homes named by earlier releases (``streamspace-home-<cleaned name>``, ``homes/<cleaned
name>``) folded ``_ . - @ +`` and so were shared by such users; :func:`legacy_docker_volume`
and :func:`legacy_local_dir` give those names so that each backend can hand an existing
home to the user it provably belongs to (see the backends' docstrings and
docs/persistent-homes.md).
"""

from __future__ import annotations

import hashlib
import re

DOCKER_HOME_PREFIX = "streamspace-home-"
DIGEST_HEX = 16
SLUG_MAX = 32

_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_LEGACY_DOCKER_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
_LEGACY_LOCAL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def digest(username: str) -> str:
    """The first :data:`DIGEST_HEX` hex digits of SHA-256 of the exact user name."""
    return hashlib.sha256(username.encode("utf-8")).hexdigest()[:DIGEST_HEX]


def slug(username: str) -> str:
    """A readable, lossy form of the user name: lower-case letters, digits and ``-``."""
    text = _SLUG_UNSAFE.sub("-", username.lower()).strip("-")[:SLUG_MAX].strip("-")
    return text or "user"


def home_key(username: str) -> str:
    """``<slug>-<digest>``: the part of every home name that identifies its user."""
    if not username:
        raise ValueError("a home needs a user name")
    return f"{slug(username)}-{digest(username)}"


def docker_home_volume(username: str) -> str:
    """``streamspace-home-<slug>-<digest>``: the user's Docker home volume."""
    return DOCKER_HOME_PREFIX + home_key(username)


def legacy_docker_volume(username: str) -> str | None:
    """The volume earlier releases used for ``username`` (None if they could not name one)."""
    cleaned = _LEGACY_DOCKER_UNSAFE.sub("_", username).strip("._-")
    return DOCKER_HOME_PREFIX + cleaned if cleaned else None


def legacy_docker_owner(volume_name: str) -> str:
    """The user name a legacy volume's name spells (``streamspace-home-alice`` → ``alice``)."""
    return volume_name.removeprefix(DOCKER_HOME_PREFIX)


def legacy_local_dir(username: str) -> str:
    """The directory name under ``homes/`` earlier releases of the local backend used."""
    return (_LEGACY_LOCAL_UNSAFE.sub("_", username).strip("._") or "_")[:64]
