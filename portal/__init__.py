"""The project shell: settings, URLs, ASGI/WSGI, the Celery app, the API's
assembly and site pages. No app imports it."""

from __future__ import annotations

# Load the Celery app with Django so that @shared_task binds to it.
from portal.celery import app as celery_app

__all__ = ("celery_app",)
