"""Worker heartbeats, the writing side: each worker process refreshes its
key several times per TTL (the format and the reading side are in
catalog.availability), and on the same beat renews its running job's
lease (workers.services.renew_lease). A second thread offers to run the
reaper (workers.services.reap).

The threads must outlive any outage: each duty fails alone, and a database
error closes the thread's connection so the next run opens a new one (a
PostgreSQL restart would otherwise stop lease renewal for good)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import Error as DatabaseError
from django.db import connection

from catalog.availability import HEARTBEAT_PREFIX, heartbeat_client

log = logging.getLogger(__name__)


def publish(
    *,
    worker_id: str,
    serves: list[str],
    loaded: list[str],
    device: str,
    jobs: list[str] = (),
    queue: str = "",
    busy: bool = False,
    controls: list[str] = (),
    annotators: list[str] = (),
    loras: list[str] = (),
) -> None:
    payload = {
        "worker": worker_id,
        "serves": serves,
        "controls": list(controls),  # ControlNets whose weights it has
        "loras": list(loras),  # LoRAs whose file it has
        "annotators": list(annotators),  # preprocessors with weights it can run (workers.annotators)
        "loaded": loaded,  # least recently used first
        "device": device,
        "jobs": list(jobs),  # the jobs it runs now: the reaper leaves their leases alone
        "queue": queue,  # its own queue (generation.affinity): "" when it has none
        "busy": busy,  # taking a turn now (model affinity sends turns only to idle workers)
        "at": time.time(),
    }
    heartbeat_client().set(HEARTBEAT_PREFIX + worker_id, json.dumps(payload), ex=settings.WORKER_HEARTBEAT_TTL)


def remove(worker_id: str) -> None:
    heartbeat_client().delete(HEARTBEAT_PREFIX + worker_id)


def beat_interval() -> float:
    """Often enough for the heartbeat key and the job lease: three times per
    TTL and per lease."""
    return max(0.5, min(settings.WORKER_HEARTBEAT_TTL / 3, settings.JOB_LEASE_SECONDS / 3))


def run_duty(duty: Callable[[], None], what: str) -> None:
    """Run one periodic duty; it fails alone. A database error closes this
    thread's connection, so the next run opens a new one."""
    try:
        duty()
    except DatabaseError:
        log.warning("database error in the %s; reconnecting next time", what, exc_info=True)
        connection.close()
    except Exception:
        log.exception("the %s failed; retrying next time", what)


class Reaper(threading.Thread):
    """Offers to run the reaper every REAPER_INTERVAL seconds, in its own
    thread so a slow reaper pass never delays the heartbeat or a lease."""

    def __init__(self, duty: Callable[[], None]) -> None:
        super().__init__(name="reaper", daemon=True)
        self.duty = duty
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(settings.REAPER_INTERVAL):
            run_duty(self.duty, "reaper")

    def stop(self) -> None:
        self._stop_event.set()


class Heartbeat(threading.Thread):
    """Beats every beat_interval() seconds until stopped; a failed beat is
    logged and retried on the next one (the key may expire meanwhile)."""

    def __init__(
        self,
        *,
        worker_id: str,
        serves: list[str],
        loaded: Callable[[], list[str]],
        device: str,
        on_beat: Callable[[], None] | None = None,
        jobs: Callable[[], list[str]] = list,
        queue: str = "",
        busy: Callable[[], bool] = bool,
        controls: list[str] = (),
        annotators: list[str] = (),
        loras: list[str] = (),
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.worker_id, self.serves, self.loaded, self.device = worker_id, serves, loaded, device
        self.controls, self.annotators, self.loras = list(controls), list(annotators), list(loras)
        self.on_beat, self.jobs, self.queue, self.busy = on_beat, jobs, queue, busy
        self._stop_event = threading.Event()
        # One publish at a time: a beat that read "idle" cannot land after a
        # refresh that says "busy".
        self._publishing = threading.Lock()

    def publish(self) -> None:
        """Publish now (also between beats: when a turn starts or ends, so
        that model affinity sees who is idle without waiting for a beat)."""
        try:
            with self._publishing:
                publish(
                    worker_id=self.worker_id,
                    serves=self.serves,
                    loaded=self.loaded(),
                    device=self.device,
                    jobs=self.jobs(),
                    queue=self.queue,
                    busy=self.busy(),
                    controls=self.controls,
                    annotators=self.annotators,
                    loras=self.loras,
                )
        except Exception:
            log.exception("heartbeat publish failed; retrying at the next beat")

    def beat(self) -> None:
        """Publish, then the other duties; each may fail without the rest."""
        self.publish()
        if self.on_beat is not None:
            run_duty(self.on_beat, "heartbeat's lease renewal")

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.beat()
            self._stop_event.wait(beat_interval())

    def stop(self) -> None:
        self._stop_event.set()
        try:
            remove(self.worker_id)
        except redis.RedisError:
            log.warning("could not remove heartbeat %s; it expires by TTL", self.worker_id)
