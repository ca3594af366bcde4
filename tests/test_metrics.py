"""GET /metrics (operators only) and the workers' metrics port: the figures
move as a job runs, read before and after from the real endpoints."""

from __future__ import annotations

import urllib.request

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from billing.ledger import credits_grant
from catalog.seeds import catalog_register_test_checkpoints
from tests.conftest import wait_for
from tests.helpers import api_client, png_bytes

TOKEN = "metrics-test-token-0123456789"


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus text answer."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(figures: dict, name: str, **labels) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: Client) -> dict:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def scrape_worker(worker) -> dict:
    port = worker.env["WORKER_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return samples(answer.read().decode())


@pytest.mark.django_db
def test_metrics_need_the_token_and_are_off_without_one(settings):
    client = Client()
    settings.METRICS_TOKEN = ""
    off = client.get("/metrics", headers={"Authorization": "Bearer "})
    assert off.status_code == 404 and off.json()["error"]["code"] == "metrics_disabled"

    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_figures_move_as_a_job_runs(settings, gpu_worker, test_checkpoints, alice):
    settings.METRICS_TOKEN = TOKEN
    catalog_register_test_checkpoints(test_checkpoints.values())
    credits_grant(user=alice, amount=50, ref="g:alice")
    api, operator = api_client(alice), Client()
    before, worker_before = scrape(operator), scrape_worker(gpu_worker)

    image = SimpleUploadedFile("in.png", png_bytes(), content_type="image/png")
    submitted = api.post(
        "/api/v1/img2img", {"model": "test-sd1", "prompt": "a lighthouse", "steps": 2, "strength": 0.5, "image": image}
    )
    assert submitted.status_code == 202, submitted.content
    job = submitted.json()
    wait_for(
        lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "succeeded", timeout=120, message="the job"
    )
    after = scrape(operator)

    # State read at scrape time: the job, the ledger, the worker.
    succeeded = {"state": "succeeded", "model": "test-sd1", "mode": "img2img"}
    assert value(after, "portal_jobs", **succeeded) == value(before, "portal_jobs", **succeeded) + 1
    for movement in ("held", "captured"):
        grown = value(after, "portal_credits_total", movement=movement) - value(
            before, "portal_credits_total", movement=movement
        )
        assert grown == job["credits_held"], movement
    assert value(after, "portal_credits_total", movement="granted") == value(
        before, "portal_credits_total", movement="granted"
    )
    assert value(after, "portal_workers_online") >= 1
    # Counted by the web process: the submit, by route.
    submit_route = {"view": "api:img2img", "method": "POST"}
    assert value(
        after, "django_http_requests_total_by_view_transport_method_total", transport="http", **submit_route
    ) == (
        value(before, "django_http_requests_total_by_view_transport_method_total", transport="http", **submit_route) + 1
    )
    # Counted by the worker's pool process, served by its main process.
    worker_after = scrape_worker(gpu_worker)
    labels = {"model": "test-sd1", "mode": "img2img"}
    for histogram in ("portal_job_queue_wait_seconds_count", "portal_job_run_seconds_count"):
        assert value(worker_after, histogram, **labels) == value(worker_before, histogram, **labels) + 1, histogram
    succeeded_event = {"event": "succeeded", **labels}
    assert value(worker_after, "portal_job_events_total", **succeeded_event) == (
        value(worker_before, "portal_job_events_total", **succeeded_event) + 1
    )


@pytest.mark.django_db
def test_credit_totals_follow_the_ledger_and_the_books_balance(alice, bob):
    from billing.ledger import credits_adjust, credits_capture, credits_hold, credits_release, credits_reverse
    from billing.models import CreditAccount
    from billing.selectors import credit_totals, credits_outstanding

    credits_grant(user=alice, amount=100, ref="t:grant")
    credits_grant(user=bob, amount=50, ref="t:buy", kind="purchase")
    credits_adjust(user=alice, amount=10, ref="t:adj+", actor=None, memo="goodwill")
    credits_adjust(user=alice, amount=-5, ref="t:adj-", actor=None, memo="correction")
    credits_hold(user=alice, amount=20, ref="t:h1")
    credits_capture(hold_ref="t:h1", ref="t:c1", amount=15)  # 5 of the hold come back
    credits_hold(user=bob, amount=7, ref="t:h2")
    credits_release(hold_ref="t:h2", ref="t:r2")
    credits_hold(user=bob, amount=3, ref="t:h3")  # still running
    credits_reverse(entry_ref="t:buy", ref="t:rev", amount=30)

    assert credit_totals() == {
        "granted": 100,
        "sold": 50,
        "refunded": 0,
        "held": 30,
        "captured": 15,
        "released": 7,
        "clawed_back": 30,
        "adjusted_in": 10,
        "adjusted_out": 5,
    }
    outstanding = credits_outstanding()
    assert outstanding["held"] == 3
    assert (
        outstanding["liability"]
        == sum(CreditAccount.objects.values_list("balance", flat=True))
        == 100 + 10 - 5 - 15 + 50 - 3 - 30
    )


@pytest.mark.django_db
def test_ledger_sums_fold_settled_rows_and_still_equal_the_whole_books(alice, bob):
    """The running sums in the cache plus the recent rows equal the sums over
    the whole ledger, before and after rows settle and are folded."""
    from datetime import timedelta

    from django.utils import timezone

    from billing.ledger import credits_capture, credits_hold
    from billing.models import LedgerEntry
    from billing.selectors import SETTLED_SECONDS, _sums_of, ledger_sums

    def whole() -> dict:
        return {key: value for key, value in _sums_of(LedgerEntry.objects.all()).items() if value}

    def incremental() -> dict:
        return {key: value for key, value in ledger_sums().items() if value}

    credits_grant(user=alice, amount=40, ref="f:g1")
    credits_hold(user=alice, amount=10, ref="f:h1")
    credits_capture(hold_ref="f:h1", ref="f:c1", amount=8)
    assert incremental() == whole()
    # These rows settle; the next read folds them into the cached sums.
    LedgerEntry.objects.update(created_at=timezone.now() - timedelta(seconds=SETTLED_SECONDS + 5))
    assert incremental() == whole()
    credits_grant(user=bob, amount=5, ref="f:g2")
    credits_hold(user=alice, amount=7, ref="f:h3")
    assert incremental() == whole()
    # A capture now of a hold that settled long ago counts that hold once.
    LedgerEntry.objects.filter(reference="f:h3").update(created_at=timezone.now() - timedelta(hours=1))
    credits_capture(hold_ref="f:h3", ref="f:c3")
    assert incremental() == whole()
    assert whole()["resolved:capture"] == 17
