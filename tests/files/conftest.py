"""Fixtures of the files tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from tests.support.stack import Stack, running_stack, wait_for_other_connections_to_close

UPLOAD_LIMIT = 64 * 1024 * 1024  # above the tests' 50 MiB uploads


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    """The endpoint queries in sync_to_async's worker thread, which keeps its connection;
    close it so that the test database can be dropped."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def stack(request, tmp_path) -> Iterator[Stack]:
    """A running control plane whose upload limit admits the tests' 50 MiB files."""
    yield from running_stack(request, tmp_path, STREAMSPACE_UPLOAD_MAX_BYTES=str(UPLOAD_LIMIT))
    wait_for_other_connections_to_close()
