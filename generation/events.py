"""Live job updates over the channel layer. It only rings the bell: a lost
message costs nothing, because every (re)connect starts from the database
snapshot (generation.consumers)."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from generation.schemas import job_out
from generation.selectors import job_snapshot

log = logging.getLogger(__name__)


def job_group(job_id) -> str:
    return f"job.{job_id}"


def job_send(job_id, message: dict) -> None:
    """Best effort: a broken channel layer must never fail a job."""
    try:
        async_to_sync(get_channel_layer().group_send)(job_group(job_id), {"type": "job.event", "message": message})
    except Exception:
        log.warning("could not broadcast an update of job %s", job_id, exc_info=True)


def job_announce(job_id) -> None:
    """Send the job's current state (after a commit that changed it)."""
    job = job_snapshot(job_id)
    if job is not None:
        job_send(job_id, {"type": "job", "job": job_out(job)})
