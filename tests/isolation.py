"""Parallel test processes (pytest-xdist) that never see each other's state.

Loaded with `-p tests.isolation` (pyproject's addopts), so it runs before
pytest-env and pytest-django read the environment and the settings. In an
xdist process (PYTEST_XDIST_WORKER=gwN) it gives the process:

- a Redis database of its own (REDIS_URL's number + 1 + N): the Celery
  broker, the cache and its rate-limit counters, the workers' heartbeats and
  the Channels layer, so a real worker started by one process never takes a
  job of the other's database, and no availability leaks across;
- its own media and mail folders;
- one compute thread (OMP_NUM_THREADS=1, inherited by the workers it starts).

pytest-django already gives each process its own test database
(test_portal_gw0, ...; SQLite: a file of its own).

It also keeps apart the one thing a test does to what every process
shares: a restart of the machine's PostgreSQL server. Every test holds a
shared lock while it runs; the restart happens inside `alone()`, which
takes it exclusively, so no test of another process runs meanwhile (only
the restart waits, not the rest of that test), and after it every process
drops its kept connections before its next test.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
INDEX = int(WORKER.removeprefix("gw")) if WORKER.startswith("gw") else None
# The heartbeats of tests that count workers themselves (tests/conftest.py's
# own_heartbeats) go to a database counted down from the last one.
OWN_HEARTBEATS_DB = 15 - (INDEX or 0)


def _own_redis_database(url: str, index: int) -> str:
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + 1 + index}"))


if INDEX is not None:
    # One compute thread per process (torch's intra-op pool, OpenMP, BLAS):
    # processes side by side already fill the cores, and more threads than
    # cores spin and wait on each other.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    os.environ["REDIS_URL"] = _own_redis_database(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), INDEX)
    for name, default in (("MEDIA_ROOT", "var/test/media"), ("EMAIL_FILE_PATH", "var/test/mail")):
        os.environ[name] = f"{os.environ.get(name, default)}-{WORKER}"


# One lock file per run (xdist's run id; a plain run locks nothing away from itself).
_LOCK = Path(tempfile.gettempdir()) / f"portal-tests-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}.lock"
_seen_restarts = 0


def _restarts() -> int:
    try:
        return int(_LOCK.with_suffix(".restarts").read_text() or 0)
    except (OSError, ValueError):
        return 0


_held: list = []  # the lock file of the test running now


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _seen_restarts
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        _held[:] = [lock]
        try:
            if _restarts() != _seen_restarts:
                # PostgreSQL was restarted (by this process too): the
                # connections kept from before died with it.
                from django.db import connections

                connections.close_all()
                _seen_restarts = _restarts()
            yield
        finally:
            _held.clear()
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def alone():
    """Inside a test: wait until no test of another process runs, and start
    none until the block ends (a restart of the machine's PostgreSQL). The
    other processes drop their kept connections before their next test."""
    (lock,) = _held
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        _LOCK.with_suffix(".restarts").write_text(str(_restarts() + 1))
        fcntl.flock(lock, fcntl.LOCK_SH)
