"""Idempotent submits (the Idempotency-Key header): a retry with the same key
and the same request gets the first answer and makes no second job and no
second hold; another request with the key is refused; concurrent retries
make exactly one job; keys are per person and expire."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

import billing.ledger
import generation.api
import generation.services
from billing.ledger import credits_grant
from billing.models import LedgerEntry
from billing.selectors import balance_of
from catalog.models import Checkpoint
from generation.models import IdempotencyKey, Job
from generation.tasks import purge_idempotency_keys
from tests.helpers import api_client, png_bytes, run_in_threads

pytestmark = pytest.mark.django_db

KEY = "3f1c9a52-5b7e-4c1e-9a51-0d6f3e1b2c4d"
RETRIES = 20


@pytest.fixture
def api(paid_api, monkeypatch):
    """alice's API client (100 credits); test-sd1 is served, and nothing is
    sent to a worker."""
    monkeypatch.setattr(generation.services.submit, "available_slugs", lambda: {"test-sd1"})
    monkeypatch.setattr(generation.services.submit, "job_dispatch", lambda **kwargs: None)
    return paid_api


def submit(client, key: str | None = None, *, color=(200, 120, 40), **fields):
    data = {"model": "test-sd1", "prompt": "a lighthouse at dawn", "steps": 4, "strength": 0.5, "seed": 3}
    data.update(fields)
    data.setdefault("image", SimpleUploadedFile("in.png", png_bytes(color=color), content_type="image/png"))
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post("/api/v1/img2img", data, headers=headers)


def holds(user) -> int:
    return LedgerEntry.objects.filter(account__user=user, kind="hold").count()


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_the_same_key_and_request_get_the_first_answer_and_one_job(api, alice):
    first = submit(api, KEY)
    assert first.status_code == 202, first.content
    # The job moves on; the stored answer stays what the first request was told.
    Job.objects.filter(id=first.json()["id"]).update(status="running")

    again = submit(api, KEY)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert Job.objects.filter(user=alice).count() == 1 and holds(alice) == 1
    assert balance_of(user=alice) == 100 - first.json()["credits_held"]


def test_the_same_key_with_another_request_is_refused(api, alice):
    assert submit(api, KEY).status_code == 202
    another_prompt = submit(api, KEY, prompt="a lighthouse in fog")
    another_picture = submit(api, KEY, color=(10, 10, 10))
    for response in (another_prompt, another_picture):
        assert response.status_code == 409, response.content
        assert error_code(response) == "idempotency_key_reused"
    assert Job.objects.filter(user=alice).count() == 1 and holds(alice) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_make_one_job(api, alice, monkeypatch):
    # The request that gets in holds its credits only after every other retry
    # has been answered: all of them arrive while it is in progress.
    answered: list[int] = []
    real_hold = billing.ledger.credits_hold

    def hold_once_the_others_answered(**kwargs):
        deadline = time.monotonic() + 30
        while len(answered) < RETRIES - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        return real_hold(**kwargs)

    monkeypatch.setattr(generation.services.submit, "credits_hold", hold_once_the_others_answered)
    authorization = api.defaults["HTTP_AUTHORIZATION"]

    def retry(i: int):
        response = submit(Client(HTTP_AUTHORIZATION=authorization), KEY)
        answered.append(i)
        return response

    results = run_in_threads(RETRIES, retry)
    statuses = sorted((getattr(r, "status_code", None) or repr(r) for r in results), key=str)
    assert statuses == [202] + [409] * (RETRIES - 1), statuses
    job = Job.objects.get(user=alice)
    accepted = next(r for r in results if r.status_code == 202).json()
    assert accepted["id"] == str(job.id)
    assert {error_code(r) for r in results if r.status_code == 409} == {"idempotency_key_in_progress"}
    assert holds(alice) == 1 and balance_of(user=alice) == 100 - job.credits_held
    # Once it is done, a retry gets its answer.
    assert submit(api, KEY).json() == accepted


def test_two_people_may_use_the_same_key(api, alice, bob):
    credits_grant(user=bob, amount=100, ref="g:bob")
    alices = submit(api, KEY)
    bobs = submit(api_client(bob), KEY, prompt="a boat")
    assert (alices.status_code, bobs.status_code) == (202, 202)
    assert alices.json()["id"] != bobs.json()["id"]
    assert Job.objects.filter(user=alice).count() == 1 and Job.objects.filter(user=bob).count() == 1


@pytest.mark.parametrize("key", ["k" * 256, "", "tab\tinside", "caf\u00e9"])
def test_a_key_that_is_not_1_to_255_printable_characters_is_refused(api, alice, key):
    response = submit(api, key)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_params" and "Idempotency-Key" in error["fields"]
    assert not Job.objects.filter(user=alice).exists() and not IdempotencyKey.objects.exists()


def test_a_key_of_255_printable_characters_is_taken(api):
    key = "~ !" + "k" * 252
    assert submit(api, key).status_code == 202
    assert submit(api, key)["Idempotent-Replayed"] == "true"


def test_a_final_refusal_is_stored_and_replayed(api, alice):
    first = submit(api, KEY, steps=60)  # test-sd1 allows 50
    assert first.status_code == 400 and error_code(first) == "invalid_params"
    Checkpoint.objects.filter(slug="test-sd1").update(max_steps=80)  # the same request would now pass

    again = submit(api, KEY, steps=60)
    assert (again.status_code, again.json()) == (400, first.json())
    assert again["Idempotent-Replayed"] == "true"
    assert submit(api, KEY).status_code == 409  # the key is taken by that request
    assert submit(api, "a new key", steps=60).status_code == 202
    assert Job.objects.filter(user=alice).count() == 1


def test_a_refusal_by_the_schema_is_not_stored(api, alice):
    # Refused before the operation ran (the schema: an empty prompt): the
    # answer depends on the request alone, nothing was done, the key is free.
    refused = submit(api, KEY, prompt="")
    assert refused.status_code == 400 and "prompt" in refused.json()["error"]["fields"]
    assert submit(api, KEY).status_code == 202


def test_a_retry_later_answer_is_not_stored(api, alice, monkeypatch):
    monkeypatch.setattr(generation.services.submit, "available_slugs", set)
    unavailable = submit(api, KEY)
    assert unavailable.status_code == 503 and error_code(unavailable) == "model_unavailable"
    assert not IdempotencyKey.objects.exists()

    monkeypatch.setattr(generation.services.submit, "available_slugs", lambda: {"test-sd1"})
    assert submit(api, KEY).status_code == 202
    assert Job.objects.filter(user=alice).count() == 1 and holds(alice) == 1


def test_a_server_error_frees_the_key(api, alice, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("a bug")

    with monkeypatch.context() as patch:
        patch.setattr(generation.api, "job_submit", broken)
        with pytest.raises(RuntimeError):
            submit(api, KEY)
    assert not IdempotencyKey.objects.exists()
    # Deleted, not only left to a retry: even another request may use the key.
    assert submit(api, KEY, prompt="something else").status_code == 202


def test_a_key_left_by_a_request_that_died_is_taken_over(api, alice, monkeypatch):
    # The process dies mid-request (a server's worker timeout raises SystemExit):
    # its transaction rolls back, its row lock goes, the key's row stays unanswered.
    def killed(**kwargs):
        raise SystemExit(1)

    with monkeypatch.context() as patch:
        patch.setattr(generation.api, "job_submit", killed)
        with pytest.raises(SystemExit):
            submit(api, KEY)
    assert IdempotencyKey.objects.get().status_code is None
    assert not Job.objects.filter(user=alice).exists()

    retry = submit(api, KEY)
    assert retry.status_code == 202 and not retry.has_header("Idempotent-Replayed")
    assert Job.objects.filter(user=alice).count() == 1 and holds(alice) == 1


def test_an_expired_key_lets_the_request_run_again(api, alice):
    first = submit(api, KEY).json()
    expired = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS, minutes=1)
    IdempotencyKey.objects.update(created_at=expired)

    second = submit(api, KEY)
    assert second.status_code == 202 and not second.has_header("Idempotent-Replayed")
    assert second.json()["id"] != first["id"]
    assert Job.objects.filter(user=alice).count() == 2 and holds(alice) == 2
    assert IdempotencyKey.objects.get().created_at > expired


def test_beat_purges_expired_keys_only(api):
    submit(api, "old")
    submit(api, "new")
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))
    assert purge_idempotency_keys() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "generation.purge_idempotency_keys" in schedule


def test_operations_that_create_a_job_document_the_header_and_its_answers(api):
    schema = api.get("/api/v1/openapi.json").json()
    creating = {
        f"{method.upper()} {path}": operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "202" in operation["responses"]
    }
    assert "POST /api/v1/img2img" in creating
    for name, operation in creating.items():
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers, name
        assert headers["Idempotency-Key"]["schema"]["maxLength"] == 255
        assert "409" in operation["responses"], name
