"""The Celery app. Configuration lives in settings (CELERY_* names)."""

from __future__ import annotations

import logging.config
import os

from celery import Celery
from celery.signals import setup_logging
from django_structlog.celery.steps import DjangoStructLogInitStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Binds the request id (and user id) that a task's sender had, carried in the
# message's headers, to every line the task logs (django-structlog).
app.steps["worker"].add(DjangoStructLogInitStep)


@setup_logging.connect
def _logging_setup(loglevel=None, **kwargs) -> None:
    """Workers and beat log like the web (settings.LOGGING, portal.logs)
    instead of Celery's own format; `-l` still sets the level."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
