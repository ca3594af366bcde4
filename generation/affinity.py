"""Model affinity: a turn of a checkpoint goes to a worker that already holds
its pipeline when one is free. Torch-free; the web tier and the workers both
route with it (generation.dispatch), reading what heartbeats publish
(catalog.availability).

Every worker that serves checkpoints also consumes a queue of its own (its
"queue" in the heartbeat, added at start-up by workers.boot). A turn may be
routed by affinity once (its "hops" go from 0 to 1); a turn with hops >= 1 is
served by whoever takes it, so no turn ping-pongs:
- at dispatch, a turn goes to the direct queue of an idle worker that serves
  the checkpoint and holds it loaded, else to the checkpoint's queue;
- a worker that takes a turn (hops 0) of a checkpoint it does not hold sends
  it on to such a worker, if there is one, and takes nothing; if there is
  none and it holds a checkpoint with a queued job, it serves that job and
  sends the turn back: to a busy worker that holds its checkpoint (served
  there when its job ends), else to the checkpoint's queue.

A worker is idle when its heartbeat says so ("busy" false, no "jobs"; the
worker publishes at once when it starts or ends a turn) and no forwarded turn
is on its way to it: forwarding first reserves the worker (one key per
worker, SET NX), so a burst of submits cannot pile turns on one worker while
others are free. The worker clears its reservation once it has taken the
forwarded turn. A reservation whose worker stopped beating is a turn that may
sit in a queue nobody reads: the reaper sends its checkpoint a fresh turn
(generation.services.jobs_reap); an extra turn is harmless. A stale "idle"
costs at most a wait behind one job or a cold load, never a lost job.
"""

from __future__ import annotations

import contextlib
import logging

import redis
from django.conf import settings

from catalog.availability import heartbeat_client, live_workers, worker_is_beating

log = logging.getLogger(__name__)
RESERVED_PREFIX = "portal:affinity:"
# Longer than any idle worker takes to fetch a message; a reservation that
# outlives it while its worker still beats was late, not lost (the turn waits
# in that worker's queue behind its job), and the worker is free to reserve.
RESERVATION_TTL = 60
DIRECT_QUEUE_PREFIX = "worker."
MAX_HOPS = 1


def direct_queue_for(worker: str) -> str:
    """The queue of one Celery worker, named after its main process (as
    worker_name): its pool process publishes it as its heartbeat's "queue"."""
    return DIRECT_QUEUE_PREFIX + worker


def is_idle_holder(slug: str, worker: dict) -> bool:
    """Whether this heartbeat shows a worker that serves `slug`, holds it
    loaded, consumes a direct queue and runs nothing."""
    return is_holder(slug, worker) and not worker.get("busy") and not worker.get("jobs")


def is_holder(slug: str, worker: dict) -> bool:
    """Whether this heartbeat shows a worker that serves `slug`, holds it
    loaded and consumes a direct queue, busy or not."""
    return bool(worker.get("queue")) and slug in worker.get("serves", ()) and slug in worker.get("loaded", ())


def choose_workers(slug: str, workers: list[dict], *, exclude: str | None = None, busy: bool = False) -> list[dict]:
    """The idle workers that hold `slug` (with `busy`, the busy ones too,
    after the idle), best first: where it was used most recently ("loaded"
    lists a cache least recently used first), so it is the last to be
    evicted there; then by name, for a stable order."""
    found = [
        worker
        for worker in workers
        if worker.get("worker") != exclude and (is_holder(slug, worker) if busy else is_idle_holder(slug, worker))
    ]
    return sorted(
        found,
        key=lambda worker: (
            not is_idle_holder(slug, worker),
            list(reversed(worker["loaded"])).index(slug),
            worker["worker"],
        ),
    )


def choose_worker(slug: str, workers: list[dict], *, exclude: str | None = None) -> str | None:
    """The name of the idle worker a turn of `slug` should go to, or None."""
    chosen = choose_workers(slug, workers, exclude=exclude)
    return chosen[0]["worker"] if chosen else None


def able_worker(slug: str, workers: list[dict], able, *, exclude: str | None = None) -> dict | None:
    """A live worker that serves `slug`, consumes a direct queue and passes
    `able(heartbeat)` (it can run the job: a ControlNet's network): an idle
    holder first, then a busy holder, then any other."""
    found = [w for w in workers if w.get("worker") != exclude and w.get("queue") and able(w)]
    holders = choose_workers(slug, found, busy=True)
    return holders[0] if holders else (found[0] if found else None)


def may_forward(hops: int) -> bool:
    return settings.JOB_AFFINITY and hops < MAX_HOPS


def worker_reserve(slug: str, *, exclude: str | None = None, busy: bool = False) -> dict | None:
    """Reserve an idle worker that holds `slug` (with `busy`, a busy one if
    none is idle: it takes the turn when its job ends) for one turn: its
    heartbeat (send to its "queue"), or None (no such worker, or Redis cannot
    say: the turn then goes to the checkpoint's queue as without affinity)."""
    try:
        client = heartbeat_client()
        for worker in choose_workers(slug, live_workers(), exclude=exclude, busy=busy):
            if client.set(RESERVED_PREFIX + worker["worker"], slug, nx=True, ex=RESERVATION_TTL):
                return worker
    except redis.RedisError:
        log.warning("affinity: could not read or reserve workers; sending %s to its queue", slug, exc_info=True)
    return None


def worker_unreserve(worker: str) -> None:
    """Drop `worker`'s reservation (it took the forwarded turn, or the turn
    could not be sent)."""
    with contextlib.suppress(redis.RedisError):
        heartbeat_client().delete(RESERVED_PREFIX + worker)


def reservations_orphaned() -> list[str]:
    """The checkpoints of reservations whose worker no longer beats, each
    reservation removed as it is read (a forwarded turn may be stuck in the
    queue of a worker that died or stopped): one slug per such turn."""
    client = heartbeat_client()
    slugs = []
    for key in client.scan_iter(match=RESERVED_PREFIX + "*", count=200):
        worker = key.removeprefix(RESERVED_PREFIX)
        if not worker_is_beating(worker) and (slug := client.getdel(key)):
            slugs.append(slug)
    return slugs
