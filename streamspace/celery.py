"""The Celery application (docs/architecture.md §11).

Configuration comes from Django settings (``CELERY_*``). With a broker configured
(``CELERY_BROKER_URL``, else ``REDIS_URL``, or ``sentinel://`` URLs with ``master_name`` when
``REDIS_SENTINELS`` is set) run ``celery -A streamspace worker -B`` next to the
control plane; without one tasks run eagerly and ``manage.py run_jobs`` runs the periodic
jobs of ``settings.STREAMSPACE_PERIODIC_JOBS`` in-process.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamspace.settings")

app = Celery("streamspace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["streamspace"], related_name="jobs")
