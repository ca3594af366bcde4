"""Read paths cost a fixed number of queries, however long the lineage, the
history or the inbox (selectors: annotated, prefetched, one recursive
query for the lineage). Each count includes the session, the user and the
page shell (balance, support badge)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from catalog.seeds import catalog_register_test_checkpoints
from generation.models import Job, JobImage
from support.services import conversation_open, message_post
from tests.conftest import make_user
from tests.helpers import api_client, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())


def add_images(job, count: int) -> None:
    for index in range(count):
        JobImage.objects.create(job=job, index=index, file=f"results/x/{job.id}/{index}.png", width=64, height=64)


def lineage_of(user, depth: int):
    """A job iterated on `depth` times, with images and three children."""
    parent = None
    for step in range(depth):
        parent = make_job(user, "test-sd1", parent=parent, status="succeeded", prompt=f"ancestor {step}")
    job = make_job(user, "test-sd1", parent=parent, status="queued", prompt="the job")
    add_images(job, 3)
    for n in range(3):
        make_job(user, "test-sd1", parent=job, prompt=f"child {n}")
    return job


@pytest.mark.parametrize("depth", [1, 12])
def test_the_job_page_is_eight_queries_whatever_the_lineage(
    client, alice, catalog, depth, django_assert_max_num_queries
):
    job = lineage_of(alice, depth)
    client.force_login(alice)
    with django_assert_max_num_queries(8):
        html = client.get(reverse("job", args=[job.id])).content.decode()
    ancestors = re.findall(r"ancestor (\d+)", html)
    assert ancestors == [str(n) for n in range(depth)], "the lineage is shown oldest first, every ancestor"
    assert html.count("child ") == 3 and html.count("/api/v1/images/") >= 3


def test_the_lineage_stops_at_twenty_ancestors(client, alice, catalog):
    job = lineage_of(alice, 25)
    client.force_login(alice)
    html = client.get(reverse("job", args=[job.id])).content.decode()
    assert re.findall(r"ancestor (\d+)", html) == [str(n) for n in range(5, 25)]


def test_the_history_page_is_eight_queries(client, alice, catalog, django_assert_max_num_queries):
    for n in range(30):
        add_images(make_job(alice, "test-sd1" if n % 2 else "test-sd2", status="succeeded", prompt=f"job {n}"), 2)
    client.force_login(alice)
    with django_assert_max_num_queries(8):
        html = client.get(reverse("history")).content.decode()
    assert html.count('class="card job-card"') == 24


def test_the_inbox_is_five_queries_with_unread_counts(client, charlie, django_assert_max_num_queries):
    for n in range(12):
        conversation = conversation_open(user=make_user(f"p{n}@example.com"), visitor_token=None)
        for m in range(n % 3 + 1):
            message_post(conversation=conversation, sender="person", body=f"hello {m}", client_id=f"{n}-{m}")
    client.force_login(charlie)
    with django_assert_max_num_queries(5):
        html = client.get(reverse("support_inbox")).content.decode()
    assert sorted(re.findall(r"<strong>(\d)</strong>", html)) == sorted(str(n % 3 + 1) for n in range(12))


def test_a_status_poll_is_two_queries_while_running_three_when_queued_or_done(
    alice, catalog, django_assert_num_queries
):
    """The key (with its person) and the job (with its checkpoint) while it
    runs; a queued job adds its queue position, a finished one its images."""
    api = api_client(alice)
    running = make_job(alice, "test-sd1", status="running", progress_step=3, progress_total=8)
    queued = make_job(alice, "test-sd1", status="queued")
    done = make_job(alice, "test-sd1", status="succeeded")
    add_images(done, 3)
    api.get(f"/api/v1/jobs/{running.id}")  # records the key's use (a write, once a minute)
    with django_assert_num_queries(2):
        body = api.get(f"/api/v1/jobs/{running.id}").json()
    assert body["progress"] == {"step": 3, "total": 8} and body["queue_position"] is None and body["images"] == []
    with django_assert_num_queries(3):
        assert api.get(f"/api/v1/jobs/{queued.id}").json()["queue_position"] == 1
    with django_assert_num_queries(3):
        assert len(api.get(f"/api/v1/jobs/{done.id}").json()["images"]) == 3


def test_polling_a_job_with_an_api_key_writes_nothing(alice, catalog, django_assert_num_queries):
    """Key use is recorded at most once a minute: the first read writes it,
    the reads after it are three queries (key, job, images) and no write."""
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import ApiKey

    job = make_job(alice, "test-sd1", status="succeeded")
    api = api_client(alice)
    api.get(f"/api/v1/jobs/{job.id}")
    first_use = ApiKey.objects.get(user=alice).last_used_at
    assert first_use is not None
    with django_assert_num_queries(3):
        assert api.get(f"/api/v1/jobs/{job.id}").status_code == 200
    assert ApiKey.objects.get(user=alice).last_used_at == first_use
    ApiKey.objects.filter(user=alice).update(last_used_at=timezone.now() - timedelta(minutes=2))
    api.get(f"/api/v1/jobs/{job.id}")
    assert ApiKey.objects.get(user=alice).last_used_at > first_use  # a minute later it is recorded again


def test_the_job_list_api_is_a_fixed_few_queries(alice, catalog, django_assert_max_num_queries):
    for n in range(12):
        job = make_job(alice, "test-sd1", status="queued" if n % 2 else "succeeded")
        if job.status == "succeeded":  # only a succeeded job has pictures
            add_images(job, 2)
    api = api_client(alice)
    with django_assert_max_num_queries(5):
        body = api.get("/api/v1/jobs").json()
    positions = sorted(job["queue_position"] for job in body["jobs"] if job["status"] == "queued")
    assert positions == [1, 2, 3, 4, 5, 6] and all(
        len(job["images"]) == 2 for job in body["jobs"] if job["status"] == "succeeded"
    )


def test_the_status_read_answers_what_the_orm_read_does(alice, bob, catalog):
    """job_status is one hand-written query: it must give JobOut exactly what
    the ORM's read gives, in every state, and nothing of anyone else's."""
    from django.utils import timezone

    from generation.errors import JobNotFound
    from generation.models import WebhookDelivery
    from generation.schemas import job_out
    from generation.selectors import job_for_user, job_status

    jobs = [
        make_job(alice, "test-sd1", status="queued", webhook_url="https://example.com/hook"),
        make_job(alice, "test-sd1", status="running", progress_step=2, progress_total=5, attempts=1),
        make_job(
            alice, "test-sd1", status="failed", error="boom", error_code="worker_lost", finished_at=timezone.now()
        ),
    ]
    done = make_job(
        alice,
        "test-sd1",
        status="succeeded",
        credits_charged=1,
        finished_at=timezone.now(),
        webhook_url="https://x.test/",
    )
    add_images(done, 2)
    WebhookDelivery.objects.create(job=done, url=done.webhook_url, webhook_id="msg_q", payload="{}", attempts=2)
    for job in [*jobs, done]:
        assert job_out(job_status(user=alice, job_id=job.id)) == job_out(job_for_user(user=alice, job_id=job.id))
    assert job_out(job_status(user=alice, job_id=str(done.id)))["webhook"]["attempts"] == 2
    for user, job_id in [(bob, done.id), (alice, "not-a-uuid"), (alice, "00000000-0000-0000-0000-000000000000")]:
        with pytest.raises(JobNotFound):
            job_status(user=user, job_id=job_id)


def test_progress_steps_write_the_row_at_most_every_interval_and_a_cancel_is_seen_at_once(
    alice, catalog, settings, django_assert_num_queries
):
    """Steps between writes cost no query; a cancel's stop signal makes the
    next step look at the row, which ends the run."""
    from generation.dispatch import job_stop_request
    from generation.services import job_progress

    settings.JOB_PROGRESS_WRITE_SECONDS = 60
    job = make_job(alice, "test-sd1", status="running", attempts=1, worker="w")
    with django_assert_num_queries(1):  # the first step writes
        assert job_progress(job=job, step=1, total=8)
    with django_assert_num_queries(0):  # the next ones, within the interval, do not
        assert job_progress(job=job, step=2, total=8)
        assert job_progress(job=job, step=3, total=8)
    row = Job.objects.values_list("progress_step", flat=True)
    assert row.get(id=job.id) == 1
    assert job_progress(job=job)  # a lease renewal writes the last step seen
    assert row.get(id=job.id) == 3
    # What job_cancel does (with no hold to release here): the row, then the signal.
    Job.objects.filter(id=job.id).update(status="canceled")
    with django_assert_num_queries(0):  # without the signal, the run goes on until the next write
        assert job_progress(job=job, step=4, total=8)
    job_stop_request(job.id)
    job._stop_checked = float("-inf")  # past the quarter second between looks
    assert job_progress(job=job, step=5, total=8) is False
