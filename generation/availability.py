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
    """Every live worker's heartbeat: {"worker", "serves", "loaded", "device", "at"}."""
    client = heartbeat_client()
    keys = list(client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=200))
    if not keys:
        return []
    return [json.loads(value) for value in client.mget(keys) if value]


def available_slugs() -> set[str]:
    return {slug for worker in live_workers() for slug in worker.get("serves", [])}
