"""Benchmark: how long a paid job stands still after its worker is killed.
Prints figures, not pass/fail. Default settings (lease, reaper interval,
heartbeat TTL) unless the environment says otherwise.

    .venv/bin/python bench/recovery.py            # SQLite under var/bench/, Redis at REDIS_URL
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench REDIS_URL=redis://127.0.0.1:6379/5 \
        .venv/bin/python bench/recovery.py

Faults, RUNS times each, on the random-weight test checkpoints:
- the pool process running the job is SIGKILLed (what the OOM killer picks):
  the worker's main process redelivers the message and the new pool process
  takes the job over, its old owner being provably gone;
- the whole worker (main process and pool) is SIGKILLed: a second worker's
  reaper thread sees the owner's pid gone and requeues it (same host);
- the same with every worker in a pid namespace of its own (`unshare`, as
  if each ran on another machine): the reaper waits for the dead owner's
  lease and heartbeat to run out.
Recovery = SIGKILL to the job running again as its next attempt. The baseline
in the same run: submit to running for a fresh job on an idle warm worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench' / 'db.sqlite3'}")
(ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)

import django  # noqa: E402

django.setup()

from django.core.files.base import ContentFile  # noqa: E402
from django.core.management import call_command  # noqa: E402

from billing.ledger import credits_grant  # noqa: E402
from catalog.seeds import catalog_register_test_checkpoints  # noqa: E402
from generation.models import Job  # noqa: E402
from generation.params import QuoteIn  # noqa: E402
from generation.services import job_cancel, job_submit  # noqa: E402
from workers.testweights import build_all  # noqa: E402

RUNS = int(os.environ.get("RUNS", "5"))
SLUG = "test-sd1-alt"


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def start_worker(other_host: bool) -> subprocess.Popen:
    """A worker; with other_host, in a pid namespace of its own, so that the
    others cannot see its processes (as if it ran on another machine)."""
    env = {**os.environ, "WORKER_CHECKPOINTS": SLUG}
    argv = ["unshare", "--pid", "--fork", "--kill-child"] if other_host else []
    argv += [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", f"bench-{uuid.uuid4().hex[:6]}"]
    argv += ["-c", "1", "-O", "fair", "-l", "error", "--without-gossip", "--without-mingle"]
    return subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)


def submit(user) -> Job:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (512, 512), (90, 120, 200)).save(buffer, format="PNG")
    data = QuoteIn(model=SLUG, prompt="a harbour", steps=50, strength=1.0, width=512, height=512)
    return job_submit(user=user, data=data, upload=ContentFile(buffer.getvalue(), name="in.png"))


def running(job_id, attempts: int) -> Job | None:
    job = Job.objects.get(id=job_id)
    return job if job.status == "running" and job.attempts >= attempts else None


def main() -> None:
    from django.contrib.auth import get_user_model

    call_command("migrate", verbosity=0)
    catalog_register_test_checkpoints(build_all(Path(os.environ.get("MODELS_DIR", ROOT / "var" / "models"))))
    user, _ = get_user_model().objects.get_or_create(username="bench-recovery", email="bench-recovery@localhost")
    credits_grant(user=user, amount=100_000, ref=f"bench:{uuid.uuid4()}")
    results = {}
    for other_host in (False, True):
        results[other_host] = measure(user, other_host)
    from django.conf import settings

    print(
        f"recovery after SIGKILL, {RUNS} runs each, "
        f"lease {settings.JOB_LEASE_SECONDS} s, reaper {settings.REAPER_INTERVAL} s, "
        f"heartbeat TTL {settings.WORKER_HEARTBEAT_TTL} s"
    )
    baseline, pool_kill, same_host = results[False]
    _, _, other_host = results[True]
    print(line("baseline: submit to running (warm worker)", baseline))
    print(line("pool process killed: back running", pool_kill))
    print(line("whole worker killed: taken by one on its host", same_host))
    print(line("whole worker killed: taken by one elsewhere", other_host))


def line(name: str, values: list[float]) -> str:
    runs = " ".join(f"{v:.2f}" for v in values)
    return f"  {name:<48} median {statistics.median(values):6.2f} s   runs: {runs}"


def measure(user, other_host: bool) -> tuple[list[float], list[float], list[float]]:
    from django.conf import settings
    from django.test.utils import override_settings

    workers = [start_worker(other_host), start_worker(other_host)]
    wait(lambda: len(_heartbeats()) >= 2, 120, "two workers")
    time.sleep(3)  # both consuming
    baseline, pool_kill, worker_kill = [], [], []
    try:
        with override_settings(SUBMIT_RATE_LIMIT="1000/m"):
            for _ in range(RUNS):
                started = time.monotonic()
                job = submit(user)
                job = wait(lambda job=job: running(job.id, 1), 120, "the job to start")
                baseline.append(time.monotonic() - started)
                wait(lambda job=job: Job.objects.get(id=job.id).progress_step >= 1, 120, "a step")

                os.kill(_host_pid(Job.objects.get(id=job.id), workers), signal.SIGKILL)
                started = time.monotonic()
                wait(lambda job=job: running(job.id, 2), 120, "the job to run again")
                pool_kill.append(time.monotonic() - started)

                wait(lambda job=job: Job.objects.get(id=job.id).progress_step >= 1, 120, "a step")
                pid = _host_pid(Job.objects.get(id=job.id), workers)
                doomed = next(w for w in workers if pid in _descendants(w.pid))
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.wait()
                started = time.monotonic()
                wait(lambda job=job: running(job.id, 3), 120, "the job to run on the other worker")
                worker_kill.append(time.monotonic() - started)

                job_cancel(user=user, job_id=job.id)
                workers[workers.index(doomed)] = start_worker(other_host)
                wait(lambda: len(_heartbeats()) >= 2, 120, "the replacement worker")
                time.sleep(3)
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        time.sleep(settings.WORKER_HEARTBEAT_TTL + 2)  # the killed ones' heartbeats run out
    return baseline, pool_kill, worker_kill


def _host_pid(job: Job, workers) -> int:
    """The owner's pid as this benchmark sees it (a namespaced worker names
    its pid as seen inside its namespace): the pool process that runs it."""
    _, namespace, inner = job.worker.rsplit(":", 2)
    for worker in workers:
        for pid in _descendants(worker.pid):
            if str(os.stat(f"/proc/{pid}/ns/pid").st_ino) != namespace:
                continue
            status = Path(f"/proc/{pid}/status").read_text()
            nspids = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
            if nspids and nspids[-1] == inner and _is_pool(pid):
                return pid
    raise SystemExit(f"no process runs {job.worker}")


def _is_pool(pid: int) -> bool:
    return not _children(pid).strip()  # the pool process has no children of its own


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in _children(todo.pop()).split():
            found.add(int(child))
            todo.append(int(child))
    return found


def _children(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return ""


def _heartbeats() -> list:
    from catalog.availability import live_workers

    return [w for w in live_workers() if SLUG in w.get("serves", [])]


if __name__ == "__main__":
    main()
