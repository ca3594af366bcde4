"""Which checkpoints a live worker can serve right now, from heartbeats."""

from __future__ import annotations

from workers.heartbeat import live_workers


def available_slugs() -> set[str]:
    return {slug for worker in live_workers() for slug in worker.get("serves", [])}
