"""Live job updates over the channel layer. It only rings the bell: a lost
message costs nothing, because every (re)connect starts from the database
snapshot (generation.consumers).

Sending never waits: job_send puts the message on this process's sender,
one event loop in a thread of its own that sends in order over connections
it keeps. A worker's step callback so costs microseconds, not a new event
loop and a Redis connection per step (async_to_sync's way), and events of
one job arrive in the order they were sent."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from generation.schemas import job_out
from generation.selectors import job_snapshot
from generation.status_cache import status_publish

log = logging.getLogger(__name__)


def job_group(job_id) -> str:
    return f"job.{job_id}"


def job_send(job_id, message: dict) -> None:
    """Best effort and immediate: a broken channel layer must never fail or
    slow a job. The message is encoded here, once: every socket of the job
    sends the same text (generation.consumers), not its own encoding."""
    _sender().put(job_group(job_id), {"type": "job.event", "text": json.dumps(message)})


def job_announce(job_id) -> None:
    """Send the job's current state (after a commit that changed it), and
    publish it for the status endpoint's fast path (generation.status_cache)."""
    job = job_snapshot(job_id)
    if job is not None:
        job_send(job_id, {"type": "job", "job": job_out(job)})
        status_publish(job)


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
        # A layer of its own: channels_redis binds state to the event loop
        # that uses it, and this loop is not the process's main one.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        while True:
            group, message = await self.queue.get()
            try:
                await layer.group_send(group, message)
            except Exception:
                log.warning("could not broadcast an update to %s", group, exc_info=True)
            finally:
                self.queue.task_done()

    def put(self, group: str, message: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (group, message))

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
