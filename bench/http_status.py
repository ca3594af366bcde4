"""Benchmark: the job status endpoint, GET /api/v1/jobs/<id> with an API
key, for a running job, under each serving stack, all in one run with wrk
(`apt-get install wrk`). The load generator, the server, PostgreSQL and
Redis share the machine's cores: quote the figures with that.

    .venv/bin/python bench/http_status.py                  # every stack
    STACKS=portal DURATION=15 .venv/bin/python bench/http_status.py

Stacks: the portal's own serving command (portal/asgi.py under uvicorn, as
scripts/run and the compose web service start it) on its embedded default
(SQLite, DEBUG on, 2 processes) and in production (PostgreSQL, DEBUG off),
there also with the job's status copy taken out of Redis (so Django and the
database answer every read, as before portal.fast_status),
against what it replaced (Django's ASGI handler under uvicorn with h11, no
kept connections) and other WSGI servers on the same code. PostgreSQL is
DATABASE_URL or postgres://postgres@127.0.0.1:5432/portal_bench (created
and migrated here); REDIS_URL defaults to redis://127.0.0.1:6379/6.
HTTPS_ONLY is off (TLS ends at the proxy in production).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._servers import ensure_database, free_port, running_job, stop, wait_ready  # noqa: E402

PY = sys.executable
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/6")
os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
os.environ["HTTPS_ONLY"] = "false"
os.environ.pop("DEBUG", None)
(ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)

DURATION = int(os.environ.get("DURATION", "15"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))


def prepare() -> tuple[str, str]:
    """(In a child process, one per database.) A migrated database with one
    person, an API key and a running job."""
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    from accounts.models import User
    from accounts.services import api_key_create
    from catalog.seeds import catalog_register_test_checkpoints

    call_command("migrate", "--noinput", verbosity=0)
    from workers.testweights import build_all

    catalog_register_test_checkpoints(build_all(Path(os.environ.get("MODELS_DIR", ROOT / "var" / "models"))))
    user, _ = User.objects.get_or_create(username="bench", defaults={"email": "bench@example.com"})
    _, secret = api_key_create(user=user, name="bench")
    job = running_job(user, step=5)
    from django.db import connections

    connections.close_all()
    return str(job.id), secret


def prepared(database_url: str) -> tuple[str, str]:
    out = subprocess.run(
        [PY, __file__, "--prepare"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


SQLITE = f"sqlite:///{ROOT / 'var' / 'bench' / 'http_status.sqlite3'}"


def stacks(port: int) -> dict[str, tuple[list[str], dict]]:
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    uvicorn = [PY, "-m", "uvicorn", *bind, "--no-proxy-headers"]
    before = [*uvicorn, "bench.asgi_before:application", "--workers", "2", "--http", "h11", "--loop", "asyncio"]
    pg = os.environ["DATABASE_URL"]
    return {
        # What scripts/run and compose served before (Django's ASGI handler, h11, no kept connections).
        "before: run default (SQLite, DEBUG on)": (
            before,
            {"DATABASE_URL": SQLITE, "DEBUG": "true", "CONN_MAX_AGE": "0"},
        ),
        "before: production (PostgreSQL)": (before, {"DATABASE_URL": pg, "CONN_MAX_AGE": "0"}),
        # Now: portal/asgi.py (a2wsgi) under uvicorn with httptools and uvloop.
        "portal: run default (SQLite, DEBUG on)": (
            [*uvicorn, "portal.asgi:application", "--workers", "2"],
            {"DATABASE_URL": SQLITE, "DEBUG": "true"},
        ),
        "portal: production (PostgreSQL)": (
            [*uvicorn, "portal.asgi:application", "--workers", "2"],
            {"DATABASE_URL": pg},
        ),
        # The same, with the job's status copy taken out of Redis: every read
        # falls through portal.fast_status to Django and the database.
        "portal: production, no status copy": (
            [*uvicorn, "portal.asgi:application", "--workers", "2"],
            {"DATABASE_URL": pg, "NO_STATUS_COPY": "1"},
        ),
        "portal: production, 4 processes": (
            [*uvicorn, "portal.asgi:application", "--workers", "4"],
            {"DATABASE_URL": pg},
        ),
        # Other servers on the same code, for comparison.
        "gunicorn sync WSGI (PostgreSQL)": (
            [PY, "-m", "gunicorn", "portal.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "2"],
            {"DATABASE_URL": pg},
        ),
        "granian WSGI (PostgreSQL)": (
            [PY, "-m", "granian", "--interface", "wsgi", "portal.wsgi:application", *bind, "--workers", "2"],
            {"DATABASE_URL": pg},
        ),
    }


def status_copy_out(job_id: str):
    """Take the job's status copy (generation.status_cache) out of Redis;
    returns what puts it back."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    key = f"portal:status:{job_id}"
    saved = client.dump(key)
    client.delete(key)
    return lambda: saved is not None and client.restore(key, 0, saved, replace=True)


WRK_LATENCY = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")


def wrk(url: str, secret: str) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", "-H", f"Authorization: Bearer {secret}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    value, unit = WRK_LATENCY.search(out).groups()
    p99_ms = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = "; ".join(m.group(0) for m in WRK_ERRORS.finditer(out)) or "none"
    return {"rps": float(WRK_RPS.search(out).group(1)), "p99_ms": p99_ms, "errors": errors}


def main() -> int:
    if sys.argv[1:] == ["--prepare"]:
        print(json.dumps(prepare()))
        return 0
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    chosen = {s.strip() for s in os.environ.get("STACKS", "").split(",") if s.strip()}
    port = free_port()
    fixtures: dict[str, tuple[str, str]] = {}
    print(
        f"wrk -t2 -c{CONNECTIONS} -d{DURATION}s, GET /api/v1/jobs/<id> (running job, API key); {os.cpu_count()} cores "
        "shared by wrk, the server, PostgreSQL and Redis",
        flush=True,
    )
    for name, (argv, extra) in stacks(port).items():
        if chosen and not any(c in name for c in chosen):
            continue
        env = {**os.environ, **extra}
        if env["DATABASE_URL"] not in fixtures:
            fixtures[env["DATABASE_URL"]] = prepared(env["DATABASE_URL"])
        job_id, secret = fixtures[env["DATABASE_URL"]]
        copy = status_copy_out(job_id) if extra.get("NO_STATUS_COPY") else None
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}"
        auth = {"Authorization": f"Bearer {secret}"}
        try:
            wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
            body = json.loads(urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=5).read())
            assert body["id"] == job_id, body
            warm = ["wrk", "-t2", "-c8", "-d2s", url, "-H", f"Authorization: Bearer {secret}"]
            subprocess.run(warm, check=True, capture_output=True)
            figures = wrk(url, secret)
        finally:
            stop(proc)
            if copy is not None:
                copy()
        print(
            f"{name:42s} {figures['rps']:7.0f} req/s  p99 {figures['p99_ms']:7.1f} ms  errors: {figures['errors']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
