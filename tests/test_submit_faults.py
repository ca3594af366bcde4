"""Submits under faults: a publish that fails after the commit keeps the
paid job and its input (the sweep sends it), concurrent submits cannot pass
MAX_ACTIVE_JOBS, and a job whose message vanished is sent again."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

import billing.ledger
import generation.services
from billing.ledger import credits_grant
from billing.selectors import balance_of
from catalog.seeds import catalog_register_test_checkpoints
from generation.dispatch import jobs_unsent
from generation.errors import TooManyJobs
from generation.models import Job
from generation.params import QuoteIn
from generation.services import job_submit, jobs_reap
from tests.conftest import wait_for
from tests.faults import assert_books_balance, long_job
from tests.helpers import png_bytes, run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(paid_api):
    return paid_api


def test_a_failed_publish_keeps_the_paid_job_s_input_and_the_sweep_sends_it(api, alice, gpu_worker, monkeypatch):
    def broker_down(**kwargs):
        raise OperationalError("Error 111 connecting to redis: Connection refused.")

    monkeypatch.setattr(generation.services.submit, "job_dispatch", broker_down)
    job_id = long_job(api, "test-sd1", steps=4)  # 202: the job and its hold are committed

    job = Job.objects.get(id=job_id)
    assert job.status == "queued"
    assert job.input_image.storage.exists(job.input_image.name), "the paid job's input was deleted"
    assert jobs_unsent([job.id]) == [job.id]

    monkeypatch.undo()  # the broker is back
    Job.objects.filter(id=job_id).update(created_at=timezone.now() - timedelta(minutes=1))
    assert jobs_reap()["resent"] == 1
    job = wait_for(lambda: (j := Job.objects.get(id=job_id)).is_finished and j, timeout=120, message="the job")
    assert job.status == "succeeded", job.error
    assert_books_balance(alice, granted=100)


def test_a_job_whose_message_is_in_the_broker_is_not_sent_twice(api, alice, monkeypatch):
    monkeypatch.setattr(generation.services.submit, "available_slugs", lambda: {"test-sd1-alt"})
    job_id = long_job(api, "test-sd1-alt", steps=4)  # no worker serves it: the message waits
    Job.objects.filter(id=job_id).update(created_at=timezone.now() - timedelta(minutes=1))
    assert jobs_unsent([job_id]) == []
    assert jobs_reap()["resent"] == 0


@pytest.mark.postgres
def test_concurrent_submits_cannot_pass_the_active_job_cap(alice, test_checkpoints, settings, monkeypatch):
    catalog_register_test_checkpoints(test_checkpoints.values())
    credits_grant(user=alice, amount=100, ref="g:alice")
    settings.MAX_ACTIVE_JOBS = 2
    monkeypatch.setattr(generation.services.submit, "available_slugs", lambda: {"test-sd1-alt"})
    monkeypatch.setattr(generation.services.submit, "job_dispatch", lambda **kwargs: None)
    real_hold = billing.ledger.credits_hold

    def slow_hold(**kwargs):  # widen the window between the cap's check and the hold
        time.sleep(0.3)
        return real_hold(**kwargs)

    monkeypatch.setattr(generation.services.submit, "credits_hold", slow_hold)
    data = QuoteIn(model="test-sd1-alt", prompt="a harbour", steps=4, strength=1.0, width=64, height=64)

    def submit(i: int):
        from django.core.files.uploadedfile import SimpleUploadedFile

        return job_submit(user=alice, data=data, upload=SimpleUploadedFile("in.png", png_bytes()))

    results = run_in_threads(6, submit)
    made = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if isinstance(r, TooManyJobs)]
    assert (len(made), len(refused)) == (2, 4), results
    assert Job.objects.filter(user=alice).count() == 2
    assert balance_of(user=alice) == 100 - sum(job.credits_held for job in made)
