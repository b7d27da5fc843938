"""Fixtures of the files tests."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.db import connections


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    """The endpoint queries in sync_to_async's worker thread, which keeps its connection;
    close it so that the test database can be dropped."""
    yield
    await sync_to_async(connections.close_all)()
