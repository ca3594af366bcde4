"""Signed completion webhooks: a job with a webhook_url POSTs its JSON there
when it ends, signed per Standard Webhooks with its owner's secret (checked
here with the `standardwebhooks` package's own verify), at least once, with
retries, never to a private address (at submit and again at delivery).

The receiver is a real HTTP server on loopback (so WEBHOOK_ALLOW_PRIVATE is
on wherever it is called); jobs run on the session's real worker and
deliveries on a real housekeeping worker with beat. Only DNS is faked, and
only where a test needs an answer no real resolver gives."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models.functions import Now
from django.test import Client
from django.urls import reverse
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from billing.ledger import credits_grant
from billing.selectors import balance_of
from catalog.seeds import catalog_register_test_checkpoints
from generation import outbound, webhooks
from generation.models import Job, WebhookDelivery
from generation.webhooks import webhook_deliver, webhook_secret_get, webhooks_send_due
from tests.conftest import wait_for
from tests.helpers import api_client, make_job, png_bytes, run_in_threads
from tests.test_settings import SETUP, start
from workers.heartbeat import publish, remove

FAKE_HOST = "hooks.example.test"


# --- A receiver on loopback ---------------------------------------------------------


class Receiver:
    """Records every request; answers each with the next scripted status
    (200 when the script is used up), after `delay` seconds."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answers: list[int] = []
        self.delay = 0.0
        self.body = b"ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                with contextlib.suppress(OSError):  # the sender may have given up (timeout)
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", "/elsewhere")
                    self.send_header("Content-Length", str(len(receiver.body)))
                    self.end_headers()
                    self.wfile.write(receiver.body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/img2img?token=abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def dns(monkeypatch):
    """Answers for the fake host name (other names resolve as usual)."""
    answers: dict[str, list[str]] = {}
    calls: list[str] = []
    real = outbound.resolve

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(answers[host]) if host in answers else real(host, port)

    monkeypatch.setattr(outbound, "resolve", resolve)
    return type("Dns", (), {"answers": answers, "calls": calls})


def verified(secret: str, request: dict) -> dict:
    return Webhook(secret).verify(request["body"], request["headers"])


def submit(client, **fields):
    data = {"model": "test-sd1", "prompt": "a lighthouse", "steps": 4, "strength": 0.5, "seed": 5}
    data.update(fields)
    data.setdefault("image", SimpleUploadedFile("in.png", png_bytes(), content_type="image/png"))
    return client.post("/api/v1/img2img", data)


def submitted(client, **fields) -> dict:
    response = submit(client, **fields)
    assert response.status_code == 202, response.content
    return response.json()


def delivery_of(job_id) -> WebhookDelivery:
    return WebhookDelivery.objects.get(job_id=job_id)


# --- End to end: a real worker runs the job, a real housekeeping worker delivers ----


@pytest.fixture
def housekeeping(start_worker):
    """The default queue's worker with beat: first attempts, and the sweep
    every second with retries one second apart. One per test: its sweeps
    would compete with those of the tests that drive deliveries themselves."""
    return start_worker(
        "", beat=True, WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_RETRY_DELAYS="1,1,1", WEBHOOK_SWEEP_INTERVAL="1"
    )


@pytest.fixture
def live(gpu_worker, housekeeping, test_checkpoints, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    catalog_register_test_checkpoints(test_checkpoints.values())


@pytest.fixture
def api(alice):
    credits_grant(user=alice, amount=50, ref="g:alice")
    return api_client(alice)


@pytest.mark.django_db(transaction=True)
def test_a_finished_job_posts_its_json_signed_with_the_owner_s_secret(live, api, receiver):
    secret = api.get("/api/v1/webhooks/secret").json()["key"]
    job = submitted(api, webhook_url=receiver.url)
    assert job["webhook"] == {"url": receiver.url, "status": "pending", "attempts": 0}

    wait_for(lambda: receiver.requests, timeout=120, message="the webhook")
    request = receiver.requests[0]
    payload = verified(secret, request)
    assert request["path"] == "/hooks/img2img?token=abc"
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["webhook-id"].startswith("msg_")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request["body"].replace(b"succeeded", b"failed"), request["headers"])

    done = wait_for(
        lambda: (body := api.get(f"/api/v1/jobs/{job['id']}").json())["webhook"]["status"] == "delivered" and body,
        timeout=30,
        message="the delivery to be recorded",
    )
    assert done["webhook"] == {"url": receiver.url, "status": "delivered", "attempts": 1}
    # The job's JSON as the API serves it, as of the end of the job.
    assert payload["status"] == "succeeded" and len(payload["images"]) == 1
    assert {**payload, "webhook": None} == {**done, "webhook": None}
    assert payload["webhook"] == {"url": receiver.url, "status": "pending", "attempts": 0}
    time.sleep(2)  # two sweeps: a delivered webhook is not sent again
    assert len(receiver.requests) == 1


@pytest.mark.one_engine
@pytest.mark.django_db(transaction=True)
def test_a_receiver_failing_twice_gets_three_attempts_with_one_webhook_id(live, api, receiver):
    receiver.answers = [500, 500, 200]
    secret = api.get("/api/v1/webhooks/secret").json()["key"]
    job = submitted(api, webhook_url=receiver.url)

    wait_for(lambda: len(receiver.requests) >= 3, timeout=120, message="three attempts")
    wait_for(lambda: delivery_of(job["id"]).status == "delivered", timeout=30, message="the delivery")
    time.sleep(2)
    assert len(receiver.requests) == 3
    assert len({request["headers"]["webhook-id"] for request in receiver.requests}) == 1
    assert len({request["body"] for request in receiver.requests}) == 1
    assert all(verified(secret, request)["id"] == job["id"] for request in receiver.requests)
    delivery = delivery_of(job["id"])
    assert (delivery.attempts, delivery.last_status_code, delivery.next_attempt_at) == (3, 200, None)
    assert api.get(f"/api/v1/jobs/{job['id']}").json()["webhook"]["attempts"] == 3


@pytest.mark.django_db(transaction=True)
def test_a_canceled_job_calls_its_webhook_too(live, api, receiver):
    secret = api.get("/api/v1/webhooks/secret").json()["key"]
    job = submitted(api, webhook_url=receiver.url, steps=40, strength=1.0, width=512, height=512)
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200

    wait_for(lambda: receiver.requests, timeout=60, message="the webhook")
    payload = verified(secret, receiver.requests[0])
    assert (payload["id"], payload["status"], payload["error_code"]) == (job["id"], "canceled", "canceled")


# --- At submit ----------------------------------------------------------------------


@pytest.fixture
def served(test_checkpoints):
    """The test models in the catalog and served (a heartbeat): a submit
    is refused only for what it sends. Nothing is committed, so no task is
    sent: jobs stay as the test leaves them."""
    catalog_register_test_checkpoints(test_checkpoints.values())
    publish(worker_id="webhook-tests", serves=list(test_checkpoints), loaded=[], device="cpu")
    yield
    remove("webhook-tests")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://100.64.0.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "ftp://8.8.8.8/hook",
        "http://user:secret@8.8.8.8/hook",
        "http://nothing-here.invalid/hook",
        "https://",
    ],
)
def test_a_private_or_bad_address_is_refused_at_submit_and_costs_nothing(api, alice, served, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = submit(api, webhook_url=url)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_params"
    assert set(error["fields"]) == {"webhook_url"} and error["fields"]["webhook_url"]
    assert not Job.objects.filter(user=alice).exists()
    assert balance_of(user=alice) == 50


@pytest.mark.django_db
def test_a_host_with_any_private_address_is_refused(api, served, settings, dns, caplog):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    dns.answers[FAKE_HOST] = ["93.184.215.14", "10.0.0.7"]
    with caplog.at_level("WARNING", logger="generation.outbound"):
        response = submit(api, webhook_url=f"https://{FAKE_HOST}/hook")
    assert response.status_code == 400
    # The private address stays in the log: told to the sender, it would map
    # the internal network.
    message = response.json()["error"]["fields"]["webhook_url"]
    assert "non-public address" in message and "10.0.0.7" not in message
    assert "10.0.0.7" in caplog.text


@pytest.mark.django_db
def test_a_host_whose_nameserver_never_answers_is_refused_in_bounded_time(api, alice, served, settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(outbound, "RESOLVE_TIMEOUT", 0.3)
    monkeypatch.setattr(outbound.socket, "getaddrinfo", lambda *args, **kwargs: time.sleep(3))
    started = time.monotonic()
    response = submit(api, webhook_url=f"https://{FAKE_HOST}/hook")
    assert time.monotonic() - started < 2.5
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["webhook_url"] == f"Could not resolve {FAKE_HOST} in time."
    assert not Job.objects.filter(user=alice).exists()


@pytest.mark.django_db
def test_a_public_address_is_accepted_and_shown_on_the_job(api, served, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    job = submitted(api, webhook_url="https://8.8.8.8/hooks?k=1")
    assert job["webhook"] == {"url": "https://8.8.8.8/hooks?k=1", "status": "pending", "attempts": 0}
    assert Job.objects.get(id=job["id"]).webhook_url == "https://8.8.8.8/hooks?k=1"


@pytest.mark.django_db
def test_pending_deliveries_are_capped_per_person_and_the_refusal_costs_nothing(api, alice, bob, served, settings):
    """Submitting and canceling jobs whose webhook never answers would keep
    the housekeeping worker busy for free: at WEBHOOK_MAX_PENDING pending
    deliveries a submit with a webhook_url is refused; without one, or for
    another person, it goes on."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    settings.WEBHOOK_MAX_PENDING = 2
    for _ in range(2):
        job = submitted(api, webhook_url="https://8.8.8.8/hook")
        assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    assert WebhookDelivery.objects.filter(job__user=alice, status="pending").count() == 2
    balance = balance_of(user=alice)
    refused = submit(api, webhook_url="https://8.8.8.8/hook")
    assert refused.status_code == 400, refused.content
    assert "still being retried" in refused.json()["error"]["fields"]["webhook_url"]
    assert balance_of(user=alice) == balance and Job.objects.filter(user=alice, status="queued").count() == 0
    assert submit(api).status_code == 202  # without a webhook it goes on
    credits_grant(user=bob, amount=10, ref="test:bob-webhook")
    assert submit(api_client(bob), webhook_url="https://8.8.8.8/hook").status_code == 202
    WebhookDelivery.objects.filter(job__user=alice).update(status="failed")  # given up: room again
    assert submit(api, webhook_url="https://8.8.8.8/hook").status_code == 202


@pytest.mark.django_db
def test_a_job_without_a_webhook_has_none_and_schedules_none(api, alice, served):
    job = submitted(api)
    assert job["webhook"] is None
    api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert api.get(f"/api/v1/jobs/{job['id']}").json()["webhook"] is None
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_the_create_page_takes_a_webhook_url_and_names_it_when_refused(client, alice, served, settings):
    credits_grant(user=alice, amount=50, ref="g:alice")
    client.force_login(alice)
    settings.WEBHOOK_ALLOW_PRIVATE = False
    form = {"model": "test-sd1", "prompt": "a lighthouse", "steps": 4, "strength": 0.5}
    refused = client.post(
        reverse("create"),
        {**form, "webhook_url": "http://10.0.0.1/x", "image": SimpleUploadedFile("a.png", png_bytes())},
    )
    assert refused.status_code == 400
    assert "non-public address" in refused.content.decode() and 'value="http://10.0.0.1/x"' in refused.content.decode()
    assert not Job.objects.exists()

    created = client.post(
        reverse("create"),
        {**form, "webhook_url": "https://8.8.8.8/x", "image": SimpleUploadedFile("a.png", png_bytes())},
    )
    assert created.status_code == 302
    assert Job.objects.get().webhook_url == "https://8.8.8.8/x"


# --- At delivery (driven in process) ------------------------------------------------


def ended_with_webhook(api, url: str) -> WebhookDelivery:
    """A job with a webhook that ended (canceled, in this test's transaction:
    nothing committed, so the attempt is the test's to make)."""
    job = submitted(api, webhook_url=url)
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    return delivery_of(job["id"])


@pytest.mark.django_db
def test_dns_that_turns_private_after_submit_is_refused_at_delivery(api, served, settings, dns, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    dns.answers[FAKE_HOST] = ["93.184.215.14"]
    delivery = ended_with_webhook(api, f"http://{FAKE_HOST}:{receiver.port}/hook")

    dns.answers[FAKE_HOST] = ["127.0.0.1"]  # the receiver is there
    assert webhook_deliver(delivery_id=delivery.id, attempt=1) == "refused"
    delivery.refresh_from_db()
    assert receiver.requests == []
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 1, None)
    # Shown on the owner's job page: the host, never the address it resolved to.
    assert delivery.last_error == f"Refused: {FAKE_HOST} resolves to a non-public address; use a public host."
    assert delivery.last_status_code is None


@pytest.mark.django_db
def test_the_request_goes_to_the_address_that_was_checked(api, alice, served, settings, dns, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    dns.answers[FAKE_HOST] = ["127.0.0.1"]
    delivery = ended_with_webhook(api, f"http://{FAKE_HOST}:{receiver.port}/hook")
    dns.calls.clear()

    assert webhook_deliver(delivery_id=delivery.id, attempt=1) == "delivered"
    # One resolution, and the connection went to its answer: the system's
    # resolver knows no such host.
    assert dns.calls == [FAKE_HOST]
    (request,) = receiver.requests
    assert request["headers"]["host"] == f"{FAKE_HOST}:{receiver.port}"
    assert verified(webhook_secret_get(user=alice).key, request)["status"] == "canceled"


@pytest.mark.django_db
def test_redirects_timeouts_and_errors_are_retried_then_failed(api, served, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_RETRY_DELAYS = (300, 0, 0)
    settings.WEBHOOK_TIMEOUT = 1
    delivery = ended_with_webhook(api, receiver.url)

    receiver.answers = [302]
    assert webhook_deliver(delivery_id=delivery.id, attempt=1) == "retry"
    delivery.refresh_from_db()
    assert len(receiver.requests) == 1, "a redirect is not followed"
    assert (delivery.status, delivery.last_status_code) == ("pending", 302)
    assert delivery.next_attempt_at - delivery.last_attempt_at > timedelta(seconds=290)
    assert webhooks_send_due() == 0, "not due for five minutes"

    receiver.delay = 2
    started = time.monotonic()
    assert webhook_deliver(delivery_id=delivery.id, attempt=2) == "retry"
    assert time.monotonic() - started < 1.9
    delivery.refresh_from_db()
    assert (delivery.last_error, delivery.last_status_code) == ("Timed out.", None)

    receiver.delay, receiver.body, receiver.answers = 0, b"\x00" + b"e" * 100_000, [500, 503]
    assert webhook_deliver(delivery_id=delivery.id, attempt=3) == "retry"
    delivery.refresh_from_db()
    assert delivery.last_status_code == 500 and 0 < len(delivery.last_response) <= 200
    assert "\x00" not in delivery.last_response
    assert webhook_deliver(delivery_id=delivery.id, attempt=4) == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 4, None)
    assert len({request["headers"]["webhook-id"] for request in receiver.requests}) == 1


@pytest.mark.django_db
def test_an_attempt_is_made_once_however_often_it_is_asked_for(api, served, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    delivery = ended_with_webhook(api, receiver.url)
    assert webhook_deliver(delivery_id=delivery.id, attempt=1) == "delivered"
    assert webhook_deliver(delivery_id=delivery.id, attempt=1) == "not claimed"
    assert webhook_deliver(delivery_id=delivery.id, attempt=2) == "not claimed"
    assert len(receiver.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_send_each_due_attempt_once(alice, test_checkpoints, settings, receiver, monkeypatch):
    """Real concurrency (threads, each with its own connection): four sweeps
    reserve a due delivery once; four messages for one attempt send once."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(webhooks, "webhook_dispatch", lambda **kwargs: sent.append(tuple(kwargs.values())))
    catalog_register_test_checkpoints(test_checkpoints.values())
    job = make_job(alice, "test-sd1", status="failed", webhook_url=receiver.url)
    delivery = WebhookDelivery.objects.create(job=job, url=receiver.url, webhook_id="msg_x", payload="{}")
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=Now(), attempts=1)

    assert sum(run_in_threads(4, lambda i: webhooks_send_due())) == 1
    assert sent == [(delivery.id, 2)]
    outcomes = run_in_threads(4, lambda i: webhook_deliver(delivery_id=delivery.id, attempt=2))
    assert sorted(outcomes) == ["delivered", "not claimed", "not claimed", "not claimed"]
    assert len(receiver.requests) == 1


# --- The secret ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_secret_is_made_once_and_rotation_replaces_it(api, alice, served, settings, receiver):
    first = api.get("/api/v1/webhooks/secret").json()["key"]
    assert first.startswith("whsec_") and api.get("/api/v1/webhooks/secret").json()["key"] == first
    rotated = api.post("/api/v1/webhooks/secret/rotate").json()["key"]
    assert rotated.startswith("whsec_") and rotated != first
    assert api.get("/api/v1/webhooks/secret").json()["key"] == rotated

    settings.WEBHOOK_ALLOW_PRIVATE = True
    delivery = ended_with_webhook(api, receiver.url)
    webhook_deliver(delivery_id=delivery.id, attempt=1)
    (request,) = receiver.requests
    assert verified(rotated, request)["id"] == str(delivery.job_id)
    with pytest.raises(WebhookVerificationError):
        verified(first, request)


@pytest.mark.django_db
def test_the_account_page_shows_the_secret_and_rotates_it_with_csrf(alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    page = browser.get(reverse("account")).content.decode()
    assert "Create a signing secret" in page
    assert browser.post(reverse("webhook_secret_rotate")).status_code == 403

    token = browser.cookies["csrftoken"].value
    response = browser.post(reverse("webhook_secret_rotate"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"].endswith("#webhooks")
    key = webhook_secret_get(user=alice).key
    assert key in browser.get(reverse("account")).content.decode()
    browser.post(reverse("webhook_secret_rotate"), {"csrfmiddlewaretoken": token})
    page = browser.get(reverse("account")).content.decode()
    assert key not in page and webhook_secret_get(user=alice).key in page


@pytest.mark.django_db
def test_another_person_s_job_and_secret_are_never_reachable(api, alice, bob, served, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    theirs = api_client(bob)
    alices, bobs = api.get("/api/v1/webhooks/secret").json()["key"], theirs.get("/api/v1/webhooks/secret").json()["key"]
    assert alices != bobs
    theirs.post("/api/v1/webhooks/secret/rotate")
    assert api.get("/api/v1/webhooks/secret").json()["key"] == alices, "bob's rotation is his own"
    assert Client().get("/api/v1/webhooks/secret").status_code == 401

    delivery = ended_with_webhook(api, receiver.url)
    assert theirs.get(f"/api/v1/jobs/{delivery.job_id}").status_code == 404
    assert receiver.url not in str(theirs.get("/api/v1/jobs").json())
    page = Client()
    page.force_login(bob)
    assert page.get(reverse("job", args=[delivery.job_id])).status_code == 404
    webhook_deliver(delivery_id=delivery.id, attempt=1)
    verified(alices, receiver.requests[0])
    with pytest.raises(WebhookVerificationError):
        verified(webhook_secret_get(user=bob).key, receiver.requests[0])


# --- Pages and the admin ------------------------------------------------------------


@pytest.mark.django_db
def test_the_owner_sees_the_delivery_on_the_job_page(api, alice, served, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    receiver.answers = [500]
    delivery = ended_with_webhook(api, receiver.url)
    webhook_deliver(delivery_id=delivery.id, attempt=1)
    page = Client()
    page.force_login(alice)
    html = page.get(reverse("job", args=[delivery.job_id])).content.decode()
    assert 'data-testid="webhook"' in html and "pending" in html and "HTTP 500" in html


@pytest.mark.django_db
def test_staff_resend_the_same_message_from_the_admin(
    api, charlie, served, settings, receiver, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_RETRY_DELAYS = (0,)
    receiver.answers = [500, 500]
    delivery = ended_with_webhook(api, receiver.url)
    webhook_deliver(delivery_id=delivery.id, attempt=1)
    assert webhook_deliver(delivery_id=delivery.id, attempt=2) == "failed"

    staff = Client()
    staff.force_login(charlie)
    listing = staff.get(reverse("admin:generation_webhookdelivery_changelist"))
    assert listing.status_code == 200 and delivery.webhook_id in listing.content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff.post(
            reverse("admin:generation_webhookdelivery_changelist"),
            {"action": "resend", "_selected_action": [delivery.id]},
        )
    assert response.status_code == 302 and callbacks, "the next attempt is sent after the commit"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 2)
    assert webhook_deliver(delivery_id=delivery.id, attempt=3) == "delivered"
    assert len(receiver.requests) == 3
    assert len({request["headers"]["webhook-id"] for request in receiver.requests}) == 1


# --- Settings -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["5,soon", "", "5,-1"])
def test_a_bad_retry_schedule_fails_loudly_at_start(value):
    result = start({"WEBHOOK_RETRY_DELAYS": value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "WEBHOOK_RETRY_DELAYS" in result.stderr


def test_by_default_private_addresses_are_refused_and_retries_last_about_a_day():
    show = "\nfrom django.conf import settings as s; import json; print(json.dumps([s.WEBHOOK_ALLOW_PRIVATE, "
    show += "sum(s.WEBHOOK_RETRY_DELAYS), s.WEBHOOK_TIMEOUT, s.CELERY_BEAT_SCHEDULE['send-due-webhooks']]))"
    unset = dict.fromkeys(
        ["WEBHOOK_ALLOW_PRIVATE", "WEBHOOK_RETRY_DELAYS", "WEBHOOK_SWEEP_INTERVAL", "WEBHOOK_TIMEOUT"]
    )
    result = start(unset, SETUP + show)
    assert result.returncode == 0, result.stderr
    allow_private, retrying, timeout, sweep = json.loads(result.stdout.splitlines()[-1])
    assert allow_private is False and timeout == 5
    assert 24 * 3600 <= retrying <= 36 * 3600
    assert sweep == {"task": "generation.send_due_webhooks", "schedule": 10.0, "options": {"expires": 10.0}}
