from __future__ import annotations

import pytest

from tests.support.webhook_receiver import Receiver


@pytest.fixture
def receiver_factory(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture(autouse=True)
def _deliver_in_process(settings):
    """Attempts run inline in these tests; tests/jobs/test_celery_worker.py covers the broker path."""
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture(autouse=True)
def _clear_plugin_caches():
    from plugins_app import registry, theme

    registry.invalidate()
    theme.invalidate()
    yield
    registry.invalidate()
    theme.invalidate()
