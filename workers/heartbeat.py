"""Worker heartbeats, the writing side: each worker process refreshes its
key every TTL/3 seconds (the format and the reading side are in
generation.availability)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings

from generation.availability import HEARTBEAT_PREFIX, heartbeat_client

log = logging.getLogger(__name__)


def publish(*, worker_id: str, serves: list[str], loaded: list[str], device: str) -> None:
    payload = {"worker": worker_id, "serves": serves, "loaded": loaded, "device": device, "at": time.time()}
    heartbeat_client().set(HEARTBEAT_PREFIX + worker_id, json.dumps(payload), ex=settings.WORKER_HEARTBEAT_TTL)


def remove(worker_id: str) -> None:
    heartbeat_client().delete(HEARTBEAT_PREFIX + worker_id)


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
