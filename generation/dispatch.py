"""How generation hands work to the workers: by Celery task name, on the
queue of the checkpoint. generation never imports workers/; the worker's
tasks are registered under these names (workers/tasks.py).

A job message is a turn of its checkpoint's queue: the worker that takes
it claims the next job in the fair queue (generation.services.job_claim),
which may be another one; one message per queued job, so no job waits
without a turn. Every job message sent is remembered by a marker key in the
broker's Redis until the job it stands for is taken (`job_received`). A
queued job without a marker has no message any more (a Redis restart
without persistence, a publish that failed after its commit), and
`jobs_unsent` finds it so the sweep in generation.services sends it again.
A duplicate message is harmless: an extra turn, which claims a queued job
if there is one (each by one conditional update) and otherwise does nothing.

A turn carries its checkpoint ("slug") and how often affinity routed it
("hops"): it may go to a worker's own queue instead of the checkpoint's
(generation.affinity), at most once.
"""

from __future__ import annotations

import contextlib
import logging

import redis
from celery import current_app
from django.conf import settings

from catalog.availability import heartbeat_client, live_workers
from catalog.queues import queue_for
from generation import affinity
from generation.observe import job_context, job_event

log = logging.getLogger(__name__)
RUN_JOB = "workers.run_job"
SENT_PREFIX = "portal:job-sent:"
# A marker outlives its message only in a double fault (a crash between the
# two writes, a broker that lost a popped message); it expires, and a job
# still queued then is sent again: a long wait may carry a duplicate message
# every SENT_MARKER_TTL seconds, an extra turn of its checkpoint.
SENT_MARKER_TTL = 600


def job_dispatch(*, job_id, slug: str, hops: int = 0, exclude: str | None = None, reason: str = "submit") -> None:
    """Mark the job sent, then send a turn of its checkpoint (its id, never
    the row): to an idle worker that holds the checkpoint when there is one
    and the turn may still be routed (generation.affinity; never to
    `exclude`), else to the checkpoint's queue. Marked first, so a fast
    worker's job_received always comes after. Raises when the broker cannot
    be reached; the job stays queued and unmarked, and the sweep sends it
    later. `reason` says why, in its log line (generation.observe)."""
    target = affinity.worker_reserve(slug, exclude=exclude) if affinity.may_forward(hops) else None
    _send_turn(job_id=job_id, slug=slug, hops=hops + bool(target), target=target, reason=reason)


def _send_turn(*, job_id, slug: str, hops: int, target: dict | None, reason: str) -> None:
    """Mark the job sent and send its turn to `target`'s own queue, or to the
    checkpoint's; on failure, unmark and free the reservation, and raise."""
    marker = SENT_PREFIX + str(job_id)
    heartbeat_client().set(marker, "1", ex=SENT_MARKER_TTL)
    queue = target["queue"] if target else queue_for(slug)
    try:
        with job_context(job_id):
            current_app.send_task(RUN_JOB, args=[str(job_id)], kwargs={"slug": slug, "hops": hops}, queue=queue)
    except Exception:
        with contextlib.suppress(redis.RedisError):
            heartbeat_client().delete(marker)
        if target:
            affinity.worker_unreserve(target["worker"])
        raise
    job_event("dispatched", job_id, model=slug, queue=queue, hops=hops, reason=reason)


def job_forward(*, job_id, slug: str, worker: str) -> bool:
    """A worker that does not hold `slug` took a turn of it: send the turn on
    to an idle worker that does, if there is one (True: this worker takes
    nothing). A turn is forwarded at most once: the new message has hops 1."""
    target = affinity.worker_reserve(slug, exclude=worker)
    if target is None:
        return False
    try:
        with job_context(job_id):
            current_app.send_task(RUN_JOB, args=[str(job_id)], kwargs={"slug": slug, "hops": 1}, queue=target["queue"])
    except Exception:
        affinity.worker_unreserve(target["worker"])
        log.warning("could not forward a turn of %s; serving it here", slug, exc_info=True)
        return False
    job_event("dispatched", job_id, model=slug, queue=target["queue"], hops=1, reason="forward", by_worker=worker)
    return True


def job_redirect(*, job_id, slug: str, worker: str, able) -> bool:
    """A worker took the turn of a job it cannot run (a ControlNet it does
    not have): send the turn straight to the queue of a live worker that can
    (able(heartbeat)), serving `slug`, if there is one (True). Raises like
    job_dispatch."""
    target = affinity.able_worker(slug, live_workers(), able, exclude=worker)
    if target is None:
        return False
    _send_turn(job_id=job_id, slug=slug, hops=1, target=target, reason="redirect")
    return True


def job_send_back(*, job_id, slug: str, worker: str) -> None:
    """A worker that does not hold `slug` serves a warm checkpoint instead of
    this turn: the turn goes to a worker that holds `slug`, busy or not (it
    takes it when free), else back to the checkpoint's queue; with hops 1,
    so whoever takes it serves it. Raises like job_dispatch."""
    target = affinity.worker_reserve(slug, exclude=worker, busy=True) if settings.JOB_AFFINITY else None
    _send_turn(job_id=job_id, slug=slug, hops=1, target=target, reason="send_back")


def job_received(job_id) -> None:
    """A worker took the job's message: from here on the job's lease, not
    the broker, keeps it alive. Best effort: a marker left behind only
    matters if the job stays queued, and then it expires."""
    try:
        heartbeat_client().delete(SENT_PREFIX + str(job_id))
    except redis.RedisError:
        log.warning("could not clear the sent marker of job %s", job_id, exc_info=True)


def jobs_unsent(job_ids: list) -> list:
    """The ids among `job_ids` whose message is not known to be in the broker."""
    if not job_ids:
        return []
    marks = heartbeat_client().mget([SENT_PREFIX + str(job_id) for job_id in job_ids])
    return [job_id for job_id, mark in zip(job_ids, marks, strict=True) if mark is None]


STOP_PREFIX = "portal:job-stop:"
STOP_TTL = 600


def job_stop_request(job_id) -> None:
    """Tell a running job's worker to stop (a cancel): its step callback
    looks for this between its less frequent database writes. Best effort:
    the next write finds the job no longer owned anyway."""
    try:
        heartbeat_client().set(STOP_PREFIX + str(job_id), "1", ex=STOP_TTL)
    except redis.RedisError:
        log.warning("could not signal job %s to stop", job_id, exc_info=True)


def job_stop_requested(job_id) -> bool:
    try:
        return bool(heartbeat_client().exists(STOP_PREFIX + str(job_id)))
    except redis.RedisError:
        return False


DELIVER_WEBHOOK = "generation.deliver_webhook"


def webhook_dispatch(*, delivery_id: int, attempt: int) -> None:
    """Attempt `attempt` of a webhook delivery, on the default queue
    (settings.HOUSEKEEPING_QUEUE: the housekeeping worker's), never on a
    checkpoint's."""
    current_app.send_task(DELIVER_WEBHOOK, args=[delivery_id, attempt])
