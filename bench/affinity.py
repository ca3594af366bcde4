"""Benchmark: model affinity. Prints figures, not pass/fail.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench REDIS_URL=redis://127.0.0.1:6379/5 \\
        .venv/bin/python bench/affinity.py

Several real Celery workers (WORKERS, default 3; one process each) serve the
same 16 checkpoints, each with a pipeline cache that holds CACHE_PIPELINES
(default 3) of them: the hot models fit the caches in total, all 16 do not.
The 16 are copies of the random-weight SD 1.x test checkpoint whose files
differ (a metadata entry in each safetensors file), so nothing is shared
between them and a cold load is a real load from disk by the worker's own
loading code. JOBS jobs (default 150) are submitted at once through the
service the API uses, and the run ends when every job has ended:

- single: every job on one checkpoint (the baseline; affinity on);
- mixed, affinity off: a Zipf mix (exponent ZIPF, default 1.2: the four
  busiest models take about 70% of the jobs), whichever worker takes a
  message runs it (JOB_AFFINITY=false, in the workers and in the submitter);
- mixed, affinity on: the same jobs in the same order.

Each run starts fresh workers (empty caches). Reported: cold loads (counted
from the workers' "cold load" log lines) per 100 jobs, throughput (jobs/s
from the first submit to the last job's end), and mixed / single. Every
process (workers, PostgreSQL, Redis, this submitter) shares this machine's
cores, as the log says; the ratios are what carries over.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench' / 'db.sqlite3'}")
os.environ.setdefault("MEDIA_ROOT", str(ROOT / "var" / "bench" / "media"))
LOGS = ROOT / "var" / "bench" / "affinity"
LOGS.mkdir(parents=True, exist_ok=True)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from PIL import Image  # noqa: E402

from billing.ledger import credits_grant  # noqa: E402
from catalog.availability import heartbeat_client, live_workers  # noqa: E402
from catalog.seeds import catalog_register_test_checkpoints  # noqa: E402
from generation.dispatch import queue_for  # noqa: E402
from generation.models import Job  # noqa: E402
from generation.params import QuoteIn  # noqa: E402
from generation.services import job_submit  # noqa: E402
from workers.testweights import RandomCheckpoint, build_all  # noqa: E402

WORKERS = int(os.environ.get("WORKERS", "3"))
JOBS = int(os.environ.get("JOBS", "150"))
ZIPF = float(os.environ.get("ZIPF", "1.2"))
CACHE_PIPELINES = int(os.environ.get("CACHE_PIPELINES", "3"))
MODELS = 16
SIDE, STEPS, STRENGTH = 256, 4, 0.5  # two guided denoising steps: a job about as long as a cold load here
COLD = re.compile(r": cold load \(not in this worker's cache\)")


def copies() -> list[RandomCheckpoint]:
    """16 copies of the SD 1.x test checkpoint, every file different."""
    from safetensors.torch import load_file, save_file

    models = Path(settings.MODELS_DIR)
    source = next(c for c in build_all(models) if c.slug == "test-sd1")
    made = []
    for index in range(MODELS):
        folder = f"bench-affinity/m{index:02}"
        target = models / folder
        if not (target / "model_index.json").exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(models / source.folder, partial)
            for path in partial.rglob("*.safetensors"):
                save_file(load_file(path), path, metadata={"format": "pt", "bench_copy": str(index)})
            partial.rename(target)
        made.append(RandomCheckpoint(f"aff-{index:02}", f"Affinity bench {index:02}", "sd1", folder, "Bench copy."))
    return made


def cache_budget(checkpoint: RandomCheckpoint) -> int:
    """Bytes for CACHE_PIPELINES pipelines and a half (the cache evicts the
    least recently used beyond its budget)."""
    from workers.cache import PipelineCache
    from workers.runtime import load_pipeline

    cache = PipelineCache(budget_bytes=1 << 40, loader=load_pipeline, device="cpu")
    cache.get(checkpoint.spec)
    return int(cache.memory_bytes() * (CACHE_PIPELINES + 0.5))


def start_worker(index: int, *, slugs: list[str], budget: int, affinity: bool, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "WORKER_CHECKPOINTS": ",".join(slugs),
        "PIPELINE_CACHE_BYTES": str(budget),
        "JOB_AFFINITY": "true" if affinity else "false",
        "WORKER_WARM_CHECKPOINTS": "none",
        "WORKER_SPEEDUPS": "none",
        "JOB_BATCH_MAX": "1",
        # Torch's threads per worker: the cores shared out, not each worker
        # spinning threads for all of them.
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // WORKERS)),
    }
    argv = [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", f"bench-{uuid.uuid4().hex[:6]}"]
    argv += ["-n", f"aff{index}-{uuid.uuid4().hex[:4]}@%h", "-c", "1", "-O", "fair", "-l", "info"]
    argv += ["--without-gossip", "--without-mingle"]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def run(name: str, user, plan: list[str], *, slugs: list[str], budget: int, affinity: bool) -> dict:
    logs = [LOGS / f"{name}-{index}.log" for index in range(WORKERS)]
    workers = [
        start_worker(index, slugs=slugs, budget=budget, affinity=affinity, log=log) for index, log in enumerate(logs)
    ]
    try:
        wait(lambda: len([w for w in live_workers() if slugs[0] in w.get("serves", ())]) >= WORKERS, 120, "workers")
        time.sleep(2)  # every worker consuming
        buffer = BytesIO()
        Image.new("RGB", (SIDE, SIDE), (90, 120, 200)).save(buffer, format="PNG")
        ids = []
        with override_settings(JOB_AFFINITY=affinity, SUBMIT_RATE_LIMIT="100000/m", MAX_ACTIVE_JOBS=100_000):
            started = time.monotonic()
            for index, slug in enumerate(plan):
                data = QuoteIn(
                    model=slug,
                    prompt=f"job {index}",
                    steps=STEPS,
                    strength=STRENGTH,
                    seed=index,
                    width=SIDE,
                    height=SIDE,
                )
                upload = ContentFile(buffer.getvalue(), name="in.png")
                ids.append(job_submit(user=user, data=data, upload=upload).id)
            submitted = time.monotonic() - started
        wait(lambda: not Job.objects.filter(id__in=ids, status__in=Job.ACTIVE).exists(), 900, "the jobs")
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:  # a warm shutdown: the main process ends its pool
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    # Turns left over (extra ones are harmless, but the next run starts clean).
    heartbeat_client().delete(*[queue_for(slug) for slug in slugs])
    text = "".join(log.read_text(errors="replace") for log in logs)
    succeeded = Job.objects.filter(id__in=ids, status=Job.Status.SUCCEEDED).count()
    return {
        "name": name,
        "jobs": len(ids),
        "succeeded": succeeded,
        "cold": len(COLD.findall(text)),
        "forwarded": text.count("'forwarded'"),
        "seconds": elapsed,
        "submitted": submitted,
        "throughput": len(ids) / elapsed,
    }


def main() -> None:
    from django.contrib.auth import get_user_model

    call_command("migrate", verbosity=0)
    checkpoints = copies()
    catalog_register_test_checkpoints(checkpoints)
    slugs = [c.slug for c in checkpoints]
    budget = cache_budget(checkpoints[0])
    user, _ = get_user_model().objects.get_or_create(username="bench-affinity", email="bench-affinity@localhost")
    credits_grant(user=user, amount=1_000_000, ref=f"bench:{uuid.uuid4()}")

    rng = random.Random(11)  # noqa: S311  (a reproducible mix, not a secret)
    weights = [1 / (rank + 1) ** ZIPF for rank in range(MODELS)]
    mixed = rng.choices(slugs, weights=weights, k=JOBS)
    top4 = sum(sorted((mixed.count(slug) for slug in slugs), reverse=True)[:4]) / JOBS
    single = [slugs[0]] * JOBS

    results = [
        run("single", user, single, slugs=slugs, budget=budget, affinity=True),
        run("mixed-off", user, mixed, slugs=slugs, budget=budget, affinity=False),
        run("mixed-on", user, mixed, slugs=slugs, budget=budget, affinity=True),
    ]
    print(
        f"model affinity: {WORKERS} workers x 1 process, each serving {MODELS} checkpoints "
        f"with a cache of {CACHE_PIPELINES} ({budget / 1e6:.1f} MB), "
        f"{max(1, (os.cpu_count() or 1) // WORKERS)} torch thread(s); {JOBS} jobs submitted at once, "
        f"{SIDE} px, {STEPS} steps x {STRENGTH} strength"
    )
    print(
        f"  mix: Zipf {ZIPF} over {MODELS} checkpoints, {len(set(mixed))} used, busiest 4 take {top4:.0%}; "
        f"all on {os.cpu_count()} CPU cores shared by workers, database, Redis and the submitter"
    )
    base = results[0]["throughput"]
    for r in results:
        print(
            f"  {r['name']:<10} cold loads/100 jobs {100 * r['cold'] / r['jobs']:5.1f}   "
            f"throughput {r['throughput']:5.2f} jobs/s   vs single {r['throughput'] / base:4.2f}x   "
            f"({r['succeeded']}/{r['jobs']} succeeded in {r['seconds']:.1f} s, submitted in {r['submitted']:.1f} s; "
            f"{r['forwarded']} turns forwarded)"
        )
    on, off = results[2], results[1]
    print(
        f"  affinity on vs off: cold loads {on['cold']} vs {off['cold']}, "
        f"throughput {on['throughput'] / off['throughput']:.2f}x"
    )
    print(f"  goal (mixed >= 0.9x single): {'met' if on['throughput'] >= 0.9 * base else 'not met'}")


if __name__ == "__main__":
    main()
