"""Benchmark: does the worker keep its device busy? JOBS (default 40) jobs of
four people, queued at once for one checkpoint, go through a real Celery
worker (`celery -A portal worker -c 1`, WORKER_CHECKPOINTS=test-sd1); their
images per second, from the first job's claim to the last one's recorded
success, against the same pipeline calls (workers.runtime.run_img2img, one
job's call each) back to back in this process, in one run. Goal (issue 22):
worker / back to back >= 0.95.

    .venv/bin/python bench/worker_saturation.py
    JOBS=20 SIDES=128 .venv/bin/python bench/worker_saturation.py

Each side in SIDES (default 128,512): img2img on the random-weight test
checkpoint test-sd1 at that size, STEPS x STRENGTH (default 8 x 0.5: 4
denoising steps), guidance 7, one picture per job, on the CPU. The messages
are sent only once every job is in the database, so the worker never
waits for a submit. The back-to-back calls run first, with the worker
process not started yet; both use the machine's cores alone (nothing else
runs here), with torch's default threads.

DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/portal_bench2
(created and migrated here); REDIS_URL to redis://127.0.0.1:6379/7.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._servers import bench_environment, ensure_database, noise_png, stop  # noqa: E402

PY = sys.executable
bench_environment(
    database="postgres://postgres@127.0.0.1:5432/portal_bench2",
    redis="redis://127.0.0.1:6379/7",
    media=str(ROOT / "var" / "bench" / "media"),
)
os.environ.setdefault("MAX_ACTIVE_JOBS", "1000")
LOGS = ROOT / "var" / "bench" / "worker_saturation"
LOGS.mkdir(parents=True, exist_ok=True)

JOBS = int(os.environ.get("JOBS", "40"))
SIDES = [int(side) for side in os.environ.get("SIDES", "128,512").split(",")]
STEPS = int(os.environ.get("STEPS", "8"))
STRENGTH = float(os.environ.get("STRENGTH", "0.5"))
SLUG, GUIDANCE, PEOPLE = "test-sd1", 7.0, 4
GOAL = 0.95

ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from PIL import Image  # noqa: E402

from accounts.models import User  # noqa: E402
from billing.ledger import credits_grant  # noqa: E402
from catalog.availability import live_workers  # noqa: E402
from catalog.models import Checkpoint  # noqa: E402
from catalog.seeds import catalog_register_test_checkpoints  # noqa: E402
from generation.models import Job  # noqa: E402
from workers.testweights import build_all  # noqa: E402


def data(side: int, seed: int):
    from generation.params import QuoteIn

    return QuoteIn(model=SLUG, prompt="a lighthouse at dusk", steps=STEPS, strength=STRENGTH,
                   guidance_scale=GUIDANCE, seed=seed, width=side, height=side)  # fmt: skip


def back_to_back(side: int, png: bytes) -> float:
    """Seconds for JOBS pipeline calls, one after another, as the worker makes them."""
    from generation.params import job_params
    from workers.runtime import run_img2img
    from workers.services import pipeline_cache
    from workers.spec import CheckpointSpec

    checkpoint = Checkpoint.objects.get(slug=SLUG)
    spec = CheckpointSpec.from_checkpoint(checkpoint)
    pipe, _ = pipeline_cache().get(spec)
    source = Image.open(io.BytesIO(png))
    source.load()
    calls = [
        job_params(checkpoint=checkpoint, data=data(side, seed), image_size=(side, side), control=None, has_input=True)
        for seed in range(JOBS)
    ]
    run_img2img(pipe, spec, source, calls[0])  # warm
    started = time.perf_counter()
    for params in calls:
        run_img2img(pipe, spec, source, params)
    return time.perf_counter() - started


def through_the_worker(side: int, png: bytes, people: list) -> tuple[float, list[Job]]:
    """Seconds from the first claim to the last success of JOBS jobs queued at once."""
    from django.core.files.base import ContentFile

    import generation.services as gs
    from generation.dispatch import job_dispatch

    sent, real = [], gs.submit.job_dispatch
    gs.submit.job_dispatch = lambda **kwargs: sent.append(kwargs)  # held until every job is in
    try:
        jobs = [
            gs.job_submit(user=people[index % PEOPLE], data=data(side, index), upload=ContentFile(png, name="in.png"))
            for index in range(JOBS)
        ]
    finally:
        gs.submit.job_dispatch = real
    for message in sent:
        job_dispatch(**message)
    ids = [job.id for job in jobs]
    deadline = time.monotonic() + 60 + JOBS * 10
    while Job.objects.filter(id__in=ids, status__in=Job.ACTIVE).exists():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the jobs")
        time.sleep(0.1)
    done = list(Job.objects.filter(id__in=ids))
    assert all(job.status == "succeeded" for job in done), {job.status for job in done}
    first = min(job.started_at for job in done)
    last = max(job.finished_at for job in done)
    return (last - first).total_seconds(), done


def start_worker() -> subprocess.Popen:
    env = {**os.environ, "WORKER_CHECKPOINTS": SLUG, "JOB_BATCH_MAX": "1"}
    argv = [PY, "-m", "celery", "-A", "portal", "worker", "-Q", f"bench-{uuid.uuid4().hex[:6]}"]
    argv += ["-n", f"saturation-{uuid.uuid4().hex[:4]}@%h", "-c", "1", "-O", "fair", "-l", "warning"]
    argv += ["--without-gossip", "--without-mingle"]
    with open(LOGS / "worker.log", "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def main() -> int:
    call_command("migrate", "--noinput", verbosity=0)
    catalog_register_test_checkpoints(build_all(Path(os.environ.get("MODELS_DIR", ROOT / "var" / "models"))))
    # Leftovers of other benches sharing this database (bench/ws_progress.py's
    # job "running" without a worker) would take this worker's turns.
    Job.objects.filter(status__in=Job.ACTIVE).update(status=Job.Status.CANCELED)
    people = []
    for index in range(PEOPLE):
        user, _ = User.objects.get_or_create(
            username=f"bench-saturation-{index}", defaults={"email": f"bench-saturation-{index}@example.com"}
        )
        credits_grant(user=user, amount=1_000_000, ref=f"bench:{uuid.uuid4()}")
        Job.objects.filter(user=user, status__in=Job.ACTIVE).update(status=Job.Status.CANCELED)
        people.append(user)
    print(
        f"worker saturation: {JOBS} img2img jobs of {PEOPLE} people on {SLUG}, {STEPS} steps x {STRENGTH} strength, "
        f"one picture each, queued at once; a real worker (-c 1) against the same calls back to back in one "
        f"process; {os.cpu_count()} CPU cores, nothing else running",
        flush=True,
    )
    pngs = {side: noise_png(side) for side in SIDES}
    direct = {side: back_to_back(side, pngs[side]) for side in SIDES}
    connections.close_all()
    worker = start_worker()
    try:
        deadline = time.monotonic() + 180
        while not any(SLUG in beat.get("serves", ()) for beat in live_workers()):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not start")
            time.sleep(0.2)
        through_the_worker(SIDES[0], pngs[SIDES[0]], people)  # warm: its first load and first calls
        for side in SIDES:
            span, _ = through_the_worker(side, pngs[side], people)
            ratio = direct[side] / span
            print(
                f"  {side} px: back to back {JOBS / direct[side]:6.2f} images/s ({1000 * direct[side] / JOBS:6.1f} ms "
                f"a call); through the worker {JOBS / span:6.2f} images/s ({1000 * span / JOBS:6.1f} ms a job); "
                f"worker/back to back {ratio:.3f}   goal >= {GOAL}: {'met' if ratio >= GOAL else 'not met'}",
                flush=True,
            )
    finally:
        stop(worker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
