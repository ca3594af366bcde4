"""Model affinity: a turn of a checkpoint goes to an idle worker that holds
its pipeline, at most once; a worker without the pipeline sends the turn on
or serves a warm checkpoint first; a turn forwarded to a worker that died is
sent again by the reaper. Rows and Redis only: the broker is replaced by a
recorder, no worker process runs."""

from __future__ import annotations

import uuid

import pytest
from celery import current_app

from catalog.availability import heartbeat_client
from catalog.queues import queue_for
from generation.affinity import RESERVED_PREFIX, choose_worker, choose_workers
from generation.dispatch import job_dispatch
from generation.models import Job
from tests.helpers import make_job

COLD, WARM = "test-sd2", "test-sdxl"  # no real worker serves these while the tests run


def beat(name: str, *, loaded=(COLD,), serves=(COLD, WARM), busy=False, jobs=()) -> dict:
    return {
        "worker": name,
        "serves": list(serves),
        "loaded": list(loaded),
        "device": "cpu",
        "jobs": list(jobs),
        "queue": f"worker.{name}",
        "busy": busy,
        "at": 0.0,
    }


def test_an_idle_worker_that_holds_the_checkpoint_is_chosen():
    workers = [
        beat("a", loaded=[WARM]),
        beat("b", loaded=[COLD, WARM]),
        beat("c", loaded=[WARM, COLD]),
        beat("d", loaded=[WARM, COLD], busy=True),
    ]
    # Both b and c hold it; c used it last, so c keeps it longest.
    assert [worker["worker"] for worker in choose_workers(COLD, workers)] == ["c", "b"]
    assert choose_worker(COLD, workers) == "c"
    assert choose_worker(COLD, workers, exclude="c") == "b"
    # A turn sent back may wait for a busy holder, after the idle ones.
    assert [worker["worker"] for worker in choose_workers(COLD, workers, busy=True)] == ["c", "b", "d"]


@pytest.mark.parametrize(
    "worker",
    [
        beat("busy", busy=True),
        beat("running", jobs=["42"]),
        beat("not serving", serves=[WARM]),
        beat("not loaded", loaded=[WARM]),
        {**beat("no queue"), "queue": ""},  # a worker from before affinity, or one serving nothing
    ],
    ids=lambda worker: worker["worker"],
)
def test_no_turn_goes_to_a_worker_that_is_busy_or_cannot_serve_it_warm(worker):
    assert choose_worker(COLD, [worker]) is None


@pytest.fixture
def sent(monkeypatch):
    """The messages sent instead of the broker: (queue, kwargs)."""
    messages = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, args, kwargs, queue: messages.append((queue, kwargs)), raising=False
    )
    return messages


@pytest.fixture
def live(settings):
    """publish(name, ...): a fake worker's heartbeat in Redis; removed after."""
    import json

    settings.JOB_AFFINITY = True
    client, names = heartbeat_client(), []

    def publish(name: str, **fields) -> str:
        name = f"{name}-{uuid.uuid4().hex[:6]}"
        names.append(name)
        client.set(f"portal:worker:{name}", json.dumps(beat(name, **fields)), ex=60)
        return name

    yield publish
    for name in names:
        client.delete(f"portal:worker:{name}", RESERVED_PREFIX + name)


def test_a_turn_is_routed_once_and_a_reserved_worker_takes_no_second(live, sent, settings):
    holder = live("holder")
    job_dispatch(job_id=uuid.uuid4(), slug=COLD)
    job_dispatch(job_id=uuid.uuid4(), slug=COLD)  # the holder has one on its way: not idle any more
    job_dispatch(job_id=uuid.uuid4(), slug=COLD, hops=1)  # routed already: to the checkpoint's queue
    assert sent == [
        (f"worker.{holder}", {"slug": COLD, "hops": 1}),
        (queue_for(COLD), {"slug": COLD, "hops": 0}),
        (queue_for(COLD), {"slug": COLD, "hops": 1}),
    ]
    settings.JOB_AFFINITY = False
    heartbeat_client().delete(RESERVED_PREFIX + holder)
    job_dispatch(job_id=uuid.uuid4(), slug=COLD)
    assert sent[-1] == (queue_for(COLD), {"slug": COLD, "hops": 0})


@pytest.fixture
def catalog(test_checkpoints, db):
    from catalog.seeds import catalog_register_test_checkpoints

    catalog_register_test_checkpoints(test_checkpoints.values())


@pytest.fixture
def holding(monkeypatch):
    """holding(*slugs): this process's pipeline cache holds these (least
    recently used first), as the worker's _take_turn sees it."""
    from workers import services

    def hold(*slugs: str) -> None:
        monkeypatch.setattr(
            services, "pipeline_cache", lambda: type("Cache", (), {"loaded": lambda self: list(slugs)})()
        )

    return hold


@pytest.mark.django_db
def test_a_cold_worker_forwards_the_turn_to_an_idle_holder_and_takes_nothing(alice, catalog, live, sent, holding):
    from workers.services import FORWARDED, _take_turn

    job = make_job(alice, COLD)
    holder = live("holder")
    holding(WARM)
    assert _take_turn(job_id=str(job.id), slug=COLD, hops=0, worker="me") == FORWARDED
    assert sent == [(f"worker.{holder}", {"slug": COLD, "hops": 1})]
    assert Job.objects.get(id=job.id).status == Job.Status.QUEUED
    # The holder takes it, whatever it holds by then: a forwarded turn is served, never forwarded again.
    holding()
    assert _take_turn(job_id=str(job.id), slug=COLD, hops=1, worker=holder).id == job.id
    assert len(sent) == 1


@pytest.mark.django_db
def test_with_no_idle_holder_a_cold_worker_serves_a_warm_job_and_sends_the_turn_back(
    alice, bob, catalog, live, sent, holding
):
    from workers.services import _take_turn

    cold, warm = [make_job(alice, COLD) for _ in range(2)], [make_job(bob, WARM) for _ in range(2)]
    busy = live("busy holder", busy=True)
    holding(WARM)
    first = _take_turn(job_id=str(cold[0].id), slug=COLD, hops=0, worker="me")
    assert first.id == warm[0].id and first.status == Job.Status.RUNNING
    # Back once, to the busy holder (it serves it when its job ends); then,
    # that one being reserved, to the checkpoint's queue.
    assert _take_turn(job_id=str(cold[1].id), slug=COLD, hops=0, worker="me").id == warm[1].id
    assert sent == [(f"worker.{busy}", {"slug": COLD, "hops": 1}), (queue_for(COLD), {"slug": COLD, "hops": 1})]
    # Whoever takes a turn sent back serves it, cold or not.
    assert _take_turn(job_id=str(cold[0].id), slug=COLD, hops=1, worker="me").id == cold[0].id
    # Nothing warm is waiting: the turn is served here, cold.
    assert _take_turn(job_id=str(cold[1].id), slug=COLD, hops=0, worker="me").id == cold[1].id
    assert len(sent) == 2


@pytest.mark.django_db
def test_the_reaper_sends_again_a_turn_forwarded_to_a_worker_that_died(alice, catalog, live, sent):
    from generation.services import jobs_reap

    job = make_job(alice, COLD)
    holder = live("holder")
    job_dispatch(job_id=job.id, slug=COLD)
    assert sent[-1][0] == f"worker.{holder}"
    jobs_reap()
    assert len(sent) == 1  # its worker still beats: the turn is on its way
    heartbeat_client().delete(f"portal:worker:{holder}")  # it dies before taking the turn
    jobs_reap()
    assert sent[-1] == (queue_for(COLD), {"slug": COLD, "hops": 0})
    assert heartbeat_client().get(RESERVED_PREFIX + holder) is None
    jobs_reap()
    assert len(sent) == 2  # once
