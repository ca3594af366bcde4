"""The public status page (/status/, /status.json) and the expected wait it
shares with the create page (generation.estimates). Jobs are rows with
recorded timestamps and workers are heartbeats: no worker process runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.models import Checkpoint
from catalog.seeds import catalog_register_test_checkpoints
from generation.estimates import expected_wait, model_statuses, status_snapshot, wait_label
from generation.models import Job
from tests.helpers import make_job
from workers.heartbeat import publish, remove
from workers.testweights import RANDOM_CHECKPOINTS

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(db):
    catalog_register_test_checkpoints(RANDOM_CHECKPOINTS)


@pytest.fixture
def workers(own_heartbeats):
    """workers(name, serves, loaded=()) publishes a live heartbeat, removed afterwards."""
    names = []

    def beat(name: str, serves: list[str], loaded: list[str] = ()) -> None:
        names.append(name)
        publish(worker_id=name, serves=serves, loaded=list(loaded), device="cpu")

    yield beat
    for name in names:
        remove(name)


def ran(user, slug: str, seconds: float, *, count: int = 3, ago: timedelta = timedelta(minutes=5)) -> None:
    """`count` succeeded jobs of `slug` that each ran `seconds`."""
    finished = timezone.now() - ago
    for _ in range(count):
        make_job(
            user,
            slug,
            status=Job.Status.SUCCEEDED,
            started_at=finished - timedelta(seconds=seconds),
            finished_at=finished,
            credits_charged=1,
        )


def queue(user, slug: str, count: int, *, status: str = Job.Status.QUEUED) -> None:
    for _ in range(count):
        make_job(user, slug, status=status)


def by_slug() -> dict:
    return {status.slug: status for status in model_statuses()}


def test_the_expected_wait_follows_recorded_run_times(catalog, alice, workers):
    workers("w1", ["test-sd1", "test-sd2"])
    ran(alice, "test-sd1", 10)
    ran(alice, "test-sd2", 20)
    queue(alice, "test-sd1", 2)
    queue(alice, "test-sd2", 2)
    status = by_slug()
    assert status["test-sd1"].typical_run_seconds == 10
    assert status["test-sd2"].typical_run_seconds == 20
    # Two jobs ahead and one worker: two runs, then its own.
    assert status["test-sd1"].expected_wait_seconds == 30
    assert status["test-sd2"].expected_wait_seconds == 60
    assert status["test-sd1"].estimate_basis == "model"


def test_the_typical_run_is_the_median_of_the_latest_runs_only(catalog, alice, workers):
    workers("w1", ["test-sd1"])
    ran(alice, "test-sd1", 100, count=5, ago=timedelta(hours=2))  # older than the latest 20
    ran(alice, "test-sd1", 5, count=20)
    ran(alice, "test-sd2", 1, count=3, ago=timedelta(days=8))  # older than RECENT_RUN_DAYS
    status = by_slug()
    assert status["test-sd1"].typical_run_seconds == 5
    assert status["test-sd2"].typical_run_seconds is None


def test_more_jobs_ahead_mean_a_longer_wait_and_more_workers_a_shorter_one(catalog, alice, workers):
    workers("w1", ["test-sd1"])
    ran(alice, "test-sd1", 10)
    empty = by_slug()["test-sd1"].expected_wait_seconds
    queue(alice, "test-sd1", 3)
    queue(alice, "test-sd1", 1, status=Job.Status.RUNNING)
    busy = by_slug()["test-sd1"]
    assert (busy.queue_length, busy.running) == (3, 1)
    assert empty == 10 and busy.expected_wait_seconds == 50
    workers("w2", ["test-sd1"])
    assert by_slug()["test-sd1"].expected_wait_seconds == 30  # 4 ahead over 2 workers: 2 rounds, then its own


def test_a_model_without_runs_borrows_its_familys_and_otherwise_is_unknown(catalog, alice, workers):
    workers("w1", ["test-sd1", "test-sd1-alt", "test-sd2"])
    ran(alice, "test-sd1", 12)
    status = by_slug()
    assert (status["test-sd1-alt"].typical_run_seconds, status["test-sd1-alt"].estimate_basis) == (12, "family")
    assert status["test-sd1-alt"].expected_wait_seconds == 12
    assert status["test-sd2"].typical_run_seconds is None and status["test-sd2"].expected_wait_seconds is None
    assert wait_label(None) == "unknown"


def test_a_model_no_live_worker_serves_is_offline_with_no_wait(catalog, alice, workers, client):
    workers("w1", ["test-sd1"], loaded=["test-sd1"])
    ran(alice, "test-sd2", 10)
    status = by_slug()
    assert status["test-sd1"].online and status["test-sd1"].warm and status["test-sd1"].workers == 1
    assert not status["test-sd2"].online and status["test-sd2"].expected_wait_seconds is None
    html = client.get(reverse("status")).content.decode()
    row = html[html.index('data-slug="test-sd2"') :]
    assert "offline" in row[: row.index("</tr>")]


def test_status_json_has_the_documented_shape(catalog, alice, workers, client):
    workers("w1", ["test-sd1"])
    ran(alice, "test-sd1", 10)
    queue(alice, "test-sd1", 1)
    response = client.get("/status.json")
    assert response.status_code == 200 and response["Cache-Control"].startswith("public")
    body = response.json()
    assert set(body) == {"models", "workers_online", "generated_at"}
    assert body["workers_online"] == 1
    assert [model["slug"] for model in body["models"]] == list(
        Checkpoint.objects.filter(enabled=True).values_list("slug", flat=True)
    )
    sd1 = next(model for model in body["models"] if model["slug"] == "test-sd1")
    assert sd1 == {
        "slug": "test-sd1",
        "name": "Test SD 1.x (random weights)",
        "family": "sd1",
        "online": True,
        "warm": False,
        "workers": 1,
        "queue_length": 1,
        "running": 0,
        "typical_run_seconds": 10.0,
        "expected_wait_seconds": 20.0,
        "estimate_basis": "model",
    }


def test_the_status_page_is_public_and_linked_from_every_page(catalog, alice, workers, client):
    workers("w1", ["test-sd1"])
    ran(alice, "test-sd1", 40)
    html = client.get(reverse("status")).content.decode()
    row = html[html.index('data-slug="test-sd1"') :]
    row = row[: row.index("</tr>")]
    assert "Test SD 1.x (random weights)" in row and "online" in row and "about 40 s" in row
    assert f'href="{reverse("status")}"' in client.get(reverse("home")).content.decode()
    # The page's header is the visitor's own: no shared cache may keep it.
    assert "public" not in client.get(reverse("status")).get("Cache-Control", "")


def test_the_figures_are_computed_once_per_cache_period(catalog, alice, workers, django_assert_num_queries):
    workers("w1", ["test-sd1"])
    with django_assert_num_queries(3):  # checkpoints, recent runs, queue counts
        first = status_snapshot()
    queue(alice, "test-sd1", 2)
    with django_assert_num_queries(0):
        assert status_snapshot() == first


def test_the_status_page_is_rate_limited_per_address(catalog, client, settings):
    settings.STATUS_RATE_LIMIT = "2/m"
    assert [client.get("/status.json").status_code for _ in range(3)] == [200, 200, 429]
    refused = client.get(reverse("status"))
    assert refused.json()["error"]["code"] == "rate_limited" and "public" not in refused.get("Cache-Control", "")


def test_the_create_page_shows_each_models_expected_wait(catalog, alice, workers, client):
    workers("w1", ["test-sd1", "test-sd2"])
    ran(alice, "test-sd1", 30)
    ran(alice, "test-sd2", 90)
    client.force_login(alice)
    html = client.get(reverse("create")).content.decode()
    assert 'value="test-sd1"' in html and 'data-wait="about 30 s"' in html and "Wait: about 30 s" in html
    assert 'data-wait="about 2 min"' in html and "Wait: about 2 min" in html
    assert 'id="wait"' in html  # the submit bar's wait, set from the chosen model by create.js


def test_the_wait_formula_and_its_labels():
    assert expected_wait(typical=10, ahead=0, workers=1) == 10
    assert expected_wait(typical=10, ahead=5, workers=2) == 30
    assert expected_wait(typical=10, ahead=5, workers=0) is None
    assert [wait_label(s) for s in (0.2, 59, 61, 3600, 3900)] == [
        "about 1 s",
        "about 59 s",
        "about 1 min",
        "about 1 h",
        "about 1 h 5 min",
    ]
