"""Celery worker start-up: consume one queue per served checkpoint, import
torch and diffusers once before the pool forks, and run a heartbeat thread
(key and lease) and a reaper thread in each pool process (which holds the
pipeline cache).

Run workers with the prefork pool (the default): the threads start in each
pool process, where the loaded pipelines and the running job live.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown
from django.conf import settings

log = logging.getLogger(__name__)
_served: list[str] = []
_heartbeat = None
_reaper = None


@celeryd_after_setup.connect
def consume_checkpoint_queues(sender, instance, **kwargs) -> None:
    from django.db import connections

    from generation.dispatch import queue_for
    from generation.models import Checkpoint
    from workers.accel import Speedups
    from workers.runtime import preload
    from workers.services import servable_slugs

    Speedups.parse(settings.WORKER_SPEEDUPS, device="cuda")  # a typo stops the worker now, not at the first job
    _served[:] = servable_slugs(settings.WORKER_CHECKPOINTS)
    families = set(Checkpoint.objects.filter(slug__in=_served).values_list("family", flat=True))
    connections.close_all()  # never hand an open connection to the forked pool
    if families:
        preload(families)
    for slug in _served:
        instance.app.amqp.queues.select_add(queue_for(slug))
    log.warning("worker %s serves: %s", sender, ", ".join(_served) or "no checkpoints")


@worker_process_init.connect
def start_heartbeat(**kwargs) -> None:
    global _heartbeat, _reaper
    from generation.availability import worker_name
    from workers.heartbeat import Heartbeat, Reaper
    from workers.services import pipeline_cache, reap, renew_lease, warm_checkpoints

    cache = pipeline_cache()
    _heartbeat = Heartbeat(
        worker_id=worker_name(),
        serves=list(_served),
        loaded=cache.loaded,
        device=cache.device,
        on_beat=renew_lease,
    )
    _heartbeat.beat()  # available at once, not after the first interval
    _heartbeat.start()
    _reaper = Reaper(reap)
    _reaper.start()
    warm = [slug.strip() for slug in settings.WORKER_WARM_CHECKPOINTS.split(",") if slug.strip() in _served]
    if warm:
        threading.Thread(target=warm_checkpoints, args=(warm,), name="warm", daemon=True).start()


@worker_process_shutdown.connect
def stop_heartbeat(**kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
    if _reaper is not None:
        _reaper.stop()
