"""The step callback records the step; a thread of the worker does the rest
(workers.progress.ProgressRelay), for the latest step of each job. Rows are
committed (transaction=True): the relay's thread has its own connection."""

from __future__ import annotations

import threading

import pytest

import workers.progress
from catalog.seeds import catalog_register_test_checkpoints
from generation.dispatch import job_stop_request
from generation.models import Job
from tests.conftest import wait_for
from tests.helpers import make_job
from workers.progress import ProgressRelay

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(alice, test_checkpoints, settings):
    catalog_register_test_checkpoints(test_checkpoints.values())
    settings.JOB_PROGRESS_WRITE_SECONDS = 0  # every served step writes the row
    return make_job(alice, "test-sd1", status="running", attempts=1, worker="w")


@pytest.fixture
def held(monkeypatch):
    """job_progress as the relay calls it, held at its first call until
    released; the steps it served, in order, and the threads it ran on."""
    real = workers.progress.job_progress
    gate, entered = threading.Event(), threading.Event()
    served, threads = [], []

    def job_progress(*, job, step, total):
        entered.set()
        gate.wait(10)
        served.append(step)
        threads.append(threading.current_thread().name)
        return real(job=job, step=step, total=total)

    monkeypatch.setattr(workers.progress, "job_progress", job_progress)
    return type("Held", (), {"gate": gate, "entered": entered, "served": served, "threads": threads})


def test_steps_are_served_off_the_callers_thread_latest_first(running, held):
    relay = ProgressRelay(threaded=True)
    assert relay.step(running, 1, 50) is True
    assert held.entered.wait(5)  # the relay is busy with step 1 ...
    for step in range(2, 51):  # ... while the pipeline goes on
        assert relay.step(running, step, 50) is True
    held.gate.set()
    assert relay.idle()
    assert held.served == [1, 50]  # the steps it had no time for are skipped
    assert set(held.threads) == {"job-progress"}
    assert Job.objects.get(id=running.id).progress_step == 50


def test_a_preview_is_made_on_the_relay_s_thread_and_kept_until_served(running, held):
    relay = ProgressRelay(threaded=True)
    made = []

    def make():
        made.append(threading.current_thread().name)

    relay.step(running, 1, 8)
    assert held.entered.wait(5)
    relay.step(running, 4, 8)
    relay.preview(running, make)
    relay.step(running, 5, 8)  # a newer step without a preview keeps the one not made yet
    held.gate.set()
    assert relay.idle()
    assert held.served == [1, 5] and made == ["job-progress"]


def test_a_cancel_stops_the_run_at_a_later_step(running):
    relay = ProgressRelay(threaded=True)
    assert relay.step(running, 1, 1000)
    Job.objects.filter(id=running.id).update(status="canceled")
    job_stop_request(running.id)
    steps = iter(range(2, 1000))
    wait_for(lambda: not relay.step(running, next(steps), 1000), timeout=10, message="the stop", interval=0.01)
    relay.finish([running])


def test_finish_drops_unserved_steps_and_waits_for_the_one_being_served(running, held):
    relay = ProgressRelay(threaded=True)
    relay.step(running, 1, 8)
    assert held.entered.wait(5)
    relay.step(running, 2, 8)
    finished = threading.Event()
    threading.Thread(target=lambda: (relay.finish([running]), finished.set())).start()
    assert not finished.wait(0.3)  # step 1 is being served: the outcome must come after it
    held.gate.set()
    assert finished.wait(5)
    assert relay.idle()
    assert held.served == [1]  # step 2 was dropped: the job's end is announced next


def test_inline_relay_serves_on_the_callers_thread(running, held):
    held.gate.set()
    relay = ProgressRelay(threaded=False)
    assert relay.step(running, 3, 8) is True
    assert held.served == [3] and held.threads == [threading.current_thread().name]


def test_a_stop_holds_for_its_attempt_only(running):
    """The heartbeat stops an attempt that lost its job; the job's next
    attempt in the same process runs."""
    relay = ProgressRelay(threaded=False)
    relay.stop(running)
    assert relay.step(running, 1, 8) is False
    Job.objects.filter(id=running.id).update(attempts=2)  # taken again, by this process
    running.attempts = 2
    assert relay.step(running, 2, 8) is True


def test_the_record_stage_holds_a_bounded_backlog_and_lets_go_of_a_stuck_record(monkeypatch):
    """Past RECORD_BACKLOG jobs waiting for the stage, the pipeline's thread
    waits (under its task's time limit) instead of piling up pictures; a
    record past RECORD_SECONDS is no longer leased nor listed, so the
    reaper can take its job."""
    import time
    import uuid

    import workers.services as ws

    gate = threading.Event()
    monkeypatch.setattr(ws, "RECORD_BACKLOG", 1)
    monkeypatch.setattr(ws, "_record_in_stage", lambda job, result, flags: (gate.wait(10), ws.state.recorded(job)))
    state = ws.state
    recorder = ws.Recorder(threaded=True)
    first, second = Job(id=uuid.uuid4(), attempts=1), Job(id=uuid.uuid4(), attempts=1)
    assert recorder.record([first], [[]], {}) == {first.id: "recording"}
    assert str(first.id) in ws.running_jobs()
    handed = threading.Event()
    threading.Thread(target=lambda: (recorder.record([second], [[]], {}), handed.set()), daemon=True).start()
    assert not handed.wait(0.3)  # the backlog is full: the second waits
    monkeypatch.setattr(ws, "RECORD_SECONDS", 0)
    state.recording(first)  # handed again with no time left
    time.sleep(0.01)
    assert first not in state.leased() and str(first.id) not in ws.running_jobs()
    gate.set()
    assert handed.wait(5)
    recorder.drain(5)
    assert not any(job in state.leased() for job in (first, second))
