"""Real Celery worker processes on the random-weight checkpoints: routing by
checkpoint queue, heartbeats, availability, and the admin's test load."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.availability import available_slugs, live_workers
from catalog.models import Checkpoint, CheckpointTestRun
from catalog.seeds import catalog_register_test_checkpoints
from catalog.services import checkpoint_test_load
from tests.conftest import wait_for

# Routing between real worker processes: CI runs it in the PostgreSQL pass only (one_engine).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.one_engine]


@pytest.fixture
def catalog(test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())
    return {c.slug: c for c in Checkpoint.objects.filter(is_test=True)}


def serving(slug: str) -> list[dict]:
    return [w for w in live_workers() if slug in w["serves"]]


def finished(run: CheckpointTestRun):
    run.refresh_from_db()
    return run if run.status in ("succeeded", "failed") else None


def test_each_job_goes_to_a_worker_that_serves_its_checkpoint(catalog, start_worker, charlie):
    # Checkpoints the session's shared worker does not serve, so only these two can take them.
    start_worker("test-sd1-alt,test-sd2")
    start_worker("test-sdxl")
    wait_for(
        lambda: {"test-sd1-alt", "test-sd2", "test-sdxl"} <= available_slugs(),
        timeout=90,
        message="both workers' heartbeats",
    )

    runs = {
        slug: checkpoint_test_load(checkpoint=catalog[slug], requested_by=charlie)
        for slug in ("test-sd1-alt", "test-sdxl", "test-sd2")
    }
    for slug, run in runs.items():
        done = wait_for(lambda run=run: finished(run), timeout=120, message=f"test load of {slug}")
        assert done.status == "succeeded", done.error
        assert done.worker in {w["worker"] for w in serving(slug)}, (slug, done.worker)
    assert runs["test-sd1-alt"].worker == runs["test-sd2"].worker != runs["test-sdxl"].worker

    worker = serving("test-sd2")[0]
    assert worker["device"] == "cpu"
    wait_for(
        lambda: {"test-sd1-alt", "test-sd2"} <= set(serving("test-sd2")[0]["loaded"]),
        timeout=10,
        message="the heartbeat to list loaded pipelines",
    )


def test_a_stopped_worker_turns_its_checkpoints_unavailable_after_the_ttl(catalog, start_worker):
    doomed = start_worker("test-sd2")
    start_worker("test-sdxl-turbo")
    wait_for(lambda: {"test-sd2", "test-sdxl-turbo"} <= available_slugs(), timeout=90, message="heartbeats")
    doomed.kill()  # SIGKILL: no clean-up, the heartbeat key just stops being refreshed
    wait_for(lambda: "test-sd2" not in available_slugs(), timeout=10, message="the heartbeat to expire")
    assert "test-sdxl-turbo" in available_slugs()


def test_a_checkpoint_no_worker_serves_fails_its_test_load_at_once(catalog, charlie):
    run = checkpoint_test_load(checkpoint=catalog["test-sd2"], requested_by=charlie)
    assert run.status == "failed"
    assert "No live worker" in run.error


def test_the_admin_test_load_action_runs_on_a_real_worker(catalog, start_worker, client, charlie):
    start_worker("test-sd1")
    wait_for(lambda: "test-sd1" in available_slugs(), timeout=90, message="the worker's heartbeat")
    client.force_login(charlie)
    checkpoint = catalog["test-sd1"]
    response = client.post(
        reverse("admin:catalog_checkpoint_changelist"),
        {"action": "test_load", "_selected_action": [checkpoint.pk]},
        follow=True,
    )
    assert b"test load queued" in response.content
    run = CheckpointTestRun.objects.get(checkpoint=checkpoint)
    done = wait_for(lambda: finished(run), timeout=120, message="the test load")
    assert done.status == "succeeded", done.error
    assert done.load_seconds is not None and done.run_seconds is not None
    assert bytes(done.result_png).startswith(b"\x89PNG")
    page = client.get(reverse("admin:catalog_checkpoint_change", args=[checkpoint.pk])).content.decode()
    assert "data:image/png;base64," in page
    assert "succeeded" in page


def test_a_worker_that_serves_checkpoints_takes_no_housekeeping_work(gpu_worker):
    """Webhook deliveries and periodic work never wait behind a job on a GPU
    worker, nor hold its GPU: asked for the housekeeping queues (as one
    started with the defaults is), the session's GPU worker drops them."""
    import socket

    from celery import current_app
    from django.conf import settings

    name = f"{gpu_worker.queue}@{socket.gethostname()}"
    answers = wait_for(
        lambda: current_app.control.inspect(destination=[name], timeout=2).active_queues(),
        timeout=30,
        message="the worker's answer",
    )
    consumed = {queue["name"] for queue in answers[name]}
    assert gpu_worker.queue in consumed and "ckpt.test-sd1" in consumed
    assert not consumed & {settings.HOUSEKEEPING_QUEUE, "celery"}
    assert current_app.amqp.router.route({}, "generation.deliver_webhook")["queue"].name == settings.HOUSEKEEPING_QUEUE
