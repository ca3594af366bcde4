"""Generation end to end through the JSON API, on a real worker and the
random-weight checkpoints: hold, run, capture; failures, cancels, privacy."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing.ledger import credits_grant
from billing.models import LedgerEntry
from billing.selectors import balance_of
from catalog.seeds import catalog_register_test_checkpoints
from generation.models import Job
from tests.conftest import wait_for
from tests.helpers import api_client, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ready(gpu_worker, test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())
    return gpu_worker


@pytest.fixture
def api(alice):
    credits_grant(user=alice, amount=50, ref="g:alice")
    return api_client(alice)


def submit(client, **fields):
    data = {"model": "test-sd1", "prompt": "a castle at dusk", "steps": 4, "strength": 0.5, "seed": 3}
    data.update(fields)
    if "image" not in data:
        data["image"] = SimpleUploadedFile("in.png", png_bytes(), content_type="image/png")
    return client.post("/api/v1/img2img", data)


def finished(client, job_id):
    body = client.get(f"/api/v1/jobs/{job_id}").json()
    return body if body["status"] in ("succeeded", "failed", "canceled") else None


def test_a_job_succeeds_and_is_charged_its_quote(ready, api, alice):
    quote = api.post(
        "/api/v1/quote",
        {"model": "test-sd1", "steps": 4, "strength": 0.5, "num_images": 2, "width": 128, "height": 128},
    ).json()["credits"]
    response = submit(api, num_images=2, width=128, height=128)
    assert response.status_code == 202, response.content
    job = response.json()
    assert (job["status"], job["credits_held"], job["model"]) == ("queued", quote, "test-sd1")
    assert balance_of(user=alice) == 50 - quote

    done = wait_for(lambda: finished(api, job["id"]), timeout=120, message="the job")
    assert done["status"] == "succeeded", done
    assert done["credits_charged"] == quote and done["progress"] == {"step": 2, "total": 2}
    assert len(done["images"]) == 2
    picture = api.get(done["images"][0]["url"])
    assert picture.status_code == 200 and picture["Content-Type"] == "image/png"
    assert b"".join(picture.streaming_content).startswith(b"\x89PNG")
    assert balance_of(user=alice) == 50 - quote
    kinds = list(LedgerEntry.objects.filter(account__user=alice).order_by("id").values_list("kind", "amount"))
    assert kinds[-2:] == [("hold", -quote), ("capture", 0)]


def test_a_pipeline_error_fails_the_job_and_releases_the_hold(ready, api, alice):
    # Weights deleted after the worker started: loading fails as missing weights.
    from catalog.models import Checkpoint

    Checkpoint.objects.filter(slug="test-sd1").update(source="test/nothing-here")
    job = submit(api).json()
    done = wait_for(lambda: finished(api, job["id"]), timeout=120, message="the job")
    assert done["status"] == "failed"
    assert done["error_code"] == "missing_weights" and "not installed" in done["error"]
    assert done["credits_charged"] is None and done["images"] == []
    assert balance_of(user=alice) == 50
    kinds = list(LedgerEntry.objects.filter(account__user=alice).order_by("id").values_list("kind", flat=True))
    assert kinds[-2:] == ["hold", "release"]


def test_cancel_while_queued_releases_and_makes_no_images(ready, api, alice):
    # The worker is busy with a long job, so the second one waits in the queue.
    long_job = submit(api, steps=40, strength=1.0, width=512, height=512).json()
    queued = submit(api).json()
    assert api.get(f"/api/v1/jobs/{queued['id']}").json()["queue_position"] >= 1
    canceled = api.post(f"/api/v1/jobs/{queued['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    api.post(f"/api/v1/jobs/{long_job['id']}/cancel")
    assert balance_of(user=alice) == 50
    again = api.post(f"/api/v1/jobs/{queued['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    assert Job.objects.get(id=queued["id"]).images.count() == 0


def test_cancel_while_running_stops_the_run_and_releases(ready, api, alice):
    job = submit(api, steps=50, strength=1.0, width=512, height=512).json()  # ~10 s of steps here
    wait_for(
        lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["progress"]["step"] >= 1,
        timeout=120,
        message="the job to start",
    )
    canceled = api.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    assert balance_of(user=alice) == 50
    # The worker stops at its next step: a small job behind it finishes long
    # before the canceled one's remaining steps would have.
    quick = submit(api).json()
    done = wait_for(lambda: finished(api, quick["id"]), timeout=6, message="the worker to drop the canceled job")
    assert done["status"] == "succeeded"
    row = Job.objects.get(id=job["id"])
    assert row.status == "canceled" and row.images.count() == 0 and row.credits_charged is None
    assert balance_of(user=alice) == 50 - done["credits_charged"]


def test_a_finished_job_cannot_be_canceled(ready, api):
    job = submit(api).json()
    wait_for(lambda: finished(api, job["id"]), timeout=120, message="the job")
    response = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_finished"


def test_iterate_uses_a_result_as_the_next_input(ready, api):
    first = submit(api).json()
    wait_for(lambda: finished(api, first["id"]), timeout=120, message="the first job")
    child = api.post(
        "/api/v1/img2img",
        {"model": "test-sd1", "prompt": "sharper", "parent_job": first["id"], "steps": 4, "strength": 0.3},
    )
    assert child.status_code == 202, child.content
    assert child.json()["parent_job"] == first["id"]
    done = wait_for(lambda: finished(api, child.json()["id"]), timeout=120, message="the child job")
    assert done["status"] == "succeeded"


def test_jobs_are_listed_newest_first_and_only_your_own(ready, api, bob):
    a = submit(api).json()
    b = submit(api).json()
    credits_grant(user=bob, amount=10, ref="g:bob")
    bob_api = api_client(bob)
    submit(bob_api)
    listed = [j["id"] for j in api.get("/api/v1/jobs").json()["jobs"]]
    assert listed[:2] == [b["id"], a["id"]] and len(listed) == 2


def test_someone_elses_job_image_and_cancel_are_404(ready, api, bob, alice):
    job = submit(api).json()
    done = wait_for(lambda: finished(api, job["id"]), timeout=120, message="the job")
    bob_api = api_client(bob)
    assert bob_api.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert bob_api.get(done["images"][0]["url"]).status_code == 404
    assert bob_api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 404
    assert bob_api.get("/api/v1/jobs/not-a-uuid").status_code == 404


def test_the_api_needs_authentication(ready, api):
    anonymous = Client()
    assert anonymous.get("/api/v1/account").status_code == 401
    assert anonymous.get("/api/v1/jobs").status_code == 401
    assert Client(HTTP_AUTHORIZATION="Bearer i2i_wrong").get("/api/v1/account").status_code == 401
    body = api.get("/api/v1/account").json()
    assert body == {"email": "alice@example.com", "credits": 50}


def test_csrf_is_enforced_on_session_posts_not_on_api_keys(ready, alice, api):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.get("/api/v1/account").status_code == 200
    response = browser.post("/api/v1/quote", {"model": "test-sd1"})
    assert response.status_code in (401, 403)
    keyed = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=api.defaults["HTTP_AUTHORIZATION"])
    assert keyed.post("/api/v1/quote", {"model": "test-sd1"}).status_code == 200


def test_models_list_availability_from_live_workers(ready, api):
    models = {m["slug"]: m for m in api.get("/api/v1/models").json()["models"]}
    assert models["test-sd1"]["available"] is True
    assert models["test-sd2"]["available"] is False
    assert set(models["test-sd1"]["defaults"]) == {"strength", "steps", "guidance_scale"}


def test_a_model_no_worker_serves_is_503_and_costs_nothing(ready, api, alice):
    response = submit(api, model="test-sd2")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert balance_of(user=alice) == 50 and not Job.objects.exists()


def test_the_openapi_docs_are_served(client):
    assert client.get("/api/v1/docs").status_code == 200
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/img2img" in schema["paths"] and "/api/v1/jobs/{job_id}/cancel" in schema["paths"]
