"""Periodic support work, scheduled by Celery beat (portal/settings.py)."""

from __future__ import annotations

from celery import shared_task

from support import services


@shared_task(name="support.remind_unread")
def remind_unread() -> int:
    return services.remind_unread()
