"""PostgreSQL stops and starts again while a job runs: the worker keeps
going, its heartbeat thread reconnects and renews the lease, and the job
ends once, charged once. A real restart of the machine's server
(pg_ctlcluster), so it runs where the tests may manage PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from catalog.availability import available_slugs
from generation.models import Job
from tests.conftest import IN_CI, wait_for
from tests.faults import assert_books_balance, long_job
from tests.isolation import alone

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def postgres_restart(pause: float) -> None:
    """Stop the local cluster, wait, start it again (Debian's tools)."""
    versions = sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").exists() else []
    if not shutil.which("pg_ctlcluster") or not versions or os.geteuid() != 0:
        message = "needs a local Debian PostgreSQL cluster and root to restart it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    version = versions[-1].parent.name
    subprocess.run(["pg_ctlcluster", version, "main", "stop", "-m", "fast"], check=True, timeout=60)
    time.sleep(pause)
    subprocess.run(["pg_ctlcluster", version, "main", "start"], check=True, timeout=60)


@pytest.fixture
def api(paid_api):
    return paid_api


def test_a_postgres_restart_mid_run_neither_stops_the_job_nor_its_lease(api, alice, start_worker, settings):
    start_worker("test-sd1-alt", WORKER_HEARTBEAT_TTL="8", WORKER_STEP_DELAY_MS="500")
    wait_for(lambda: "test-sd1-alt" in available_slugs(), timeout=90, message="the worker")
    # No test of the other processes runs during the restart; the job starts
    # once they are done (waiting for them first, it could end before it).
    with alone():
        job_id = long_job(api, steps=50)  # 25 s: still running when the database is back
        wait_for(lambda: Job.objects.get(id=job_id).progress_step >= 1, timeout=120, message="the job to start")
        connection.close()
        postgres_restart(pause=3)
    back = timezone.now()
    connection.close()  # this test's own connection died with the server

    # The heartbeat thread renews the lease on a new connection (every third
    # of the lease), so the job is never taken for dead.
    wait_for(
        lambda: Job.objects.get(id=job_id).lease_expires_at > back + timedelta(seconds=settings.JOB_LEASE_SECONDS - 4),
        timeout=settings.JOB_LEASE_SECONDS,
        message="the lease to be renewed after the restart",
    )
    job = wait_for(lambda: (j := Job.objects.get(id=job_id)).is_finished and j, timeout=240, message="the job")
    assert (job.status, job.attempts) == ("succeeded", 1), (job.status, job.attempts, job.error)
    assert_books_balance(alice, granted=100)
