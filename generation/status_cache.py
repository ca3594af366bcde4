"""A running job's status JSON, written through to Redis, for the fast path
of GET /api/v1/jobs/<id> (portal.fast_status), which serves a polling
owner without Django, the database or a thread.

The database stays the truth; this is a copy that is never older than what
a reader could have seen. Only a running job is served from it: a queued
job's answer has its queue position, which every other job's claim changes,
and an ended job is read once. Writers, never readers, fill it:

- job_announce (generation.events), after every commit that changes a job
  (submit, claim, take-over, requeue, success, failure, cancel, the
  reaper's), publishes the job as the database has it then: a running job's
  JSON, or for any other state a tombstone that sends its readers to Django;
- every write of a running job's progress to its row (job_progress) puts
  the step into the copy.

Each copy carries a version that only grows over a job's life (attempts,
then the step while running, then above every step once it stops
running), and Redis keeps the greater: two writers that read the row at
different moments cannot put an older state back.

One hash per job, STATUS_PREFIX + id: v (the version), user (the owner's
id), head and tail (the JSON around its "progress" value; empty in a
tombstone), step and total. A running copy expires RUNNING_TTL seconds
after its last write (its progress is written every
JOB_PROGRESS_WRITE_SECONDS and its lease renewed every third of a lease),
a tombstone after TOMBSTONE_TTL.
"""

from __future__ import annotations

import json
import logging

import redis
from django.conf import settings

from catalog.availability import heartbeat_client
from generation.models import Job
from generation.schemas import job_out

log = logging.getLogger(__name__)

STATUS_PREFIX = "portal:status:"
# A running job's copy lives a few leases past its last write (its lease is
# renewed, and the copy with it, every third of a lease): one whose last
# write was lost (the process died between commit and publish, a Redis
# failover) is gone soon, and its readers sent to Django. A tombstone lives
# longer than any writer that read the row before it could be late.
RUNNING_TTL = max(30, 3 * settings.JOB_LEASE_SECONDS)
TOMBSTONE_TTL = 3600
_STEPS = 1_000_000  # more than any job's steps: a version's room per attempt
_PLACEHOLDER = "\x00progress\x00"

# Keep the greater version: a publish replaces the entry unless it is older.
_PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if tonumber(ARGV[1]) < current then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'user', ARGV[2], 'head', ARGV[3], 'tail', ARGV[4],
           'step', ARGV[5], 'total', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""
# A newer step of a running job's copy, and its life extended (the same step
# too: a lease renewal); nothing for a missing entry, a tombstone or an older step.
_PROGRESS = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if current < 0 or tonumber(ARGV[1]) < current or redis.call('HGET', KEYS[1], 'head') == '' then return 0 end
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'step', ARGV[2], 'total', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def status_key(job_id) -> str:
    return f"{STATUS_PREFIX}{job_id}"


def status_version(*, attempts: int, running: bool, step: int = 0) -> int:
    return attempts * _STEPS + (min(step, _STEPS - 2) if running else _STEPS - 1)


def status_publish(job: Job, data: dict | None = None) -> None:
    """The copy of `job` (a snapshot: generation.selectors.job_rows), as the
    database has it now; `data`, its job_out when the caller has made it. Best effort: a copy not written leaves the one
    before it, which the greater versions of the next writes replace; a
    reader of a missing or stale-by-version copy is sent to Django."""
    running = job.status == Job.Status.RUNNING
    head = tail = ""
    if running:
        data = {**(data if data is not None else job_out(job)), "progress": _PLACEHOLDER}
        head, tail = json.dumps(data, separators=(",", ":")).split(json.dumps(_PLACEHOLDER), 1)
    version = status_version(attempts=job.attempts, running=running, step=job.progress_step)
    try:
        heartbeat_client().eval(
            _PUBLISH,
            1,
            status_key(job.id),
            version,
            job.user_id,
            head,
            tail,
            job.progress_step,
            job.progress_total,
            RUNNING_TTL if running else TOMBSTONE_TTL,
        )
    except redis.RedisError:
        log.warning("could not publish job %s's status", job.id, exc_info=True)


def status_forget(job_id) -> None:
    """Drop a job's copy: for the one change that lowers a version (a
    companion given back before it ran, its attempt undone)."""
    try:
        heartbeat_client().delete(status_key(job_id))
    except redis.RedisError:
        log.warning("could not drop job %s's status", job_id, exc_info=True)


def status_progress(job: Job) -> None:
    """A running job's step, written to its row just now, into its copy."""
    version = status_version(attempts=job.attempts, running=True, step=job.progress_step)
    try:
        heartbeat_client().eval(
            _PROGRESS, 1, status_key(job.id), version, job.progress_step, job.progress_total, RUNNING_TTL
        )
    except redis.RedisError:
        log.warning("could not publish job %s's progress", job.id, exc_info=True)


def status_body(fields: list) -> tuple[str, bytes] | None:
    """(owner's id, JSON body) from an entry's [user, head, tail, step,
    total] as Redis answers them (bytes or str), or None when the entry is
    missing or a tombstone. Shared by the fast path and the tests."""
    user, head, tail, step, total = (value.decode() if isinstance(value, bytes) else value for value in fields)
    if not head:
        return None
    progress = '{"step":%d,"total":%d}' % (int(step), int(total))  # noqa: UP031 (a template of two ints)
    return user, f"{head}{progress}{tail}".encode()


STATUS_FIELDS = ("user", "head", "tail", "step", "total")


def status_read(job_id) -> tuple[str, bytes] | None:
    """The copy of a job, as the fast path reads it (tests)."""
    return status_body(heartbeat_client().hmget(status_key(job_id), STATUS_FIELDS))
