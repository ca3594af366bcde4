"""The README's run command (scripts/stack.py run) as a supervisor, with real
processes: a killed Celery beat is restarted, and a killed private Redis is
restarted while jobs wait in it: every job still finishes, charged once."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

import generation.services
from billing.ledger import credits_grant
from generation.models import Job
from generation.params import QuoteIn
from generation.services import job_submit
from tests.conftest import wait_for
from tests.faults import assert_books_balance
from tests.helpers import png_bytes

ROOT = Path(__file__).resolve().parent.parent
# Its subject is processes (supervision, a lost broker): CI runs it in the
# PostgreSQL pass only (one_engine).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.one_engine]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pids_of(*needles: str) -> set[int]:
    """Processes whose command line holds every needle."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if all(needle in cmdline for needle in needles):
                found.add(int(entry.name))
    return found


@pytest.fixture
def stack(tmp_path, test_checkpoints):
    """`scripts/stack.py run` on the test database, with its own private Redis."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        user, password, host, port = (db[k] or "" for k in ("USER", "PASSWORD", "HOST", "PORT"))
        database_url = f"postgres://{user}:{password}@{host}:{port}/{db['NAME']}"
    else:
        database_url = f"sqlite:///{db['NAME']}"
    redis_port, web_port = free_port(), free_port()
    # As a person would start it with DEBUG=false: the settings' production
    # defaults for static files (hashed, from a collected manifest) and HTTPS
    # (the run command's plain-HTTP default).
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "STATIC_MANIFEST", "HTTPS_ONLY"}}
    env.update(
        DEBUG="false",
        VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=database_url,
        PRIVATE_REDIS_PORT=str(redis_port),
        PORT=str(web_port),
        WORKER_CHECKPOINTS="test-sd1-alt",
        JOB_RESEND_AFTER="2",
    )
    log = open(tmp_path / "stack.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "scripts/stack.py", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{redis_port}/0"
    stack = {
        "proc": proc,
        "redis": url,
        "var": tmp_path / "var",
        "log": tmp_path / "stack.log",
        "web": f"http://127.0.0.1:{web_port}",
    }

    def gpu_worker_up() -> bool:
        assert proc.poll() is None, stack["log"].read_text()[-3000:]
        try:
            client = redis.Redis.from_url(url, decode_responses=True)
            return any("test-sd1-alt" in value for value in client.mget(client.keys("portal:worker:*")) if value)
        except redis.RedisError:
            return False

    try:
        wait_for(gpu_worker_up, timeout=180, interval=0.5, message="the stack's GPU worker")
        yield stack
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_a_killed_beat_is_restarted_and_a_killed_redis_loses_no_job(stack, alice, monkeypatch):
    # With DEBUG off, pages render and link the collected, hashed static files.
    wait_for(lambda: _get(stack["web"] + "/healthz")[0] == 200, timeout=60, message="the web server")
    for path in ("/", "/accounts/login/", "/status/"):
        status, body = _get(stack["web"] + path)
        assert status == 200, (path, status, body[:500])
        stylesheet = re.search(r'href="(/static/css/site\.[0-9a-f]{12}\.css)"', body)
        assert stylesheet, f"{path} links no hashed stylesheet"
        assert _get(stack["web"] + stylesheet.group(1))[0] == 200

    schedule = str(stack["var"] / "celerybeat-schedule")
    beat = pids_of("celery", "beat", schedule)
    assert len(beat) == 1, beat
    old = beat.pop()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: "beat died (signal 9); restarting it" in stack["log"].read_text(), timeout=10, message="the log")
    wait_for(lambda: len(pids_of("celery", "beat", schedule) - {old}) == 1, timeout=20, message="a new beat")

    # Three paid jobs whose publish "failed": the stack's sweep sends them.
    credits_grant(user=alice, amount=100, ref="g:alice")
    monkeypatch.setattr(generation.services.submit, "available_slugs", lambda: {"test-sd1-alt"})
    monkeypatch.setattr(generation.services.submit, "job_dispatch", lambda **kwargs: None)
    # Each with its own step count, so no two share a pipeline call (batching).
    datas = [
        QuoteIn(model="test-sd1-alt", prompt="a harbour", steps=20 + i, strength=1.0, width=256, height=256)
        for i in range(3)
    ]
    jobs = [job_submit(user=alice, data=data, upload=SimpleUploadedFile("in.png", png_bytes())) for data in datas]
    wait_for(
        lambda: (
            Job.objects.filter(id=jobs[0].id, status="running").exists()
            or Job.objects.filter(user=alice, status="running").exists()
        ),
        timeout=60,
        message="a job to start",
    )
    assert Job.objects.filter(user=alice, status="queued").exists(), "the others should wait in the broker"

    # The broker dies with the waiting messages (no persistence) and comes back empty.
    redis_pids = pids_of("redis-server", f":{stack['redis'].rsplit(':', 1)[1].split('/')[0]}")
    assert len(redis_pids) == 1, redis_pids
    os.kill(redis_pids.pop(), signal.SIGKILL)
    wait_for(lambda: "redis died (signal 9); restarting it" in stack["log"].read_text(), timeout=10, message="log")

    wait_for(
        lambda: not Job.objects.filter(user=alice, status__in=Job.ACTIVE).exists(),
        timeout=240,
        interval=0.5,
        message="every job to finish after the broker restart",
    )
    assert set(Job.objects.filter(user=alice).values_list("status", flat=True)) == {"succeeded"}
    after_restart = stack["log"].read_text().split("redis died", 1)[1]
    assert re.search(r"'resent': [1-9]", after_restart), "the sweep should have sent the lost messages again"
    assert_books_balance(alice, granted=100)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (a loopback URL of the test's)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def test_a_child_that_keeps_dying_stops_the_stack_loudly(capsys):
    spec = importlib.util.spec_from_file_location("stack_script", ROOT / "scripts" / "stack.py")
    stack_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stack_script)

    child = stack_script.Child("flaky", [sys.executable, "-c", "raise SystemExit(3)"]).start()
    verdicts = []
    for _ in range(10):
        child.proc.wait()
        verdicts.append(child.check())
        if not verdicts[-1]:
            break
    assert verdicts == [True] * 5 + [False]
    out = capsys.readouterr().out
    assert "flaky died (exit code 3); restarting it" in out
    assert "giving up" in out
