"""Job events to the job pages' websockets, one Redis channel per job.

A job's events (generation.events.job_send: steps, previews, states) are
published once, encoded once, on the job's own Redis channel. Each server
process subscribes to a job's channel while it holds a socket of that job,
once however many it holds, and hands every event to each of those sockets
(JobFanout.read -> the consumer's deliver), in the order published. A socket
that lags does not build a backlog of steps: its outbox keeps the latest
step and preview not sent yet, and every state message, in order
(generation.consumers). Channels' group machinery, a channel and a dispatch
per socket per event, cost 1 s and more at 1,000 sockets and 50 events a
second, and left no place to drop a step a newer one replaced
(bench/ws_progress.py).

At most once, like the channel layer before it: every (re)connect starts
from the database snapshot, and the client can ask for it again.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

import redis.asyncio as aioredis
from django.conf import settings

log = logging.getLogger(__name__)


def job_channel(job_id) -> str:
    return f"{settings.CHANNELS_PREFIX}:job:{job_id}"


def event_wire(kind: str, text: str) -> str:
    """An event as published: its kind (what a newer one may replace), then its JSON."""
    return f"{kind}|{text}"


class JobFanout:
    """This process's subscriptions, in one event loop (a server process
    has one; tests make one per loop)."""

    def __init__(self) -> None:
        self.client = aioredis.Redis.from_url(settings.REDIS_URL)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.sockets: dict[str, set] = {}
        self.lock = asyncio.Lock()
        self.reader: asyncio.Task | None = None

    async def join(self, job_id, socket) -> None:
        """`socket` (with deliver(kind, text)) gets `job_id`'s events from now on."""
        channel = job_channel(job_id)
        async with self.lock:
            if channel not in self.sockets:
                await self.pubsub.subscribe(channel)  # first: a failure leaves nothing behind
                self.sockets[channel] = set()
            self.sockets[channel].add(socket)
            if self.reader is None or self.reader.done():
                self.reader = asyncio.ensure_future(self._read())

    async def leave(self, job_id, socket) -> None:
        channel = job_channel(job_id)
        async with self.lock:
            members = self.sockets.get(channel)
            if members is None:
                return
            members.discard(socket)
            if not members:
                del self.sockets[channel]
                try:
                    await self.pubsub.unsubscribe(channel)
                except (aioredis.RedisError, OSError):
                    # Not subscribed again on the reconnect: no socket wants it.
                    log.warning("job events: could not unsubscribe %s", channel, exc_info=True)
                    for name in (channel, channel.encode()):
                        self.pubsub.channels.pop(name, None)

    async def _read(self) -> None:
        while self.sockets:
            try:
                message = await self.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis errors, and a reconnect racing a join's
                # redis-py reconnects and subscribes again on the next read;
                # what was published meanwhile is lost (a client catches up
                # from the snapshot on its next sync or reconnect).
                log.warning("job events: Redis read failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            kind, _, text = message["data"].decode().partition("|")
            for socket in list(self.sockets.get(channel, ())):
                socket.deliver(kind, text)


_fanouts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def job_fanout() -> JobFanout:
    """The running event loop's fan-out, made on first use."""
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(loop)
    if fanout is None:
        fanout = _fanouts[loop] = JobFanout()
    return fanout
