"""GET /api/v1/jobs/<id> for a running job, polled with an API key, is
answered from Redis (portal.fast_status, generation.status_cache): the same
JSON and headers as Django's answer, never for anyone but the owner, never
after the key is revoked, and every change of the job visible in the next
read."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.services import api_key_create, api_key_revoke
from billing.ledger import credits_grant, credits_hold
from catalog.seeds import catalog_register_test_checkpoints
from generation.models import Job
from generation.schemas import job_out
from generation.selectors import job_for_user
from generation.services import job_cancel, job_claim, job_fail, job_progress, job_succeed, jobs_reap
from generation.status_cache import status_read
from portal.fast_status import StatusFastPath
from tests.helpers import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())


@pytest.fixture
def key(alice):
    """An API key of alice's, cached as Django's authentication caches it."""
    _, secret = api_key_create(user=alice, name="poller")
    assert Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/v1/jobs").status_code == 200
    return secret


@pytest.fixture
def commits(django_capture_on_commit_callbacks):
    """Run what a service leaves for after its commit (the announce) as the commit would."""

    def run(call):
        with django_capture_on_commit_callbacks(execute=True):
            return call()

    return run


def fast_get(
    path: str,
    secret: str | None,
    *,
    query: bytes = b"",
    scheme: str = "http",
    host: str = "testserver",
    authorization: str | None = None,
    extra: tuple = (),
):
    """The fast path's answer: (status, headers, body), or None when it
    handed the request to Django."""
    sent, handed = [], []

    async def django(scope, receive, send):
        handed.append(scope)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    headers = [(b"host", host.encode())]
    if secret is not None:
        headers.append((b"authorization", (authorization or "Bearer {}").format(secret).encode()))
    headers += list(extra)
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": headers}
    asyncio.run(StatusFastPath(django)({**scope, "scheme": scheme}, receive, send))
    if handed:
        return None
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


def running(alice, commits, **fields) -> Job:
    job = make_job(alice, "test-sd1", **fields)
    credits_grant(user=alice, amount=1, ref=f"test:{job.id}")
    credits_hold(user=alice, amount=1, ref=job.hold_ref, memo="test")
    claimed = commits(lambda: job_claim(job_id=job.id, worker="w"))
    assert claimed.id == job.id
    return claimed


def from_database(job) -> dict:
    return job_out(job_for_user(user=job.user, job_id=job.id))


def test_a_running_job_is_answered_as_django_answers_it(alice, key, catalog, commits, settings):
    job = running(alice, commits, webhook_url="https://example.com/hook")
    path = f"/api/v1/jobs/{job.id}"
    django = Client(HTTP_AUTHORIZATION=f"Bearer {key}").get(path)
    status, headers, body = fast_get(path, key)
    assert status == django.status_code == 200
    assert json.loads(body) == django.json() == from_database(job)
    expected = {name.lower(): value for name, value in django.headers.items()}
    got = {name.decode(): value.decode() for name, value in headers.items()}
    assert set(got) == set(expected)
    for name in set(expected) - {"x-request-id", "content-length"}:
        assert got[name] == expected[name], name
    assert int(got["content-length"]) == len(body) and got["x-request-id"] != expected["x-request-id"]

    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_SSL_REDIRECT = True
    assert fast_get(path, key) is None  # plain HTTP: Django redirects it
    _, headers, _ = fast_get(path, key, scheme="https")
    assert headers[b"strict-transport-security"].startswith(b"max-age=3600")


def test_only_the_owner_s_live_key_is_answered(alice, bob, key, catalog, commits):
    job = running(alice, commits)
    path = f"/api/v1/jobs/{job.id}"
    assert fast_get(path, key) is not None
    _, bobs = api_key_create(user=bob, name="b")
    Client(HTTP_AUTHORIZATION=f"Bearer {bobs}").get("/api/v1/jobs")  # cached as his
    assert fast_get(path, bobs) is None  # Django answers him: 404
    assert Client(HTTP_AUTHORIZATION=f"Bearer {bobs}").get(path).status_code == 404
    for secret in [None, "i2i_not-a-key", key + "x"]:
        assert fast_get(path, secret) is None
    assert fast_get(path, key, query=b"x=1") is None
    assert fast_get(path, key, host="evil.example") is None
    assert fast_get(f"/api/v1/jobs/{job.id}/cancel", key) is None

    key_row = alice.api_keys.get(name="poller")
    assert api_key_revoke(user=alice, key_id=key_row.id)
    assert fast_get(path, key) is None  # revoked: at once
    assert Client(HTTP_AUTHORIZATION=f"Bearer {key}").get(path).status_code == 401


def test_what_django_would_read_differently_goes_to_django(alice, key, catalog, commits, settings):
    """Requests that django-ninja or a2wsgi would parse otherwise than a
    dict and a split: the fast path does not guess, Django answers."""
    job = running(alice, commits)
    path = f"/api/v1/jobs/{job.id}"
    assert fast_get(path, key, authorization="bearer {}") is not None  # the scheme's case does not matter
    assert fast_get(path, key, authorization="Bearer  {}") is None  # ninja: a token starting with a space
    assert fast_get(path, key, extra=((b"authorization", b"Bearer other"),)) is None  # sent twice
    assert fast_get(path, key, extra=((b"host", b"testserver"),)) is None
    assert fast_get(path, key, extra=((b"x_forwarded_proto", b"https"),)) is None
    assert fast_get(path + "\n", key) is None
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    assert fast_get(path, key, scheme="https", extra=((b"x-forwarded-proto", b"http"),)) is None  # the header wins
    assert fast_get(path, key, extra=((b"x-forwarded-proto", b"https"),)) is not None


def test_a_request_that_read_the_key_before_its_revocation_cannot_cache_it_again(alice, key, catalog, commits):
    from accounts.services import _hash_key, _key_cached

    job = running(alice, commits)
    key_row = alice.api_keys.get(name="poller")
    assert api_key_revoke(user=alice, key_id=key_row.id)
    _key_cached(_hash_key(key), alice.pk)  # what such a request does last
    assert fast_get(f"/api/v1/jobs/{job.id}", key) is None


def test_a_running_copy_outlives_its_last_write_by_a_few_leases_only(alice, key, catalog, commits):
    from catalog.availability import heartbeat_client
    from generation.status_cache import RUNNING_TTL, TOMBSTONE_TTL, status_key

    job = running(alice, commits)
    assert 0 < heartbeat_client().ttl(status_key(job.id)) <= RUNNING_TTL < TOMBSTONE_TTL
    heartbeat_client().expire(status_key(job.id), 5)
    assert job_progress(job=job)  # a lease renewal, the same step: its life starts again
    assert heartbeat_client().ttl(status_key(job.id)) > 5
    commits(lambda: job_cancel(user=alice, job_id=job.id))
    assert heartbeat_client().ttl(status_key(job.id)) > RUNNING_TTL  # the tombstone


def test_deactivating_the_owner_stops_the_key_at_once(alice, key, catalog, commits):
    job = running(alice, commits)
    assert fast_get(f"/api/v1/jobs/{job.id}", key) is not None
    alice.is_active = False
    alice.save()
    assert fast_get(f"/api/v1/jobs/{job.id}", key) is None


def test_every_change_of_a_job_is_in_the_next_read(alice, key, catalog, commits, settings, monkeypatch):
    """Each state the job passes through: the fast read either answers what
    the database says, or hands the read to Django (never an older state)."""
    import generation.services

    settings.JOB_PROGRESS_WRITE_SECONDS = 0
    path = lambda job: f"/api/v1/jobs/{job.id}"  # noqa: E731

    def same(job) -> bool:
        answer = fast_get(path(job), key)
        return answer is not None and json.loads(answer[2]) == from_database(job)

    queued = make_job(alice, "test-sd2")  # another checkpoint: the claims below do not take it
    assert fast_get(path(queued), key) is None  # queued: its position changes with every claim
    job = running(alice, commits)
    assert same(job)
    for step in (1, 2, 3):
        assert job_progress(job=job, step=step, total=4)
        assert same(job) and json.loads(fast_get(path(job), key)[2])["progress"] == {"step": step, "total": 4}
    commits(lambda: job_fail(job=job, code="transient", message="again", retry=True))  # requeued
    assert Job.objects.get(id=job.id).status == "queued" and fast_get(path(job), key) is None
    job = commits(lambda: job_claim(job_id=job.id, worker="w2"))
    assert job.attempts == 2 and same(job)
    assert json.loads(fast_get(path(job), key)[2])["progress"]["step"] == 0  # not the first attempt's 3

    # The reaper: its worker is gone and its lease ran out.
    monkeypatch.setattr(generation.services.sweeps, "worker_is_gone", lambda worker: True)
    Job.objects.filter(id=job.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    settings.JOB_MAX_ATTEMPTS = 2
    commits(jobs_reap)
    assert Job.objects.get(id=job.id).status == "failed" and fast_get(path(job), key) is None

    other = running(alice, commits)
    assert same(other)
    commits(lambda: job_cancel(user=alice, job_id=other.id))
    assert fast_get(path(other), key) is None

    last = running(alice, commits)
    from PIL import Image

    assert commits(lambda: job_succeed(job=last, images=[Image.new("RGB", (64, 64))]))
    assert fast_get(path(last), key) is None
    assert status_read(last.id) is None
