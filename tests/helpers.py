"""Small builders shared by the generation tests."""

from __future__ import annotations

import asyncio
import io

from channels.layers import channel_layers
from PIL import Image


def png_bytes(size=(96, 80), color=(200, 120, 40), mode="RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg_bytes(size=(96, 80), exif_orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (10, 200, 90))
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def api_client(user):
    """A test client that authenticates as `user` with a fresh API key."""
    from django.test import Client

    from accounts.services import api_key_create

    _, secret = api_key_create(user=user, name="tests")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def make_job(user, slug: str, **fields):
    """A job row as the service would leave it, for tests of reads."""
    from catalog.models import Checkpoint
    from generation.models import Job

    values = dict(
        prompt="x", strength=0.5, steps=4, guidance_scale=7, seed=1, num_images=1, width=64, height=64, credits_held=1
    )
    # An image to image job names its input (job_input_by_mode); text to
    # image has none and runs every step.
    if fields.get("mode") == "txt2img":
        values.update(strength=1.0, input_image="")
    else:
        values.update(input_image="inputs/made-by-make-job.png")
    values.update(fields)
    return Job.objects.create(user=user, checkpoint=Checkpoint.objects.get(slug=slug), **values)


def run_in_threads(count: int, work) -> list:
    """Run work(i) in `count` threads released together; return each result
    or exception. Each thread uses (and closes) its own database connection."""
    import threading

    from django.db import close_old_connections, connection

    barrier = threading.Barrier(count)
    results: list = [None] * count

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    close_old_connections()
    return results


def run_async(coroutine):
    """asyncio.run with a channel layer of its own: channels_redis binds its
    per-channel locks to the event loop that made them, so a lock a closed
    loop left held breaks the next loop's receive ("bound to a different
    event loop"). One process has one loop in production; tests make many."""
    channel_layers.backends.clear()
    try:
        return asyncio.run(coroutine)
    finally:
        channel_layers.backends.clear()


def job_run_here(api):
    """Submit a small img2img job through the API and run it in this process,
    as the worker's task would (in a django_db test nothing commits, so no
    message reaches a real worker). The submit's 202 answer."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    import workers.services

    response = api.post(
        "/api/v1/img2img",
        {
            "model": "test-sd1",
            "prompt": "a lighthouse",
            "steps": 4,
            "strength": 0.5,
            "width": 64,
            "height": 64,
            "image": SimpleUploadedFile("in.png", png_bytes()),
        },
    )
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert workers.services.job_run(job_id=job_id) == "succeeded"
    return response


def job_params(**changes):
    """A job's resolved settings (generation.params.JobParams) for tests that
    drive the runtime directly: a small, quick image to image job."""
    from generation.params import JobParams

    values = dict(
        prompt="a red fox, oil painting",
        negative_prompt="",
        strength=0.75,
        steps=4,
        guidance_scale=7.0,
        seed=42,
        width=64,
        height=64,
        num_images=1,
    )
    values.update(changes)
    return JobParams(**values)
