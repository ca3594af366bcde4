"""A worker process that dies mid-job is replaced in seconds, with default
lease and reaper settings and no Celery beat: the redelivered message or any
other worker's heartbeat sees that the lease's owner process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import generation.services
from catalog.availability import available_slugs
from generation.models import Job
from generation.services import job_cancel
from tests.conftest import IN_CI, free_port, wait_for
from tests.faults import SLOW_STEPS, assert_books_balance, long_job

# Processes are killed here: CI runs these in its PostgreSQL pass only (one_engine).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.one_engine]
RECOVERY_BOUND = 15.0  # seconds, the promise with default settings
# The heartbeat's default (the fixture shortens it); lease, reaper: defaults.
DEFAULTS = {"WORKER_HEARTBEAT_TTL": "8", **SLOW_STEPS}


@pytest.fixture
def api(paid_api):
    return paid_api


def running_job(api, job_id: str) -> Job:
    return wait_for(
        lambda: (j := Job.objects.get(id=job_id)).status == "running" and j.progress_step >= 1 and j,
        timeout=120,
        message="the job to run",
    )


def back_again(job_id: str, attempts: int) -> float:
    """Seconds until the job runs again as its next attempt (or ends)."""
    started = time.monotonic()
    wait_for(
        lambda: (j := Job.objects.get(id=job_id)).attempts >= attempts and j.status != "queued",
        timeout=60,
        interval=0.1,
        message="the job to run again",
    )
    return time.monotonic() - started


def test_a_killed_pool_process_s_job_runs_again_within_seconds(api, alice, start_worker, tmp_path):
    port = free_port()
    start_worker("test-sd1-alt", **DEFAULTS, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), WORKER_METRICS_PORT=str(port))
    wait_for(lambda: "test-sd1-alt" in available_slugs(), timeout=90, message="the worker")
    job_id = long_job(api)
    job = running_job(api, job_id)
    owner_pid = int(job.worker.rpartition(":")[2])

    os.kill(owner_pid, signal.SIGKILL)  # the pool process holding the pipeline: what the OOM killer picks
    elapsed = back_again(job_id, attempts=2)

    assert elapsed < RECOVERY_BOUND, f"back after {elapsed:.1f} s"
    job = running_job(api, job_id)  # its second attempt, in the replacement process
    assert job.attempts == 2
    assert job.worker != f"{job.worker.rpartition(':')[0]}:{owner_pid}"
    # The rest of the run proves nothing new (a recovered job finishing and
    # charged once: tests/test_job_recovery.py).
    job_cancel(user=alice, job_id=job_id)
    assert_books_balance(alice, granted=100)
    # Counts survive prefork: the killed pool process's start is still counted
    # beside its replacement's (prometheus_client's multiprocess files).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    started = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "portal_job_events_total"
        and sample.labels == {"event": "started", "model": "test-sd1-alt", "mode": "img2img"}
    ]
    assert started == [2.0], text


def test_a_killed_worker_s_job_is_taken_by_another_without_beat(api, alice, start_worker):
    first = start_worker("test-sd1-alt", **DEFAULTS)
    second = start_worker("test-sd1-alt", **DEFAULTS)
    wait_for(lambda: "test-sd1-alt" in available_slugs(), timeout=90, message="the workers")
    time.sleep(3)  # both consuming
    job_id = long_job(api)
    job = running_job(api, job_id)
    owner_pid = int(job.worker.rpartition(":")[2])
    doomed = next(w for w in (first, second) if owner_pid in child_pids(w.proc.pid))

    doomed.kill()  # the whole worker, main process and pool, no clean-up
    elapsed = back_again(job_id, attempts=2)

    assert elapsed < RECOVERY_BOUND, f"back after {elapsed:.1f} s"
    job = running_job(api, job_id)
    assert job.attempts == 2
    job_cancel(user=alice, job_id=job_id)  # the rest of the run proves nothing new
    assert_books_balance(alice, granted=100)


def test_a_worker_on_another_host_is_replaced_within_the_bound_by_lease_and_heartbeat(api, alice, start_worker):
    """No pid to check from here: the survivor's reaper needs the lease and
    the heartbeat of the dead worker to run out (the cross-host case)."""
    from catalog.availability import live_workers

    if subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode != 0:
        message = "needs unshare --pid (root or user namespaces) to stand in for another host"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    doomed = start_worker("test-sd1-alt", own_pid_namespace=True, **{**DEFAULTS, "WORKER_STEP_DELAY_MS": "600"})
    wait_for(lambda: "test-sd1-alt" in available_slugs(), timeout=90, message="the first worker")
    job_id = long_job(api, steps=50)  # 30 s: still running when the second worker is up
    job = running_job(api, job_id)
    ours = str(os.stat("/proc/self/ns/pid").st_ino)
    assert job.worker.rsplit(":", 2)[1] != ours
    start_worker("test-sd1-alt", **DEFAULTS)
    wait_for(
        lambda: any(w["worker"].rsplit(":", 2)[1] == ours and "test-sd1-alt" in w["serves"] for w in live_workers()),
        timeout=90,
        message="the second worker",
    )
    assert Job.objects.get(id=job_id).status == "running"

    doomed.kill()
    elapsed = back_again(job_id, attempts=2)

    assert elapsed < RECOVERY_BOUND, f"back after {elapsed:.1f} s"
    job_cancel(user=alice, job_id=job_id)  # the rest of the run proves nothing new
    assert_books_balance(alice, granted=100)


def test_the_last_attempt_s_death_fails_and_releases_at_once(api, alice, start_worker, settings, monkeypatch):
    # Every process keeps the default JOB_MAX_ATTEMPTS (any live worker may
    # reap): the job is made to start its last attempt instead.
    monkeypatch.setattr(generation.services.submit, "available_slugs", lambda: {"test-sd1-alt"})
    job_id = long_job(api)
    Job.objects.filter(id=job_id).update(attempts=settings.JOB_MAX_ATTEMPTS - 1)
    start_worker("test-sd1-alt", **DEFAULTS)
    job = running_job(api, job_id)
    assert job.attempts == settings.JOB_MAX_ATTEMPTS
    os.kill(int(job.worker.rpartition(":")[2]), signal.SIGKILL)

    started = time.monotonic()
    job = wait_for(lambda: (j := Job.objects.get(id=job_id)).is_finished and j, timeout=60, message="the job")
    assert time.monotonic() - started < RECOVERY_BOUND
    assert (job.status, job.error_code, job.attempts) == ("failed", "worker_lost", settings.JOB_MAX_ATTEMPTS)
    assert_books_balance(alice, granted=100)


def child_pids(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return {int(child) for child in children.read().split()}
