"""Guards at the edge of every request: bodies over the upload limit are
refused before they are spooled (under uvicorn too)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from portal.asgi import application
from tests.helpers import run_async

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 64 * 1024


class EndlessBody:
    """An ASGI receive() of a chunked body that never ends (it stops at
    `give_up` bytes, so the old behaviour fails the test instead of hanging)."""

    def __init__(self, give_up: int) -> None:
        self.given = 0
        self.give_up = give_up

    async def __call__(self):
        if self.given >= self.give_up:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.given += CHUNK
        return {"type": "http.request", "body": b"\0" * CHUNK, "more_body": True}


def call(path: str, receive, headers=()) -> list[dict]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/octet-stream"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    run_async(asyncio.wait_for(application(scope, receive, send), timeout=60))
    return sent


def status_and_body(sent: list[dict]) -> tuple[int, bytes]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_is_refused_with_411_before_anything_reads_it(settings):
    """Django reads a body by its Content-Length (portal/asgi.py runs its WSGI
    handler), so a chunked one would reach the view as empty: refused."""
    settings.UPLOAD_MAX_BYTES = 64 * 1024
    body = EndlessBody(give_up=20 * (64 * 1024))
    status, content = status_and_body(call("/api/v1/img2img", body, [(b"transfer-encoding", b"chunked")]))
    assert status == 411
    assert b'"length_required"' in content
    assert body.given == 0  # not one byte read


def test_bytes_past_the_limit_are_cut_off_even_without_a_declared_length(settings):
    """A body with neither a length nor chunked framing (a broken proxy) is
    still cut at the limit, never drained."""
    from portal.middleware import body_limit

    settings.UPLOAD_MAX_BYTES = 64 * 1024
    body = EndlessBody(give_up=20 * body_limit())
    status, _ = status_and_body(call("/billing/stripe/webhook/", body))
    assert body.given <= body_limit() + CHUNK
    assert status in (400, 413)  # the webhook reads no further than its (absent) length, or the guard cuts it


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body(settings):
    settings.UPLOAD_MAX_BYTES = 64 * 1024

    async def receive():
        raise AssertionError("the body was read")

    status, content = status_and_body(call("/create/", receive, [(b"content-length", str(50 << 20).encode())]))
    assert status == 413
    assert content.startswith(b"The upload is larger than")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def uvicorn_server():
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "UPLOAD_MAX_BYTES": "65536"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield port
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def test_uvicorn_answers_411_to_an_endless_chunked_upload(uvicorn_server):
    sock = socket.create_connection(("127.0.0.1", uvicorn_server), timeout=30)
    sock.sendall(
        b"POST /api/v1/img2img HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    sent = 0
    stop = threading.Event()

    def pour():  # 64 MB at most: far past the limit, never the end
        nonlocal sent
        chunk = f"{CHUNK:x}\r\n".encode() + b"\0" * CHUNK + b"\r\n"
        while not stop.is_set() and sent < 64 << 20:
            try:
                sock.sendall(chunk)
            except OSError:
                return
            sent += CHUNK

    writer = threading.Thread(target=pour, daemon=True)
    writer.start()
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(4096)
        if not data:
            break
        answer += data
    stop.set()
    sock.close()
    writer.join(timeout=10)
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    assert sent < 64 << 20


# --- Text the database cannot store (NUL) --------------------------------------------------

NUL = "a\x00b"


@pytest.mark.django_db
def test_a_nul_in_an_api_form_field_is_a_400_in_the_error_shape(alice):
    from tests.helpers import api_client

    response = api_client(alice).post("/api/v1/quote", {"model": "test-sd1", "prompt": NUL})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_params"
    assert response.json()["error"]["fields"] == {"prompt": "contains a NUL character"}


@pytest.mark.django_db
def test_a_nul_in_an_api_query_or_json_body_is_a_400_in_the_error_shape(alice):
    from tests.helpers import api_client

    api = api_client(alice)
    assert api.get("/api/v1/jobs", {"page": "1", "q": NUL}).json()["error"]["fields"] == {
        "q": "contains a NUL character"
    }
    response = api.post("/api/v1/quote", {"model": "x", "tags": ["ok", "\ud800"]}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"body.tags.1": "contains a NUL character"}


@pytest.mark.django_db
def test_a_nul_in_a_page_query_or_form_is_a_plain_400(client, alice):
    client.force_login(alice)
    response = client.get("/jobs/", {"model": NUL}, HTTP_ACCEPT="text/html")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/plain")
    client.logout()
    response = client.post("/accounts/login/", {"login": NUL, "password": "x"}, HTTP_ACCEPT="text/html")
    assert response.status_code == 400 and b"NUL" in response.content


@pytest.mark.django_db
def test_a_nul_in_a_chat_post_is_a_400_the_widget_can_show():
    from django.test import Client

    from support.models import Message

    response = Client().post("/support/messages", {"body": NUL, "client_id": "n1"})
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]
    assert not Message.objects.exists()


# --- Redis unreachable ----------------------------------------------------------------------

CLOSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def redis_down(settings):
    """The cache (rate-limit counters) and the heartbeat reader point at a
    closed port: every call raises redis-py's own ConnectionError."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CLOSED, "KEY_PREFIX": "x"}
    }
    settings.REDIS_URL = CLOSED


@pytest.mark.django_db
def test_a_submit_while_redis_is_down_is_a_503_in_the_error_shape(alice, redis_down):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation.models import Job
    from tests.helpers import api_client, png_bytes

    image = SimpleUploadedFile("a.png", png_bytes())
    response = api_client(alice).post("/api/v1/img2img", {"model": "test-sd1", "prompt": "x", "image": image})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_the_catalog_while_redis_is_down_is_a_503(alice, redis_down):
    from tests.helpers import api_client

    response = api_client(alice).get("/api/v1/models")
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"


@pytest.mark.django_db
def test_a_page_while_redis_is_down_is_a_clear_503_page(client, alice, redis_down):
    client.force_login(alice)
    response = client.get("/create/", HTTP_ACCEPT="text/html")
    assert response.status_code == 503
    assert b"Try again in a minute" in response.content


@pytest.mark.django_db
def test_a_broker_that_refuses_a_publish_is_a_503(alice, monkeypatch):
    import kombu.exceptions

    from tests.helpers import api_client

    def refuse():
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("generation.api.checkpoints_for_catalog", refuse)
    response = api_client(alice).get("/api/v1/models")
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"
