"""Periodic generation work, scheduled by Celery beat (portal/settings.py).
Torch-free: any worker process can run it. Every worker process also runs
the reaper from a thread of its own (workers/heartbeat.py: Reaper), so the
reaper does not depend on beat: this task is a second line. Expired
idempotency keys are ignored when met, and purged here."""

from __future__ import annotations

from celery import shared_task

from generation import services
from generation.availability import worker_name
from generation.idempotency import idempotency_keys_purge


@shared_task(name="generation.reap_jobs")
def reap_jobs() -> dict:
    return services.jobs_reap_if_due(owner=worker_name()) or {"skipped": 1}


@shared_task(name="generation.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    return idempotency_keys_purge()
