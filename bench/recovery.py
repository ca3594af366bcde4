"""Benchmark: how long a paid job stands still after its worker is killed.
Prints figures, not pass/fail. Default settings (lease, reaper interval,
heartbeat TTL) unless the environment says otherwise.

    .venv/bin/python bench/recovery.py            # SQLite under var/bench/, Redis at REDIS_URL
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench REDIS_URL=redis://127.0.0.1:6379/5 \
        .venv/bin/python bench/recovery.py

Two faults, RUNS times each, on the random-weight test checkpoints:
- the pool process running the job is SIGKILLed (what the OOM killer picks):
  the worker's main process redelivers the message and the new pool process
  takes the job over, its old owner being provably gone;
- the whole worker (main process and pool) is SIGKILLed: a second worker's
  heartbeat runs the reaper, which sees the owner gone and requeues it.
Recovery = SIGKILL to the job running again as its next attempt. The baseline
in the same run: submit to running for a fresh job on an idle warm worker.
"""

from __future__ import annotations

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
from generation.availability import available_slugs  # noqa: E402
from generation.catalog import catalog_register_test_checkpoints  # noqa: E402
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


def start_worker() -> subprocess.Popen:
    env = {**os.environ, "WORKER_CHECKPOINTS": SLUG}
    argv = [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", f"bench-{uuid.uuid4().hex[:6]}"]
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


def owner_pid(job: Job) -> int:
    return int(job.worker.rpartition(":")[2])


def main() -> None:
    from django.contrib.auth import get_user_model
    from django.test.utils import override_settings

    call_command("migrate", verbosity=0)
    catalog_register_test_checkpoints(build_all(Path(os.environ.get("MODELS_DIR", ROOT / "var" / "models"))))
    user, _ = get_user_model().objects.get_or_create(username="bench-recovery", email="bench-recovery@localhost")
    credits_grant(user=user, amount=100_000, ref=f"bench:{uuid.uuid4()}")
    workers = [start_worker(), start_worker()]
    wait(lambda: SLUG in available_slugs(), 120, "a worker")
    time.sleep(5)  # both consuming
    baseline, pool_kill, worker_kill = [], [], []
    try:
        with override_settings(SUBMIT_RATE_LIMIT="1000/m"):
            for _ in range(RUNS):
                started = time.monotonic()
                job = submit(user)
                job = wait(lambda job=job: running(job.id, 1), 120, "the job to start")
                baseline.append(time.monotonic() - started)
                wait(lambda job=job: Job.objects.get(id=job.id).progress_step >= 1, 120, "a step")

                os.kill(owner_pid(Job.objects.get(id=job.id)), signal.SIGKILL)
                started = time.monotonic()
                wait(lambda job=job: running(job.id, 2), 120, "the job to run again")
                pool_kill.append(time.monotonic() - started)

                wait(lambda job=job: Job.objects.get(id=job.id).progress_step >= 1, 120, "a step")
                pid = owner_pid(Job.objects.get(id=job.id))
                doomed = next(w for w in workers if str(pid) in _children(w.pid))
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.wait()
                started = time.monotonic()
                wait(lambda job=job: running(job.id, 3), 120, "the job to run on the other worker")
                worker_kill.append(time.monotonic() - started)

                job_cancel(user=user, job_id=job.id)
                workers[workers.index(doomed)] = start_worker()
                wait(lambda: len(_heartbeats()) >= 2, 120, "the replacement worker")
                time.sleep(3)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)

    def line(name: str, values: list[float]) -> str:
        runs = " ".join(f"{v:.2f}" for v in values)
        return f"  {name:<44} median {statistics.median(values):6.2f} s   runs: {runs}"

    from django.conf import settings

    print(
        f"recovery after SIGKILL, {RUNS} runs, "
        f"lease {settings.JOB_LEASE_SECONDS} s, reaper {settings.REAPER_INTERVAL} s"
    )
    print(line("baseline: submit to running (warm worker)", baseline))
    print(line("pool process killed: back running", pool_kill))
    print(line("whole worker killed: running on the other", worker_kill))
    print(f"  ratio, pool process killed / baseline: {statistics.median(pool_kill) / statistics.median(baseline):.1f}x")


def _children(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return ""


def _heartbeats() -> list:
    from generation.availability import live_workers

    return [w for w in live_workers() if SLUG in w.get("serves", [])]


if __name__ == "__main__":
    main()
