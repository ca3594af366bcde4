"""Benchmark: the job path and the control plane's cost. Prints figures, not
pass/fail, against the goals of issue 11: fixed overhead (creation to end,
minus the pipeline call) p50 <= 30 ms on the CPU; portal/direct <= 1.03;
HTTP submit of a 512 px PNG p50 <= 30 ms; submit to claim p50 <= 20 ms;
<= 10 CPU-ms per job outside the pipeline (web + dispatch + claim + finish).

    .venv/bin/python bench/job_path.py
    JOBS=5 STACKS=uvicorn .venv/bin/python bench/job_path.py

DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/portal_bench2
(created and migrated here); REDIS_URL to redis://127.0.0.1:6379/7. The job:
img2img on the random-weight test checkpoint test-sd1, 512 px, 20 steps x
strength 0.6 (12 denoising steps, guidance 7), one picture, on the CPU.

1. direct: this process loads the pipeline the way a worker does
   (workers.services.pipeline_cache), warms it, and times the diffusers call
   itself (pipe(...) with run_batch's arguments): wall and CPU time.
2. portal, for each serving stack (uvicorn as scripts/stack.py and compose
   serve it; gunicorn sync WSGI as in bench/http_status.py): a real server
   and a real Celery worker (`celery -A portal worker`, one process,
   WORKER_CHECKPOINTS=test-sd1), a warm-up job, then JOBS jobs one after
   another, each a multipart POST /api/v1/img2img with an API key; this
   process watches the row (not the API, so polling costs the server
   nothing) until it succeeded. Stages come from the row's timestamps
   (created_at, started_at, finished_at) and the client's clock (same host).
   CPU: the server's and the worker's processes (psutil) before and after
   the timed jobs, minus the direct call's CPU per job.
3. in-worker stages: this process runs workers.services.job_run itself on
   jobs submitted through generation.services.job_submit (dispatch switched
   off here so the real worker does not take them), with perf_counter around
   the functions job_run calls (claim, load input, pipeline, the step and
   preview callbacks, save, capture, notify). Nothing is added to the app.

Every process (server, worker, this one, PostgreSQL, Redis) shares this
machine's cores; the log says so.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._servers import bench_environment, ensure_database, free_port, noise_png, stop  # noqa: E402

PY = sys.executable
bench_environment(
    database="postgres://postgres@127.0.0.1:5432/portal_bench2",
    redis="redis://127.0.0.1:6379/7",
    media=str(ROOT / "var" / "bench" / "media"),
)
LOGS = ROOT / "var" / "bench" / "job_path"
LOGS.mkdir(parents=True, exist_ok=True)

JOBS = int(os.environ.get("JOBS", "10"))
SLUG, SIDE, STEPS, STRENGTH, GUIDANCE = "test-sd1", 512, 20, 0.6, 7.0
TASK_DONE = re.compile(r"Task workers\.run_job\[[^\]]+\] succeeded in ([\d.]+)s")


ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from PIL import Image  # noqa: E402

from accounts.models import User  # noqa: E402
from accounts.services import api_key_create  # noqa: E402
from billing.ledger import credits_grant  # noqa: E402
from catalog.availability import live_workers  # noqa: E402
from catalog.models import Checkpoint  # noqa: E402
from catalog.seeds import catalog_register_test_checkpoints  # noqa: E402
from generation.models import Job  # noqa: E402
from workers.testweights import build_all  # noqa: E402


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def input_png() -> bytes:
    return noise_png(SIDE)


def wait(predicate, timeout: float, what: str, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU of a process and its live descendants."""
    total = 0.0
    root = psutil.Process(proc.pid)
    for each in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            total += times.user + times.system
    return total


# --- 1. direct ----------------------------------------------------------------------


def direct(png: bytes) -> dict:
    import torch

    from workers.runtime import FAMILIES
    from workers.services import pipeline_cache
    from workers.spec import CheckpointSpec

    spec = CheckpointSpec.from_checkpoint(Checkpoint.objects.get(slug=SLUG))
    pipe, _ = pipeline_cache().get(spec)
    assert not FAMILIES[spec.family].turbo
    source = Image.open(io.BytesIO(png)).convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)

    def call() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            pipe(
                prompt=["a lighthouse at dusk"],
                negative_prompt=None,
                image=[source],
                strength=STRENGTH,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                num_images_per_prompt=1,
                generator=[torch.Generator(device="cpu").manual_seed(1)],
                output_type="pil",
            )
        return time.perf_counter() - wall, time.process_time() - cpu

    call()  # warm
    runs = [call() for _ in range(JOBS)]
    return {"wall": [w for w, _ in runs], "cpu": [c for _, c in runs], "threads": torch.get_num_threads()}


# --- 2. portal --------------------------------------------------------------------------


def multipart(png: bytes, fields: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="in.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def stacks(port: int) -> dict[str, list[str]]:
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    return {
        "uvicorn (as served)": [PY, "-m", "uvicorn", "portal.asgi:application", *bind, "--workers", "2",
                                "--no-proxy-headers"],
        "gunicorn sync WSGI": [PY, "-m", "gunicorn", "portal.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "2"],
    }  # fmt: skip


def start_worker(log: Path) -> subprocess.Popen:
    env = {**os.environ, "WORKER_CHECKPOINTS": SLUG}
    argv = [PY, "-m", "celery", "-A", "portal", "worker", "-Q", f"bench-{uuid.uuid4().hex[:6]}"]
    argv += ["-n", f"jobpath-{uuid.uuid4().hex[:4]}@%h", "-c", "1", "-O", "fair", "-l", "info"]
    argv += ["--without-gossip", "--without-mingle"]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def submit_http(port: int, secret: str, png: bytes, seed: int) -> tuple[str, float, float]:
    fields = {"prompt": "a lighthouse at dusk", "model": SLUG, "steps": STEPS, "strength": STRENGTH,
              "guidance_scale": GUIDANCE, "seed": seed}  # fmt: skip
    body, content_type = multipart(png, fields)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": content_type, "Host": "127.0.0.1"}
    sent = time.time()
    started = time.perf_counter()
    conn.request("POST", "/api/v1/img2img", body=body, headers=headers)
    response = conn.getresponse()
    answer = response.read()
    took = time.perf_counter() - started
    conn.close()
    if response.status != 202:
        raise SystemExit(f"submit answered {response.status}: {answer[:300]!r}")
    import json

    return json.loads(answer)["id"], sent, took


def portal(name: str, argv: list[str], port: int, secret: str, png: bytes, worker: subprocess.Popen) -> dict:
    slug = name.split()[0]
    log = LOGS / "worker.log"
    tasks_before = len(TASK_DONE.findall(log.read_text(errors="replace")))
    with open(LOGS / f"server-{slug}.log", "wb") as out:
        server = subprocess.Popen(argv, cwd=ROOT, env=os.environ, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:

        def answers():
            with contextlib.suppress(OSError):
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200

        wait(answers, 60, "the server", every=0.2)
        rows = []
        for index in range(JOBS + 1):
            if index == 1:  # after the warm-up job
                time.sleep(1)
                cpu_before = {"web": cpu_seconds(server), "worker": cpu_seconds(worker)}
                run_started = time.perf_counter()
            job_id, sent, took = submit_http(port, secret, png, seed=index)
            job = wait(
                lambda job_id=job_id: Job.objects.filter(id=job_id).exclude(status__in=Job.ACTIVE).first(),
                300,
                "the job",
                every=0.1,  # the stages come from the row's timestamps; polling must not slow the worker
            )
            seen = time.time()
            connections.close_all()
            if job.status != Job.Status.SUCCEEDED:
                raise SystemExit(f"job {job_id} ended {job.status}: {job.error}")
            if index:
                rows.append(
                    {
                        "submit": took,
                        "created": job.created_at.timestamp() - sent,
                        "queue": (job.started_at - job.created_at).total_seconds(),
                        "submit_to_claim": job.started_at.timestamp() - sent,
                        "running": (job.finished_at - job.started_at).total_seconds(),
                        "e2e_created": (job.finished_at - job.created_at).total_seconds(),
                        "e2e": job.finished_at.timestamp() - sent,
                        "seen": seen - sent,
                    }
                )
        elapsed = time.perf_counter() - run_started
        cpu_after = {"web": cpu_seconds(server), "worker": cpu_seconds(worker)}
    finally:
        stop(server)
    tasks = [float(v) for v in TASK_DONE.findall(log.read_text(errors="replace"))][tasks_before + 1 :]
    return {
        "rows": rows,
        "elapsed": elapsed,
        "cpu": {k: cpu_after[k] - cpu_before[k] for k in cpu_after},
        "task": tasks,
    }


# --- 3. in-worker stages --------------------------------------------------------------


class Stages:
    """Wall and CPU (this process, all threads) time per stage; a stage
    entered inside another is recorded as "outer > inner"."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def clear(self) -> None:
        self.wall, self.cpu = {}, {}

    def wrap(self, module, name: str, stage: str):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            key = " > ".join([*self.stack, stage])
            self.wall.setdefault(key, 0.0)
            self.cpu.setdefault(key, 0.0)
            self.stack.append(stage)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.stack.pop()
                self.wall[key] += time.perf_counter() - wall
                self.cpu[key] += time.process_time() - cpu

        setattr(module, name, wrapper)
        return module, name, original


def in_worker(user, png: bytes) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """job_submit (the service behind POST /api/v1/img2img) and job_run (what
    the worker's task calls) in this process, the functions they call timed."""
    from django.core.files.base import ContentFile

    import generation.images as gi
    import generation.services as gs
    import workers.services as ws
    from generation.params import QuoteIn
    from workers.progress import ProgressRelay

    stages = Stages()
    # As in a worker process (workers.boot): steps served off the pipeline's thread.
    relay = ws.progress_relay = ProgressRelay(threaded=True)
    sent = []
    patched = [
        stages.wrap(gs.submit, "job_submit", "submit (service)"),
        stages.wrap(gs.submit, "_submits_too_fast", "rate limit"),
        stages.wrap(gs.submit, "checkpoint_for_submit", "checkpoint"),
        stages.wrap(gs.submit, "image_clean", "image_clean"),
        stages.wrap(gs.submit, "prompt_moderate", "prompt checks"),
        stages.wrap(gs.submit, "available_slugs", "available_slugs"),
        stages.wrap(gs.submit, "credits_hold", "credits hold"),
        stages.wrap(gs.submit, "job_dispatch", "dispatch (not sent here)"),
        stages.wrap(gi, "png_encode", "PNG encode"),
        stages.wrap(gs.lifecycle, "png_encode", "PNG encode"),
        # Uploads and results share one storage (generation.media): one wrap.
        stages.wrap(Job._meta.get_field("input_image").storage, "save", "file write"),
        stages.wrap(ws, "job_run", "job_run"),
        stages.wrap(ws, "job_claim", "claim"),
        stages.wrap(ws, "_input_of", "load input"),
        stages.wrap(ws, "run_batch", "pipeline (run_batch)"),
        # On the pipeline's thread; the relay's thread does the rest (events,
        # row writes, previews: in the job_run CPU, not in these).
        stages.wrap(ws, "_report_progress", "step callbacks"),
        stages.wrap(relay, "preview", "preview hand-offs"),
        stages.wrap(ws, "_screen", "image check"),
        stages.wrap(ws, "job_succeed", "save + capture"),
        stages.wrap(gs.lifecycle, "credits_capture", "capture (ledger)"),
        stages.wrap(gs._common, "job_announce", "notify"),
        stages.wrap(gs._common, "webhook_schedule", "webhook schedule"),
    ]
    dispatch = gs.submit.job_dispatch
    gs.submit.job_dispatch = lambda **kwargs: sent.append(kwargs)  # the real worker must not take these
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    try:
        for index in range(JOBS + 1):
            stages.clear()
            data = QuoteIn(model=SLUG, prompt="a lighthouse at dusk", steps=STEPS, strength=STRENGTH,
                           guidance_scale=GUIDANCE, seed=index, width=SIDE, height=SIDE)  # fmt: skip
            job = gs.submit.job_submit(user=user, data=data, upload=ContentFile(png, name="in.png"))
            outcome = ws.job_run(job_id=str(job.id), slug=SLUG)
            assert outcome == "succeeded", outcome
            if index:
                for key in stages.wall:
                    wall[key].append(stages.wall[key])
                    cpu[key].append(stages.cpu[key])
    finally:
        gs.submit.job_dispatch = dispatch
        for module, name, original in reversed(patched):
            setattr(module, name, original)
    from generation.events import events_flush

    events_flush(5)
    return wall, cpu


def main() -> int:
    call_command("migrate", "--noinput", verbosity=0)
    catalog_register_test_checkpoints(build_all(Path(os.environ.get("MODELS_DIR", ROOT / "var" / "models"))))
    user, _ = User.objects.get_or_create(username="bench-jobpath", defaults={"email": "bench-jobpath@example.com"})
    credits_grant(user=user, amount=1_000_000, ref=f"bench:{uuid.uuid4()}")
    _, secret = api_key_create(user=user, name="bench")
    # This bench's and other benches' leftovers in this database (bench/ws_progress.py's
    # job "running" without a worker) would take the worker's turns.
    Job.objects.filter(status__in=Job.ACTIVE).update(status=Job.Status.CANCELED)
    connections.close_all()
    png = input_png()
    chosen = {s.strip() for s in os.environ.get("STACKS", "").split(",") if s.strip()}

    print(
        f"job path: img2img on {SLUG}, {SIDE} px, {STEPS} steps x {STRENGTH} strength "
        f"({int(STEPS * STRENGTH)} denoising steps, guidance {GUIDANCE}), input PNG {len(png) / 1e3:.0f} kB; "
        f"{JOBS} timed jobs after a warm-up; server, worker, this process, PostgreSQL and Redis "
        f"share {os.cpu_count()} CPU cores",
        flush=True,
    )
    base = direct(png)
    pipe_wall, pipe_cpu = p50(base["wall"]), p50(base["cpu"])
    print(
        f"  direct pipe() call (this process, {base['threads']} torch threads): "
        f"wall p50 {1000 * pipe_wall:.0f} ms (min {1000 * min(base['wall']):.0f}, max {1000 * max(base['wall']):.0f}), "
        f"CPU p50 {1000 * pipe_cpu:.0f} ms",
        flush=True,
    )

    port = free_port()
    worker = start_worker(LOGS / "worker.log")
    try:
        wait(lambda: any(SLUG in w.get("serves", ()) for w in live_workers()), 180, "the worker", every=0.2)
        connections.close_all()
        report_portal(chosen, port, secret, png, worker, pipe_wall, pipe_cpu)
        connections.close_all()
        # While the worker beats (its checkpoint stays available for job_submit).
        wall, cpu = in_worker(user, png)
    finally:
        stop(worker)
    print(
        f"  stages in-process (job_submit then job_run in this process, {JOBS} jobs; p50 ms of wall and of CPU, "
        "CPU counting all threads):",
        flush=True,
    )
    for key in wall:
        depth = key.count(" > ")
        label = "  " * depth + key.rsplit(" > ", 1)[-1]
        print(f"    {label:<40} wall {1000 * p50(wall[key]):8.1f}   CPU {1000 * p50(cpu[key]):8.1f}", flush=True)
    pipeline_key = "job_run > pipeline (run_batch)"
    outside_wall = p50([a - b for a, b in zip(wall["job_run"], wall[pipeline_key], strict=True)])
    outside_cpu = p50([a - b for a, b in zip(cpu["job_run"], cpu[pipeline_key], strict=True)])
    print(
        f"    job_run minus its pipeline call: wall {1000 * outside_wall:.1f} ms, CPU {1000 * outside_cpu:.1f} ms; "
        f"submit (service) CPU {1000 * p50(cpu['submit (service)']):.1f} ms; "
        f"run_batch - direct pipe() wall {1000 * (p50(wall[pipeline_key]) - pipe_wall):.1f} ms",
        flush=True,
    )
    return 0


def report_portal(chosen, port, secret, png, worker, pipe_wall, pipe_cpu) -> None:
    for name, argv in stacks(port).items():
        if chosen and not any(name.startswith(c) for c in chosen):
            continue
        result = portal(name, argv, port, secret, png, worker)
        rows = result["rows"]

        def col(key: str, rows=rows) -> float:
            return 1000 * p50([r[key] for r in rows])

        e2e = col("e2e")
        fixed = e2e - 1000 * pipe_wall
        cpu_total = result["cpu"]["web"] + result["cpu"]["worker"]
        cpu_outside = 1000 * (cpu_total / len(rows) - pipe_cpu)
        print(f"  portal, {name} + celery worker (-c 1), {len(rows)} jobs in {result['elapsed']:.1f} s:", flush=True)
        print(f"    HTTP submit (POST to 202)                 p50 {col('submit'):7.1f} ms", flush=True)
        print(f"    request start -> row created             p50 {col('created'):7.1f} ms", flush=True)
        print(f"    queue wait (created -> claimed)          p50 {col('queue'):7.1f} ms", flush=True)
        print(f"    submit to claim (request -> started_at)  p50 {col('submit_to_claim'):7.1f} ms", flush=True)
        print(f"    running (started_at -> finished_at)      p50 {col('running'):7.1f} ms", flush=True)
        if result["task"]:
            print(f"    Celery task time (worker log)            p50 {1000 * p50(result['task']):7.1f} ms", flush=True)
        print(f"    end to end (request -> finished_at)      p50 {e2e:7.1f} ms", flush=True)
        print(f"    created -> finished_at                   p50 {col('e2e_created'):7.1f} ms", flush=True)
        print(f"    request -> seen succeeded (100 ms poll)   p50 {col('seen'):7.1f} ms", flush=True)
        print(
            f"    fixed overhead (end to end - direct pipe p50) {fixed:7.1f} ms   goal <= 30 ms: "
            f"{'met' if fixed <= 30 else 'not met'}",
            flush=True,
        )
        ratio = e2e / (1000 * pipe_wall)
        print(f"    portal/direct {ratio:.3f}   goal <= 1.03: {'met' if ratio <= 1.03 else 'not met'}", flush=True)
        print(
            f"    HTTP submit p50 {col('submit'):.1f} ms   goal <= 30 ms: "
            f"{'met' if col('submit') <= 30 else 'not met'}; "
            f"submit to claim p50 {col('submit_to_claim'):.1f} ms   goal <= 20 ms: "
            f"{'met' if col('submit_to_claim') <= 20 else 'not met'}",
            flush=True,
        )
        print(
            f"    CPU: web {1000 * result['cpu']['web'] / len(rows):.1f} ms/job, worker "
            f"{1000 * result['cpu']['worker'] / len(rows):.1f} ms/job, minus the pipe() call's "
            f"{1000 * pipe_cpu:.0f} ms "
            f"= {cpu_outside:.1f} CPU-ms per job outside the pipeline   goal <= 10: "
            f"{'met' if cpu_outside <= 10 else 'not met'}",
            flush=True,
        )


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # so that every started server and worker is stopped (finally)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
