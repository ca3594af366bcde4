"""Celery worker start-up: consume one queue per served checkpoint and one of
its own (model affinity: generation.affinity), import torch and diffusers
once before the pool forks, and in each pool process (which holds the
pipeline cache) run a heartbeat thread (key and leases) and a reaper thread,
then load and compile the warm checkpoints (WORKER_WARM_CHECKPOINTS) before
the first job. The heartbeat is published again whenever a task starts or
ends, so that affinity knows at once who is idle.

Run workers with the prefork pool (the default), one process each
(--concurrency 1, as every command here does): the threads start in each
pool process, where the loaded pipelines and the running job live. With more
pool processes they share the worker's own queue, and a turn forwarded to one
may be taken by a sibling that does not hold its checkpoint: a cold load,
nothing lost.
"""

from __future__ import annotations

import logging

from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
)
from django.conf import settings

log = logging.getLogger(__name__)
_served: list[str] = []
_controls: list[str] = []  # the ControlNets it has the weights of
_annotators: list[str] = []  # the weighted preprocessors it can run
_loras: list[str] = []  # the LoRAs it has the files of
_direct_queue: list[str] = []  # this worker's own queue (model affinity), once it serves a checkpoint
_busy: list[bool] = [False]  # a task runs in this pool process now
_heartbeat = None
_reaper = None
LEGACY_DEFAULT_QUEUE = "celery"  # the default queue's name before settings.HOUSEKEEPING_QUEUE


@celeryd_after_setup.connect
def consume_checkpoint_queues(sender, instance, **kwargs) -> None:
    from django.db import connections

    from catalog.availability import worker_name
    from catalog.models import Checkpoint
    from catalog.queues import queue_for
    from generation.affinity import direct_queue_for
    from generation.services import Abilities
    from workers import moderation, services
    from workers.accel import Speedups
    from workers.annotators import annotators_here
    from workers.runtime import preload
    from workers.services import servable_controls, servable_loras, servable_slugs

    Speedups.parse(settings.WORKER_SPEEDUPS, device="cuda")  # a typo stops the worker now, not at the first job
    _served[:] = servable_slugs(settings.WORKER_CHECKPOINTS)
    _controls[:] = servable_controls(settings.WORKER_CONTROLNETS, served=_served) if _served else []
    _annotators[:] = annotators_here() if _controls else []
    _loras[:] = servable_loras(settings.WORKER_LORAS, served=_served) if _served else []
    services.abilities = Abilities(
        controls=frozenset(_controls), annotators=frozenset(_annotators), loras=frozenset(_loras)
    )
    if _served:
        moderation.check_setup()  # says whether the image check is on; a model without the labels stops the worker
    families = set(Checkpoint.objects.filter(slug__in=_served).values_list("family", flat=True))
    connections.close_all()  # never hand an open connection to the forked pool
    if families:
        preload(families)
        moderation.preload()
    for slug in _served:
        instance.app.amqp.queues.select_add(queue_for(slug))
    if _served:
        # Model work only: housekeeping (webhooks, periodic work) never waits
        # behind a job, nor holds a GPU (settings.HOUSEKEEPING_QUEUE).
        instance.app.amqp.queues.deselect([settings.HOUSEKEEPING_QUEUE, LEGACY_DEFAULT_QUEUE])
        # Its own queue, for turns that model affinity sends to it (named
        # after this main process: the pool processes inherit the name).
        _direct_queue[:] = [direct_queue_for(worker_name())]
        instance.app.amqp.queues.select_add(_direct_queue[0])
    log.warning("worker %s serves: %s", sender, ", ".join(_served) or "no checkpoints")
    if _controls:
        log.warning("worker %s has ControlNets: %s", sender, ", ".join(_controls))


@celeryd_after_setup.connect
def serve_metrics(sender, instance, **kwargs) -> None:
    """The pool's metrics (generation.metrics: jobs, queue waits and run
    times, reaper actions, webhook attempts), summed over its processes from
    PROMETHEUS_MULTIPROC_DIR, on WORKER_METRICS_PORT of this main process."""
    if not settings.WORKER_METRICS_PORT:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDRESS, registry=registry)
    log.warning(
        "worker %s serves its metrics on %s:%s", sender, settings.WORKER_METRICS_ADDRESS, settings.WORKER_METRICS_PORT
    )


@worker_process_init.connect
def start_heartbeat(**kwargs) -> None:
    global _heartbeat, _reaper
    from catalog.availability import worker_name
    from workers import services
    from workers.heartbeat import Heartbeat, Reaper
    from workers.progress import ProgressRelay
    from workers.services import Recorder, pipeline_cache, reap, renew_lease, running_jobs, warm_checkpoints, warm_slugs

    # Steps are served, and outcomes recorded, by threads of this process,
    # off the pipeline's thread.
    services.progress_relay = ProgressRelay(threaded=True)
    services.recorder = Recorder(threaded=True)
    cache = pipeline_cache()
    _heartbeat = Heartbeat(
        worker_id=worker_name(),
        serves=list(_served),
        loaded=cache.loaded,
        device=cache.device,
        on_beat=renew_lease,
        jobs=running_jobs,
        queue=_direct_queue[0] if _direct_queue else "",
        busy=lambda: _busy[0],
        controls=_controls,
        annotators=_annotators,
        loras=_loras,
    )
    _heartbeat.beat()  # available at once, not after the first interval
    _heartbeat.start()
    _reaper = Reaper(reap)
    _reaper.start()
    # Before this process takes its first job, in the thread that will run
    # them (CELERY_WORKER_PROC_ALIVE_TIMEOUT allows for it).
    warm = warm_slugs(settings.WORKER_WARM_CHECKPOINTS, served=_served, device=cache.device)
    if warm:
        warm_checkpoints(warm)


@task_prerun.connect
def publish_busy(**kwargs) -> None:
    """Say at once that this process takes a turn (model affinity sends
    turns only to idle workers), and again when it ends."""
    _busy[0] = True
    if _heartbeat is not None:
        _heartbeat.publish()


@task_postrun.connect
def publish_idle(**kwargs) -> None:
    _busy[0] = False
    if _heartbeat is not None:
        _heartbeat.publish()


@worker_process_shutdown.connect
def stop_heartbeat(**kwargs) -> None:
    from generation.events import events_flush
    from workers import services

    # The outcomes still being recorded first, while the heartbeat keeps
    # their leases (a process killed meanwhile leaves them to the reaper),
    # then their announcements (the pool exits without atexit handlers).
    services.recorder.drain()
    events_flush(2.0)
    if _heartbeat is not None:
        _heartbeat.stop()
    if _reaper is not None:
        _reaper.stop()
