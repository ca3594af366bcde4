"""GET /readyz names each dependency a job needs; a Redis that goes down
turns it 503 with that check named."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis
from django.test import Client

from tests.conftest import free_port, wait_for
from workers.heartbeat import publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, to stop."""
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _answers(url), timeout=10, message="the test's Redis")
    yield proc, url
    proc.kill()
    proc.wait()


def _answers(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False


def test_ready_names_every_check_and_fails_when_redis_or_the_workers_are_down(settings, own_redis):
    proc, url = own_redis
    settings.REDIS_URL = url  # the checks and the heartbeats read this Redis
    client = Client()

    alone = client.get("/readyz")
    assert alone.status_code == 503
    checks = alone.json()["checks"]
    assert set(checks) == {"database", "redis", "broker", "workers"}
    assert checks["workers"]["status"].startswith("failed: LookupError")
    assert [checks[name]["status"] for name in ("database", "redis", "broker")] == ["ok", "ok", "ok"]

    publish(worker_id="gpu@test", serves=["test-sd1"], loaded=[], device="cpu")
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["status"] == "ok"
    assert ready.json()["checks"]["workers"]["status"] == "ok (1 live)"

    proc.kill()
    proc.wait()
    started = time.monotonic()
    down = client.get("/readyz")
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["status"].startswith("failed: ConnectionError")
    assert body["checks"]["database"]["status"] == "ok"
    assert time.monotonic() - started < 10  # bounded by its timeouts, not hung
