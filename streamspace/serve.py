"""Start daphne on uvloop: ``python -m streamspace.serve <daphne's arguments>``.

daphne runs Twisted's asyncio reactor on a loop it creates when ``daphne.server`` is first
imported (``asyncio.new_event_loop()``), so the event-loop policy in force at that moment
decides which loop serves every request. This module installs uvloop's policy first and
then hands over to daphne's own command line, unchanged. uvloop's C loop takes a large
share of the per-request cost out of the proxy's hot path (bench/RESULTS.md, "## Proxy").

Without uvloop (not installed, or a platform it does not support) daphne runs on asyncio's
default loop and says so on stderr; everything works the same, only slower.
"""

from __future__ import annotations

import asyncio
import logging
import sys

logger = logging.getLogger("streamspace.serve")


def install_uvloop() -> bool:
    """Make uvloop the event-loop policy for the loop daphne creates; False if unavailable.

    Must run before ``daphne.server`` is imported: the loop is made at import time.
    """
    if "daphne.server" in sys.modules:
        raise RuntimeError("install_uvloop() must run before daphne.server is imported")
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def main(argv: list[str] | None = None) -> None:
    """Install uvloop when available, then run daphne's command line with ``argv``."""
    if not install_uvloop():
        # Logging is not configured yet (daphne does that from its -v option): logging's
        # last-resort handler prints warnings to stderr, which is where this belongs.
        logger.warning("uvloop is not installed: daphne runs on asyncio's default event loop")
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
