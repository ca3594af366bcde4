"""bench/ws_progress.py's variant of portal.asgi (bench-local, the app is
unchanged): JobConsumer delivers a job event without the database hop that
channels' AsyncConsumer.dispatch makes before every handler
(aclose_old_connections: a sync_to_async call, so one trip through the
process's single thread-sensitive executor per event per socket). The
handler never touches the database; every other message takes the usual
path. This measures what that fix to generation/consumers.py would buy."""

from portal.asgi import application  # noqa: F401, I001  (sets Django up, so first)

from generation.consumers import JobConsumer


async def _dispatch(self, message):
    if message.get("type") == "job.event":
        await self.job_event(message)
    else:
        await _original(self, message)


_original = JobConsumer.dispatch
JobConsumer.dispatch = _dispatch
