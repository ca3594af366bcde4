"""Generation rules: every change to a job. Views, the API, the admin and
tasks call these; none re-implements them. Reads live in generation.selectors.

A job's life: job_submit (hold + create, task sent after commit) ->
job_claim (queued -> running, conditional) -> job_progress ... ->
job_succeed (capture) | job_fail (release, or requeue while attempts last) |
job_refuse_images (the image check flagged a result: release) | job_cancel
(release). A prompt that a moderation check refuses never becomes a job
(generation.moderation). Each end schedules the job's webhook, if it has one
(generation.webhooks). jobs_reap fails or requeues what a dead worker left and
sends again what the broker lost; every worker runs it (jobs_reap_if_due).
"""

from __future__ import annotations

from generation.services._common import (
    BATCH_POLL_SECONDS,
    CLAIM_TRIES,
    MASK_OR_EXPAND,
    NO_CONTROL,
    NO_CONTROL_IMAGE,
    NO_MASK,
    NO_PICTURE,
    NO_PICTURE_STRENGTH,
    REAPER_LOCK,
    WORKER_LOST,
)
from generation.services.claims import (
    Abilities,
    job_claim,
    job_claim_companions,
    job_claim_warm,
)
from generation.services.lifecycle import (
    job_fail,
    job_progress,
    job_refuse_images,
    job_succeed,
    job_viewed,
)
from generation.services.submit import (
    control_preview,
    job_again,
    job_cancel,
    job_quote,
    job_submit,
)
from generation.services.sweeps import (
    jobs_reap,
    jobs_reap_if_due,
    results_expire,
)

__all__ = [
    "BATCH_POLL_SECONDS",
    "CLAIM_TRIES",
    "MASK_OR_EXPAND",
    "NO_CONTROL",
    "NO_CONTROL_IMAGE",
    "NO_MASK",
    "NO_PICTURE",
    "NO_PICTURE_STRENGTH",
    "REAPER_LOCK",
    "WORKER_LOST",
    "Abilities",
    "control_preview",
    "job_again",
    "job_cancel",
    "job_claim",
    "job_claim_companions",
    "job_claim_warm",
    "job_fail",
    "job_progress",
    "job_quote",
    "job_refuse_images",
    "job_submit",
    "job_succeed",
    "job_viewed",
    "jobs_reap",
    "jobs_reap_if_due",
    "results_expire",
]
