"""Which checkpoints a live worker can serve right now, read from worker
heartbeats in Redis. Torch-free: the web tier reads what workers publish
(workers/heartbeat.py writes these keys).

Each worker process keeps one key, `HEARTBEAT_PREFIX + <worker id>`, whose
value says which checkpoints it serves and which are loaded, with a TTL of
WORKER_HEARTBEAT_TTL seconds: a worker that dies stops refreshing it, the key
expires and its checkpoints become unavailable.
"""

from __future__ import annotations

import json
import os
import socket
from functools import cache

import redis
from django.conf import settings

HEARTBEAT_PREFIX = "portal:worker:"


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def heartbeat_client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def live_workers() -> list[dict]:
    """Every live worker's heartbeat: {"worker", "serves", "loaded", "device",
    "controls", "annotators", "at", ...}."""
    client = heartbeat_client()
    keys = list(client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=200))
    if not keys:
        return []
    return [json.loads(value) for value in client.mget(keys) if value]


def worker_is_beating(worker: str, *, job_id=None) -> bool:
    """Whether `worker` published a heartbeat within WORKER_HEARTBEAT_TTL
    (and, given `job_id`, listed that job among those it runs: a live worker
    that no longer runs a job, whose lease it holds by a fault, does not
    keep it)."""
    raw = heartbeat_client().get(HEARTBEAT_PREFIX + worker)
    if raw is None:
        return False
    if job_id is None:
        return True
    running = json.loads(raw).get("jobs")
    return running is None or str(job_id) in running


def available_slugs() -> set[str]:
    return {slug for worker in live_workers() for slug in worker.get("serves", [])}


def available_controls() -> set[str]:
    """The ControlNets (slugs) a live worker has the weights of."""
    return {slug for worker in live_workers() for slug in worker.get("controls", [])}


def available_loras() -> set[str]:
    """The LoRAs (slugs) a live worker has the file of."""
    return {slug for worker in live_workers() for slug in worker.get("loras", [])}


def available_annotators() -> set[str]:
    """The preprocessors with learned weights (catalog.controls.NEEDS_WEIGHTS)
    a live worker can run."""
    return {name for worker in live_workers() for name in worker.get("annotators", [])}


def runs_controlnet(worker: dict, *, slug: str, control: str, annotator: str | None = None) -> bool:
    """Whether this heartbeat shows a worker that serves checkpoint `slug`
    and has ControlNet `control` (and `annotator`, when the job's preprocess
    needs one)."""
    return (
        slug in worker.get("serves", [])
        and control in worker.get("controls", [])
        and (annotator is None or annotator in worker.get("annotators", []))
    )


def worker_name() -> str:
    """This process's name in heartbeats and job leases: "host:ns:pid", ns
    being its pid namespace (two containers may share a host name)."""
    return f"{socket.gethostname()}:{_pid_namespace()}:{os.getpid()}"


def worker_is_gone(worker: str) -> bool:
    """True only when `worker` (a lease owner, as worker_name) provably died:
    it ran on this host, in this pid namespace, and its process is gone or a
    zombie. Elsewhere the lease's expiry is the proof; a name that is not
    ours to judge is never called gone."""
    parts = worker.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, namespace, pid = parts
    if host != socket.gethostname() or namespace != _pid_namespace() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except OSError:  # no /proc, or hidden: alive as far as we can tell
        return False


@cache
def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"
