"""The session images StreamSpace ships (``deploy/images``): their names, and what a user is
told when one is missing on a Docker host.

Every shipped image is ``ghcr.io/streamspace-dev/<name>:<version>``, the version being the
project's (``agent_runtime.__version__``, the same as ``pyproject.toml``): the names
templates use work unchanged on a host where ``make images`` built them with no registry and
on one that pulls them from a registry.
"""

from __future__ import annotations

from agent_runtime import __version__

REPOSITORY = "ghcr.io/streamspace-dev"
NAMES = ("desktop", "terminal", "firefox", "libreoffice")
HOME_PATH = "/home/user"  # the session user's home (uid 1000) in every shipped image
STREAMING_PORT = 8080  # where selkies serves in them (STREAMSPACE_STREAMING_PORT overrides)


def shipped_image(name: str, version: str = __version__) -> str:
    """The reference of the shipped image ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"{name!r} is not a shipped image (one of {', '.join(NAMES)})")
    return f"{REPOSITORY}/{name}:{version}"


def is_shipped(image: str) -> bool:
    return image.startswith(f"{REPOSITORY}/")


def missing_image_hint(image: str) -> str:
    """What to do about ``image`` missing on a Docker host, as one sentence."""
    if is_shipped(image):
        return (
            f"Build it on the agent's host with `make images` (the StreamSpace session images, "
            f"deploy/images), or pull {image} from a registry that has it."
        )
    return f"Pull it there (`docker pull {image}`), or push it to a registry the host can reach."
