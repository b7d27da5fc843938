"""StreamSpace control plane. The Celery app is loaded with Django so ``@shared_task`` binds to it."""

from streamspace.celery import app as celery_app

# The version extension plugins declare their bounds against (plugins_app.registry).
__version__ = "1.0.0"

__all__ = ("__version__", "celery_app")
