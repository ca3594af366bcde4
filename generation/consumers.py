"""The job page's websocket: the owner (or staff) gets the job's state on
connect, then progress, previews and the final state as they happen."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from generation.events import job_group
from generation.schemas import job_out
from generation.selectors import job_status, job_visible

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class JobConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        if not await self._visible(user, job_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Subscribe before reading the snapshot, so nothing falls in between.
        self.group = job_group(job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "job", "job": await self._snapshot(user, job_id)})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """The client may ask for the current state again (after a gap)."""
        if content.get("type") == "sync":
            job_id = self.scope["url_route"]["kwargs"]["job_id"]
            await self.send_json({"type": "job", "job": await self._snapshot(self.scope["user"], job_id)})

    async def dispatch(self, message) -> None:
        """A job event goes straight out: channels' dispatch first closes old
        database connections, a trip through the process's one database
        thread per event per socket (110-144 CPU-ms per event at 1,000
        sockets, bench/ws_progress.py), and this handler never touches the
        database. Everything else takes the usual path."""
        if message.get("type") == "job.event":
            await self.job_event(message)
        else:
            await super().dispatch(message)

    async def job_event(self, event: dict) -> None:
        # Encoded once by the sender (generation.events.job_send); "message"
        # is how a sender before that change put it.
        text = event.get("text")
        await self.send(text_data=text if text is not None else await self.encode_json(event["message"]))

    @database_sync_to_async
    def _visible(self, user, job_id) -> bool:
        return job_visible(user=user, job_id=job_id)

    @database_sync_to_async
    def _snapshot(self, user, job_id) -> dict:
        return job_out(job_status(user=user, job_id=job_id))
