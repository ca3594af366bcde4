"""Worker heartbeats: each worker process keeps a Redis key with a TTL that
says which checkpoints it serves and which are loaded now. A key that is not
refreshed (the worker died) expires, and its checkpoints become unavailable.

Torch-free: the web tier reads heartbeats through live_workers().
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import cache

import redis
from django.conf import settings

log = logging.getLogger(__name__)
KEY_PREFIX = "portal:worker:"


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def publish(*, worker_id: str, serves: list[str], loaded: list[str], device: str) -> None:
    payload = {"worker": worker_id, "serves": serves, "loaded": loaded, "device": device, "at": time.time()}
    client().set(KEY_PREFIX + worker_id, json.dumps(payload), ex=settings.WORKER_HEARTBEAT_TTL)


def remove(worker_id: str) -> None:
    client().delete(KEY_PREFIX + worker_id)


def live_workers() -> list[dict]:
    keys = list(client().scan_iter(match=KEY_PREFIX + "*", count=200))
    if not keys:
        return []
    return [json.loads(value) for value in client().mget(keys) if value]


class Heartbeat(threading.Thread):
    """Publishes every TTL/3 seconds until stopped; a failed publish is
    logged and retried on the next beat (the key may expire meanwhile)."""

    def __init__(
        self,
        *,
        worker_id: str,
        serves: list[str],
        loaded: Callable[[], list[str]],
        device: str,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.worker_id, self.serves, self.loaded, self.device = worker_id, serves, loaded, device
        self.on_beat = on_beat
        self._stop_event = threading.Event()

    def beat(self) -> None:
        publish(worker_id=self.worker_id, serves=self.serves, loaded=self.loaded(), device=self.device)
        if self.on_beat is not None:
            self.on_beat()

    def run(self) -> None:
        interval = max(0.5, settings.WORKER_HEARTBEAT_TTL / 3)
        while not self._stop_event.is_set():
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed; retrying at the next beat")
            self._stop_event.wait(interval)

    def stop(self) -> None:
        self._stop_event.set()
        try:
            remove(self.worker_id)
        except redis.RedisError:
            log.warning("could not remove heartbeat %s; it expires by TTL", self.worker_id)
