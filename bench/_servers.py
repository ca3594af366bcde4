"""What the benches share: the environment their Django runs with, a free
port, a PostgreSQL database made if missing, an input picture, a running
job to watch, waiting for a server and stopping it with everything it
started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request


def bench_environment(*, database: str, redis: str, media: str) -> None:
    """Production-like settings (DEBUG and HTTPS_ONLY off), the given
    PostgreSQL database, Redis database and media folder unless the
    environment names others, no submit rate limit."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("DATABASE_URL", database)
    os.environ.setdefault("REDIS_URL", redis)
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
    os.environ.setdefault("MEDIA_ROOT", media)
    os.environ.setdefault("SUBMIT_RATE_LIMIT", "100000/m")
    os.environ["HTTPS_ONLY"] = "false"
    os.environ.pop("DEBUG", None)


def noise_png(side: int) -> bytes:
    """An RGB PNG `side` pixels square that does not compress to nothing
    (noise over a gradient)."""
    import io

    from PIL import Image

    gradient = Image.linear_gradient("L").resize((side, side))
    bands = [Image.blend(gradient, Image.effect_noise((side, side), 24), 0.5) for _ in range(3)]
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of `url` if it does not exist (SQLite
    makes its file itself)."""
    if not url.startswith("postgres"):
        return
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=2).read()  # noqa: S310  (our own http:// URL)
            return
        time.sleep(0.2)
    raise RuntimeError("the server did not answer in time")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """The process and everything it started (started in a session of its
    own: uvicorn's spawned workers outlive a parent that only got SIGTERM)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def running_job(user, *, step: int = 0):
    """A job of `user` on test-sd1 as a worker would leave it mid-run (512 px,
    20 steps at strength 0.6: 12 denoising steps), announced as a claim
    announces it. Django must be set up."""
    from catalog.models import Checkpoint
    from generation.events import job_announce
    from generation.models import Job

    job = Job.objects.create(
        user=user,
        checkpoint=Checkpoint.objects.get(slug="test-sd1"),
        prompt="a lighthouse at dusk",
        strength=0.6,
        steps=20,
        guidance_scale=7,
        seed=1,
        num_images=1,
        width=512,
        height=512,
        input_image="inputs/bench.png",
        credits_held=1,
        status=Job.Status.RUNNING,
        attempts=1,
        progress_step=step,
        progress_total=12,
    )
    job_announce(job.id)  # as its claim's announce does: its status copy for portal.fast_status
    return job
