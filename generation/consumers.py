"""The job page's websocket: the owner (or staff) gets the job's state on
connect, then progress, previews and the final state as they happen, from
the job's channel (generation.fanout)."""

from __future__ import annotations

import asyncio
from collections import deque

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from generation.fanout import job_fanout
from generation.schemas import job_out
from generation.selectors import job_status, job_visible

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# Event kinds a newer one of the same kind makes worthless (the job's states are not).
COALESCED = frozenset({"progress", "preview"})


class JobConsumer(AsyncJsonWebsocketConsumer):
    job_id: str | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.outbox: deque[tuple[str, str]] = deque()
        self.sending: asyncio.Future | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        if not await self._visible(user, job_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Subscribe before reading the snapshot, so nothing falls in between;
        # events that come meanwhile wait in the outbox, behind the snapshot.
        self.sending = asyncio.get_running_loop().create_future()  # held until the snapshot is out
        await job_fanout().join(job_id, self)
        self.job_id = job_id
        try:
            await self.accept()
            await self.send_json({"type": "job", "job": await self._snapshot(user, job_id)})
        except BaseException:
            # The client left mid-connect, or the read failed: channels calls
            # no disconnect for a connect that raised.
            self.outbox.clear()
            await job_fanout().leave(job_id, self)
            raise
        finally:
            self.sending.set_result(None)
        self._send_soon()

    async def disconnect(self, code: int) -> None:
        self.outbox.clear()
        if self.job_id:
            await job_fanout().leave(self.job_id, self)

    async def receive_json(self, content, **kwargs) -> None:
        """The client may ask for the current state again (after a gap): it
        goes out behind what is queued, like any state."""
        if content.get("type") == "sync":
            job_id = self.scope["url_route"]["kwargs"]["job_id"]
            snapshot = {"type": "job", "job": await self._snapshot(self.scope["user"], job_id)}
            self.deliver("job", await self.encode_json(snapshot))

    def deliver(self, kind: str, text: str) -> None:
        """An event of this socket's job (generation.fanout), queued for its
        sender task. A step or preview replaces one of its kind not sent yet
        (since the last state message): a socket that lags gets the latest
        step, not a backlog, while the job's states all go out, in order."""
        if kind in COALESCED:
            for index in range(len(self.outbox) - 1, -1, -1):
                pending = self.outbox[index][0]
                if pending not in COALESCED:
                    break
                if pending == kind:
                    self.outbox[index] = (kind, text)
                    return
        self.outbox.append((kind, text))
        self._send_soon()

    def _send_soon(self) -> None:
        if self.outbox and (self.sending is None or self.sending.done()):
            self.sending = asyncio.ensure_future(self._send_outbox())

    async def _send_outbox(self) -> None:
        while self.outbox:
            _, text = self.outbox.popleft()
            try:
                await self.send(text_data=text)
            except Exception:  # the socket closed meanwhile: nothing more to send on it
                self.outbox.clear()
                return

    @database_sync_to_async
    def _visible(self, user, job_id) -> bool:
        return job_visible(user=user, job_id=job_id)

    @database_sync_to_async
    def _snapshot(self, user, job_id) -> dict:
        return job_out(job_status(user=user, job_id=job_id))
