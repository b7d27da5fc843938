"""Session rows for the job tests: the shared factories of ``tests/factories.py``."""

from tests.factories import bulk_sessions, make_session

__all__ = ["bulk_sessions", "make_session"]
