"""Periodic generation work, scheduled by Celery beat (portal/settings.py).
Torch-free: any worker process can run it. Every worker also runs the reaper
from its heartbeat thread (workers/heartbeat.py), so a lost beat only
delays nothing: this task is the second line."""

from __future__ import annotations

from celery import shared_task

from generation import services
from generation.availability import worker_name


@shared_task(name="generation.reap_jobs")
def reap_jobs() -> dict:
    return services.jobs_reap_if_due(owner=worker_name()) or {"skipped": 1}
