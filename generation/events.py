"""Live job updates, published on the job's Redis channel
(generation.fanout: each server process fans them out to its sockets of
the job). It only rings the bell: a lost message costs nothing, because
every (re)connect starts from the database snapshot (generation.consumers).

Sending never waits: job_send puts the message on this process's sender,
one event loop in a thread of its own that publishes in order over a
connection it keeps. A step so costs the caller microseconds, not a new
event loop and a Redis connection per step (async_to_sync's way), and
events of one job arrive in the order they were sent."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading

import redis.asyncio as aioredis
from django.conf import settings

from generation.fanout import event_wire, job_channel
from generation.schemas import job_out
from generation.selectors import job_snapshot
from generation.status_cache import status_publish

log = logging.getLogger(__name__)


def job_send(job_id, message: dict) -> None:
    """Best effort and immediate: a broken Redis must never fail or slow a
    job. The message is encoded here, once: every socket of the job sends
    the same text (generation.consumers), not its own encoding."""
    _sender().put(job_channel(job_id), event_wire(message.get("type", ""), json.dumps(message)))


def job_announce(job_id) -> None:
    """Send the job's current state (after a commit that changed it), and
    publish it for the status endpoint's fast path (generation.status_cache)."""
    job = job_snapshot(job_id)
    if job is not None:
        data = job_out(job)
        job_send(job_id, {"type": "job", "job": data})
        status_publish(job, data)


def events_flush(timeout: float = 5.0) -> bool:
    """Wait until everything sent so far has gone out (tests; process exit)."""
    sender = _current
    return sender is None or sender.pid != os.getpid() or sender.flush(timeout)


class _Sender:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="job-events", daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        ready.set()
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        # A client of its own: redis.asyncio binds connections to the event
        # loop that uses them, and this loop is not the process's main one.
        client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)
        while True:
            channel, message = await self.queue.get()
            try:
                await client.publish(channel, message)
            except Exception:
                log.warning("could not broadcast an update to %s", channel, exc_info=True)
            finally:
                self.queue.task_done()

    def put(self, channel: str, message: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (channel, message))

    def flush(self, timeout: float) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(self.queue.join(), self.loop).result(timeout)
        except TimeoutError:
            return False
        return True


_current: _Sender | None = None
_lock = threading.Lock()


def _sender() -> _Sender:
    """This process's sender, started on first use (and again in a forked
    child, which inherits no running thread)."""
    global _current
    sender = _current
    if sender is None or sender.pid != os.getpid():
        with _lock:
            if _current is None or _current.pid != os.getpid():
                _current = _Sender()
            sender = _current
    return sender


atexit.register(events_flush, 2.0)
