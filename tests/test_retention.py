"""Result retention: uploads and results of jobs that ended more than
RESULT_RETENTION_DAYS ago are deleted; the job rows and the ledger stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from billing.models import LedgerEntry
from billing.selectors import balance_of
from generation.models import Job
from generation.services import results_expire
from tests.helpers import job_run_here

pytestmark = pytest.mark.django_db  # no commit: no task is sent; the test runs the worker's job_run


def finished_job(api) -> Job:
    return Job.objects.get(id=job_run_here(api).json()["id"])


def ledger_of(user) -> list[tuple]:
    return list(LedgerEntry.objects.filter(account__user=user).order_by("id").values_list("id", "kind", "amount"))


def files_of(job: Job) -> list[str]:
    return [job.input_image.name, *(image.file.name for image in job.images.all())]


def ended_days_ago(job: Job, days: float) -> Job:
    Job.objects.filter(id=job.id).update(finished_at=timezone.now() - timedelta(days=days))
    return Job.objects.get(id=job.id)


def test_expired_results_are_deleted_and_the_job_and_its_money_stay(paid_api, alice, gpu_worker, client):
    job = finished_job(paid_api)
    files = files_of(job)
    storage = job.input_image.storage
    assert len(files) == 2 and all(storage.exists(name) for name in files)
    books = ledger_of(alice)
    balance = balance_of(user=alice)
    assert (
        paid_api.get(f"/api/v1/jobs/{job.id}").json()["expires_at"]
        == (job.finished_at + timedelta(days=django_settings.RESULT_RETENTION_DAYS)).isoformat()
    )

    job = ended_days_ago(job, django_settings.RESULT_RETENTION_DAYS + 1)
    assert results_expire() == 1
    assert results_expire() == 0  # once

    assert not any(storage.exists(name) for name in files)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.expired_at is not None and not job.input_image
    assert not job.images.exists()
    assert ledger_of(alice) == books
    assert balance_of(user=alice) == balance

    shown = paid_api.get(f"/api/v1/jobs/{job.id}").json()
    assert shown["images"] == [] and shown["expires_at"] == job.expired_at.isoformat()
    assert shown["credits_charged"] == job.credits_charged
    client.force_login(alice)
    page = client.get(f"/jobs/{job.id}/").content.decode()
    assert "Expired: the input and the pictures were deleted" in page

    # Iterating on it asks for the picture again, clearly, and costs nothing.
    again = paid_api.post("/api/v1/img2img", {"model": "test-sd1", "prompt": "more", "parent_job": str(job.id)})
    assert again.status_code == 400 and "deleted" in again.json()["error"]["fields"]["parent_job"]
    assert balance_of(user=alice) == balance


def test_results_within_the_retention_period_are_kept(paid_api, gpu_worker):
    job = ended_days_ago(finished_job(paid_api), django_settings.RESULT_RETENTION_DAYS - 1)
    assert results_expire() == 0
    assert all(job.input_image.storage.exists(name) for name in files_of(job))


def test_zero_days_keeps_results_forever(paid_api, gpu_worker, settings):
    settings.RESULT_RETENTION_DAYS = 0
    job = ended_days_ago(finished_job(paid_api), 3650)
    assert results_expire() == 0
    assert all(job.input_image.storage.exists(name) for name in files_of(job))
    assert paid_api.get(f"/api/v1/jobs/{job.id}").json()["expires_at"] is None


def test_beat_expires_results_periodically():
    entry = django_settings.CELERY_BEAT_SCHEDULE["expire-results"]
    assert entry["task"] == "generation.expire_results"
    from generation.tasks import expire_results

    assert expire_results.name == "generation.expire_results"
