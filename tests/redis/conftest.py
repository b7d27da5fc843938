from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sentinel import SentinelCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    """A master, a replica and three Sentinels (with a password) for the module's tests."""
    with SentinelCluster(sentinels=3, master_name="ss-test", password="s3cret") as running:
        yield running


@pytest.fixture
def sentinel_settings(settings, cluster: SentinelCluster):
    """The control plane's settings pointed at ``cluster`` (database 2) the way the environment
    variables would (REDIS_URL's host:port is a closed port: only the Sentinels lead anywhere)."""
    env = cluster.env(db=2)
    settings.REDIS_URL = env["REDIS_URL"]
    settings.REDIS_SENTINELS = list(cluster.sentinels)
    settings.REDIS_SENTINEL_MASTER = cluster.master_name
    return settings
