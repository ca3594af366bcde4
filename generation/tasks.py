"""Periodic generation work, scheduled by Celery beat (portal/settings.py).
Torch-free: any worker process can run it."""

from __future__ import annotations

from celery import shared_task

from generation import services


@shared_task(name="generation.reap_jobs")
def reap_jobs() -> dict:
    return services.jobs_reap()
