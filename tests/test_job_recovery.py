"""A worker that dies mid-job (SIGKILL: no clean-up, no ack) never leaves a
job stuck or charges twice: its lease expires, the periodic reaper (Celery
beat) requeues it, and another worker finishes it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import LedgerEntry
from billing.selectors import balance_of
from catalog.availability import available_slugs
from generation.models import Job
from generation.services import jobs_reap
from tests.conftest import wait_for
from tests.faults import SLOW_STEPS, long_job

pytestmark = pytest.mark.django_db(transaction=True)
FAST_LEASE = {"JOB_LEASE_SECONDS": "3", "WORKER_HEARTBEAT_TTL": "3", "REAPER_INTERVAL": "1", **SLOW_STEPS}


@pytest.fixture
def api(paid_api):
    return paid_api


def resolutions(job: Job) -> list[str]:
    hold = LedgerEntry.objects.get(reference=job.hold_ref)
    return list(LedgerEntry.objects.filter(resolves=hold).values_list("kind", flat=True))


@pytest.mark.one_engine
def test_a_killed_worker_s_job_is_finished_by_another_and_charged_once(api, alice, start_worker):
    doomed = start_worker("test-sd1-alt", **FAST_LEASE)
    wait_for(lambda: "test-sd1-alt" in available_slugs(), timeout=90, message="the first worker")
    job_id = long_job(api, steps=24)  # 6 s: the lease is renewed before the kill, the second run is short
    wait_for(lambda: Job.objects.get(id=job_id).progress_step >= 1, timeout=120, message="the job to start")
    lease = Job.objects.get(id=job_id).lease_expires_at
    wait_for(
        lambda: Job.objects.get(id=job_id).lease_expires_at > lease,
        timeout=5,
        message="the running job's lease to be renewed",
    )
    doomed.kill()

    start_worker("test-sd1-alt", beat=True, **FAST_LEASE)
    job = wait_for(
        lambda: (j := Job.objects.get(id=job_id)).is_finished and j,
        timeout=180,
        message="the job to end after the crash",
    )
    assert job.status == "succeeded", (job.status, job.error)
    assert job.attempts == 2
    assert resolutions(job) == ["capture"]
    assert balance_of(user=alice) == 100 - job.credits_charged
    assert job.images.count() == 1


@pytest.mark.one_engine
def test_a_worker_killed_between_pipeline_and_record_loses_no_credit(api, alice, start_worker):
    """The pipeline's thread hands a finished job to the record stage and
    takes the next message; the job stays running, listed in the heartbeat,
    until recorded. Killed in between, the worker leaves it to the reaper:
    it runs again and is charged once."""
    from catalog.availability import HEARTBEAT_PREFIX, heartbeat_client

    doomed = start_worker("test-sd1-alt", WORKER_RECORD_DELAY_MS="60000", **FAST_LEASE)
    wait_for(lambda: "test-sd1-alt" in available_slugs(), timeout=90, message="the first worker")
    job_id = long_job(api, steps=4, side=64)

    def recording() -> bool:
        beats = [json.loads(raw) for raw in heartbeat_client().mget(heartbeat_client().keys(HEARTBEAT_PREFIX + "*"))]
        mine = [beat for beat in beats if beat and str(job_id) in beat.get("jobs", [])]
        # Its task ended (the worker is free for the next) while the job is still its own.
        return bool(mine) and not mine[0].get("busy") and Job.objects.get(id=job_id).status == "running"

    wait_for(recording, timeout=120, message="the job in the record stage", interval=0.1)
    assert not Job.objects.get(id=job_id).images.exists()
    entered = timezone.now()
    wait_for(  # its lease is still renewed (3 s leases here)
        lambda: Job.objects.get(id=job_id).lease_expires_at > entered + timedelta(seconds=4),
        timeout=10,
        message="the recording job's lease to be renewed",
    )
    doomed.kill()

    start_worker("test-sd1-alt", beat=True, **FAST_LEASE)
    job = wait_for(lambda: (j := Job.objects.get(id=job_id)).is_finished and j, timeout=180, message="the job")
    assert (job.status, job.attempts) == ("succeeded", 2), (job.status, job.attempts, job.error)
    assert resolutions(job) == ["capture"]
    assert balance_of(user=alice) == 100 - job.credits_charged
    assert job.images.count() == 1


# The reaper's rules on rows: no transaction commits here, so no task is sent
# and the session's worker only makes test-sd1 available.
@pytest.mark.django_db
def test_the_reaper_fails_and_releases_after_the_last_attempt(api, alice, settings, gpu_worker):
    from datetime import timedelta

    from django.utils import timezone

    settings.JOB_MAX_ATTEMPTS = 2
    job_id = long_job(api, "test-sd1")
    Job.objects.filter(id=job_id).update(
        status="running", attempts=2, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert jobs_reap() == {"requeued": 0, "failed": 1, "resent": 0}
    job = Job.objects.get(id=job_id)
    assert (job.status, job.error_code) == ("failed", "worker_lost")
    assert resolutions(job) == ["release"]
    assert balance_of(user=alice) == 100
    assert jobs_reap() == {"requeued": 0, "failed": 0, "resent": 0}  # nothing left: a second run changes nothing


@pytest.mark.django_db
def test_one_job_the_reaper_cannot_take_back_does_not_stop_its_pass(api, alice, settings, gpu_worker, caplog):
    """A running job without a hold cannot be released (it cannot happen
    through the services: job and hold are made together). The reaper logs
    it and still takes back the other jobs of the pass."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.helpers import make_job

    settings.JOB_MAX_ATTEMPTS = 1
    lost = timezone.now() - timedelta(seconds=1)
    broken = make_job(alice, "test-sd1", status="running", attempts=1, lease_expires_at=lost, worker="gone:1:1")
    job_id = long_job(api, "test-sd1")
    Job.objects.filter(id=job_id).update(status="running", attempts=1, lease_expires_at=lost, worker="gone:1:2")
    with caplog.at_level("ERROR", logger="generation.services"):
        counts = jobs_reap()
    assert counts["failed"] == 1 and counts["errors"] == 1
    assert Job.objects.get(id=job_id).status == "failed" and resolutions(Job.objects.get(id=job_id)) == ["release"]
    assert Job.objects.get(id=broken.id).status == "running"  # its row rolled back
    assert str(broken.id) in caplog.text


@pytest.mark.django_db
def test_the_reaper_leaves_live_jobs_alone_and_fails_jobs_nobody_took(api, alice, settings, gpu_worker):
    from datetime import timedelta

    from django.utils import timezone

    live, forgotten = long_job(api, "test-sd1"), long_job(api, "test-sd1")
    Job.objects.filter(id=live).update(
        status="running", attempts=1, lease_expires_at=timezone.now() + timedelta(seconds=30)
    )
    Job.objects.filter(id=forgotten).update(
        created_at=timezone.now() - timedelta(seconds=settings.JOB_QUEUE_TIMEOUT + 5)
    )
    counts = jobs_reap()
    assert counts["failed"] == 1
    assert Job.objects.get(id=live).status == "running"
    assert Job.objects.get(id=forgotten).error_code == "queue_timeout"
    assert balance_of(user=alice) == 100 - Job.objects.get(id=live).credits_held


@pytest.mark.django_db
def test_a_duplicate_delivery_does_nothing(api, alice, gpu_worker):
    from generation.services import job_claim

    job_id = long_job(api, "test-sd1")
    first = job_claim(job_id=job_id, worker="w1")
    assert first is not None and first.attempts == 1
    assert job_claim(job_id=job_id, worker="w2") is None
    assert Job.objects.get(id=job_id).worker == "w1"


@pytest.mark.django_db
def test_a_soft_time_limit_fails_the_job_and_releases(api, alice, gpu_worker, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    import workers.services

    job_id = long_job(api, "test-sd1")

    def too_slow(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(workers.services, "run_batch", too_slow)
    assert workers.services.job_run(job_id=job_id) == "failed"
    job = Job.objects.get(id=job_id)
    assert (job.status, job.error_code) == ("failed", "time_limit")
    assert resolutions(job) == ["release"] and balance_of(user=alice) == 100


@pytest.mark.django_db
def test_an_expired_lease_whose_owner_still_beats_is_left_alone(api, alice, gpu_worker):
    """A database outage longer than the lease: the owner could not renew,
    but its heartbeat in Redis says it is alive; it renews within a beat."""
    from datetime import timedelta

    from django.utils import timezone

    from catalog.availability import HEARTBEAT_PREFIX, heartbeat_client

    job_id = long_job(api, "test-sd1")
    owner = "another-host:4026531836:4242"
    Job.objects.filter(id=job_id).update(
        status="running", attempts=1, worker=owner, lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    heartbeat_client().set(HEARTBEAT_PREFIX + owner, "{}", ex=30)
    try:
        assert jobs_reap()["requeued"] == 0
        assert Job.objects.get(id=job_id).status == "running"
    finally:
        heartbeat_client().delete(HEARTBEAT_PREFIX + owner)
    assert jobs_reap()["requeued"] == 1  # silent and expired: gone


def test_an_expired_lease_of_a_job_its_beating_owner_no_longer_runs_is_reaped(api, alice, gpu_worker):
    """A fault left a job running under a live worker that does not run it
    (its heartbeat lists the jobs it runs): the lease alone decides."""
    import json
    from datetime import timedelta

    from django.utils import timezone

    from catalog.availability import HEARTBEAT_PREFIX, heartbeat_client

    job_id = long_job(api, "test-sd1")
    owner = "another-host:4026531836:4243"
    Job.objects.filter(id=job_id).update(
        status="running", attempts=1, worker=owner, lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    heartbeat_client().set(HEARTBEAT_PREFIX + owner, json.dumps({"jobs": [str(job_id)]}), ex=30)
    try:
        assert jobs_reap()["requeued"] == 0  # it says it runs it
        heartbeat_client().set(HEARTBEAT_PREFIX + owner, json.dumps({"jobs": ["something-else"]}), ex=30)
        assert jobs_reap()["requeued"] == 1
    finally:
        heartbeat_client().delete(HEARTBEAT_PREFIX + owner)


def test_a_lease_owner_is_called_gone_only_when_provably_dead_in_our_pid_namespace():
    import socket
    import subprocess
    import sys
    import time

    from catalog.availability import _pid_namespace, worker_is_gone, worker_name

    host, ns = socket.gethostname(), _pid_namespace()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # never waited for: a zombie once it exits
    time.sleep(1)
    try:
        assert worker_is_gone(f"{host}:{ns}:{finished.pid}")
        assert worker_is_gone(f"{host}:{ns}:{zombie.pid}")
        assert not worker_is_gone(f"{host}:{int(ns) + 1}:{finished.pid}")  # another container's pids
        assert not worker_is_gone(f"elsewhere:{ns}:{finished.pid}")
        assert not worker_is_gone(worker_name())
        assert not worker_is_gone("w1") and not worker_is_gone("")
    finally:
        zombie.wait()
