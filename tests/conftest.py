from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.backends.base.creation import TEST_DATABASE_PREFIX

from tests.isolation import OWN_HEARTBEATS_DB

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def make_user(email: str, *, staff: bool = False, superuser: bool = False, password: str = "correct horse 42"):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(
        username=email.split("@")[0], email=email, password=password, is_staff=staff, is_superuser=superuser
    )
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@pytest.fixture
def alice(db):
    return make_user("alice@example.com")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com")


@pytest.fixture
def charlie(db):
    """Staff, with every permission (a superuser)."""
    return make_user("charlie@example.com", staff=True, superuser=True)


@pytest.fixture
def paid_api(alice, test_checkpoints):
    """An API client for alice, who has 100 credits; the random-weight test
    checkpoints are in the catalog."""
    from billing.ledger import credits_grant
    from catalog.seeds import catalog_register_test_checkpoints
    from tests.helpers import api_client

    catalog_register_test_checkpoints(test_checkpoints.values())
    credits_grant(user=alice, amount=100, ref="g:alice")
    return api_client(alice)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clean_cache():
    """Rate-limit counters live in the real Redis cache: start each test
    clean. Deletes only this run's prefix, never the whole database (the
    broker shares it)."""
    client = cache._cache.get_client(write=True)
    pattern = f"{settings.CACHES['default']['KEY_PREFIX']}:*"
    for key in client.scan_iter(match=pattern, count=500):
        client.delete(key)
    yield


@pytest.fixture(autouse=True)
def _postgres_only(request):
    """Tests marked `postgres` need real row locks. Locally on SQLite they
    skip with a reason; in CI that would hide a gap, so they fail instead."""
    if request.node.get_closest_marker("postgres") is None:
        return
    if connection.vendor != "postgresql":
        message = f"needs PostgreSQL (DATABASE_URL), running on {connection.vendor}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def pytest_configure(config) -> None:
    # whitenoise warns at every request when STATIC_ROOT does not exist yet.
    settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    # A fresh clone has no var/ yet, where the SQLite test database goes.
    test_db = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if test_db:
        Path(test_db).parent.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session", autouse=True)
def _end_kept_connections(django_db_setup, django_db_blocker):
    """Threads of this process keep their database connections
    (CONN_MAX_AGE): Channels' database_sync_to_async pool, the ASGI app's
    WSGI threads. End them before the test database is dropped, which
    PostgreSQL refuses while anyone is connected."""
    yield
    # Only when the test database was set up: a run without database tests
    # never leaves the real one's name.
    if connection.vendor != "postgresql" or not connection.settings_dict["NAME"].startswith(TEST_DATABASE_PREFIX):
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


class WorkerProcess:
    """A real `celery worker` in a child process, consuming its own queue, on
    the test database and the test Redis."""

    def __init__(
        self, queue: str, *, beat: bool = False, own_pid_namespace: bool = False, also: str = "", **env: str
    ) -> None:
        self.queue = queue
        self.beat = beat
        self.also = also  # more queues to name in -Q (a comma list)
        # In a pid namespace of its own, other workers cannot see its
        # processes: to them it is a worker on another host.
        self.prefix = ["unshare", "--pid", "--fork", "--kill-child"] if own_pid_namespace else []
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        db = connection.settings_dict
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "WORKER_CHECKPOINTS": "", **self.env}
        if db["ENGINE"].endswith("postgresql"):
            user, password, host, port = (db[k] or "" for k in ("USER", "PASSWORD", "HOST", "PORT"))
            env["DATABASE_URL"] = f"postgres://{user}:{password}@{host}:{port}/{db['NAME']}"
        else:
            env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
        # With beat, the worker also runs the periodic tasks (the reaper), which
        # go to the housekeeping queue.
        schedule = Path(tempfile.gettempdir()) / f"celerybeat-{self.queue}"
        beat = ["-B", "-s", str(schedule)] if self.beat else []
        queues = ",".join(filter(None, [self.queue, settings.HOUSEKEEPING_QUEUE if self.beat else "", self.also]))
        level = os.environ.get("TEST_WORKER_LOGLEVEL", "warning")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                *beat,
                "-Q",
                queues,
                "-n",
                f"{self.queue}@%h",
                "--concurrency",
                "1",
                "-O",
                "fair",
                "-l",
                level,
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool: a crash, no clean-up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    worker = WorkerProcess(queue=f"test-{uuid.uuid4().hex[:8]}").start()
    yield worker
    worker.stop()


@pytest.fixture
def start_worker(django_db_setup):
    """Start real workers inside a test (after its catalog rows are
    committed); all are stopped at the end."""
    workers: list[WorkerProcess] = []

    def start(checkpoints: str, *, beat: bool = False, own_pid_namespace: bool = False, **env: str) -> WorkerProcess:
        env = {"WORKER_CHECKPOINTS": checkpoints, "WORKER_HEARTBEAT_TTL": "3", **env}
        queue = f"test-{uuid.uuid4().hex[:8]}"
        worker = WorkerProcess(queue=queue, beat=beat, own_pid_namespace=own_pid_namespace, **env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    if workers:
        _forget_dead_heartbeats()


def _forget_dead_heartbeats() -> None:
    """A worker a test killed (SIGKILL) leaves its heartbeat until the TTL;
    the next test must not count it as a live worker. Forget those of
    processes that are gone, and of workers in a pid namespace of their own
    (a stand-in for another host; none outlives its test)."""
    from catalog.availability import HEARTBEAT_PREFIX, heartbeat_client, live_workers, worker_is_gone

    ours = str(os.stat("/proc/self/ns/pid").st_ino)
    for beat in live_workers():
        name = beat.get("worker", "")
        parts = name.rsplit(":", 2)
        if len(parts) == 3 and (worker_is_gone(name) or parts[1] != ours):
            heartbeat_client().delete(HEARTBEAT_PREFIX + name)


@pytest.fixture(autouse=True)
def _session_worker_idle_before_flush(request):
    """A transactional test that used the session's real worker ends with
    that worker idle (its jobs canceled, the worker done with them) before
    its database is flushed: a TRUNCATE while the worker still writes a
    job's rows deadlocks. (Set up after pytest-django's database fixture, so
    torn down before its flush.)"""
    yield
    marker = request.node.get_closest_marker("django_db")
    if "gpu_worker" not in request.fixturenames or not (marker and marker.kwargs.get("transaction")):
        return
    from catalog.availability import live_workers
    from generation.models import Job

    Job.objects.filter(status__in=Job.ACTIVE).update(status=Job.Status.CANCELED, lease_expires_at=None)
    served = {"test-sd1", "test-sdxl-turbo"}
    wait_for(
        lambda: (
            not any(
                beat.get("busy") or beat.get("jobs") for beat in live_workers() if served & set(beat.get("serves", []))
            )
        ),
        timeout=60,
        message="the session's worker to be idle",
    )


@pytest.fixture(scope="session")
def gpu_worker(django_db_setup, test_checkpoints):
    """One real worker for the whole session serving two test checkpoints,
    the way a GPU worker serves real ones."""
    # Its pool's metrics on a port of its own (tests/test_metrics.py).
    metrics_dir = tempfile.mkdtemp(prefix="portal-test-metrics-")
    worker = WorkerProcess(
        queue=f"test-{uuid.uuid4().hex[:8]}",
        WORKER_CHECKPOINTS="test-sd1,test-sdxl-turbo",
        WORKER_CONTROLNETS="test-sd1-canny,test-sdxl-canny",
        WORKER_LORAS="test-sd1-ink,test-sd1-glow,test-sdxl-film",
        # No test waits for this worker's models to turn unavailable: a
        # longer heartbeat than start_worker's survives a beat held up by a
        # busy machine (a lease renewal waiting on SQLite's lock).
        WORKER_HEARTBEAT_TTL="10",
        # Asked for the housekeeping queues, as a GPU worker started with the
        # defaults is: one that serves checkpoints drops them (tests/test_workers.py).
        also="housekeeping,celery",
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        WORKER_METRICS_PORT=str(free_port()),
    ).start()
    from catalog.availability import available_slugs

    wait_for(lambda: {"test-sd1", "test-sdxl-turbo"} <= available_slugs(), timeout=90, message="the worker")
    yield worker
    worker.stop()
    shutil.rmtree(metrics_dir, ignore_errors=True)


@pytest.fixture
def own_heartbeats(settings):
    """Heartbeats in a Redis database of this test's own (REDIS_URL's, which
    catalog.availability reads), so a real worker of the session beating
    next door is not counted; emptied before and after."""
    import redis

    settings.REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{OWN_HEARTBEATS_DB}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def test_checkpoints():
    """The random-weight checkpoints, built once under MODELS_DIR (by one
    test process at a time: the others then find them built)."""
    import fcntl

    from workers.testweights import build_all

    models = Path(settings.MODELS_DIR)
    models.mkdir(parents=True, exist_ok=True)
    with open(models / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return {c.slug: c for c in build_all(models)}


@pytest.fixture(scope="session")
def pipes(test_checkpoints):
    """pipes(slug) -> (pipeline, spec): a test checkpoint loaded on the CPU
    once per session, for tests that drive the runtime directly."""
    from workers.runtime import load_pipeline

    loaded = {}

    def get(slug: str):
        if slug not in loaded:
            spec = test_checkpoints[slug].spec
            loaded[slug] = (load_pipeline(spec, device="cpu")[0], spec)
        return loaded[slug]

    return get


def wait_for(predicate, *, timeout: float, interval: float = 0.2, message: str = "condition"):
    """Poll until predicate() is truthy; fail with `message` after timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")
