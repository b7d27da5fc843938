"""Whether this run is CI, and what a missing service means there.

Locally a test whose service (PostgreSQL, Docker, an identity peer, a deploy tool) is absent
is skipped with the remedy; in CI (``CI=true``) the same absence fails the test, so a
misconfigured pipeline cannot pass by skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> NoReturn:
    """End the running test for a missing service: a skip locally, a failure in CI."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
