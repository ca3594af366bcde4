"""What a worker process does, called by the thin Celery tasks."""

from __future__ import annotations

import io
import logging
import math
import os
import socket
import time
from functools import cache

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.models import Checkpoint, CheckpointTestRun
from workers.errors import classify
from workers.families import FAMILIES
from workers.spec import CheckpointSpec, Img2ImgParams

log = logging.getLogger(__name__)
TEST_LOAD_SIDE = 128


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@cache
def pipeline_cache():
    """This process's pipeline cache (one per worker process; one GPU each)."""
    from workers.cache import PipelineCache, parse_bytes
    from workers.runtime import load_pipeline, pick_device

    device = pick_device()
    budget = settings.PIPELINE_CACHE_BYTES
    return PipelineCache(
        budget_bytes=_auto_budget(device) if budget == "auto" else parse_bytes(budget),
        loader=load_pipeline,
        device=device,
    )


def _auto_budget(device: str) -> int:
    """80% of the GPU's memory, or half of the machine's RAM on the CPU."""
    import torch

    if device == "cuda":
        return int(torch.cuda.get_device_properties(0).total_memory * 0.8)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)


def servable_slugs(requested: str) -> list[str]:
    """The checkpoints this worker will serve: the requested slugs ("all": the
    whole catalog; "" or "none": nothing) whose family the runtime knows and
    whose weights are here."""
    if requested.strip() in ("", "none"):
        return []
    checkpoints = Checkpoint.objects.all()
    if requested.strip() != "all":
        wanted = [slug.strip() for slug in requested.split(",") if slug.strip()]
        checkpoints = checkpoints.filter(slug__in=wanted)
    served = []
    for checkpoint in checkpoints:
        spec = CheckpointSpec.from_checkpoint(checkpoint)
        if spec.family in FAMILIES and spec.local_path() is not None:
            served.append(checkpoint.slug)
        else:
            log.warning("not serving %s: no local weights for %s", checkpoint.slug, checkpoint.source)
    return served


def checkpoint_test_run(*, run_id: int) -> str:
    """Load the checkpoint and make one tiny image; record timings or the error."""
    claimed = CheckpointTestRun.objects.filter(id=run_id, status=CheckpointTestRun.Status.QUEUED).update(
        status=CheckpointTestRun.Status.RUNNING, worker=worker_id()
    )
    if not claimed:
        return "not claimed"
    run = CheckpointTestRun.objects.select_related("checkpoint").get(id=run_id)
    checkpoint = run.checkpoint
    spec = CheckpointSpec.from_checkpoint(checkpoint)
    cache_ = pipeline_cache()
    try:
        from PIL import Image

        from workers.runtime import run_img2img

        started = time.perf_counter()
        pipe, _ = cache_.get(spec)
        run.load_seconds = time.perf_counter() - started
        steps = max(1, min(checkpoint.default_steps, 4), math.ceil(1 / checkpoint.default_strength))
        params = Img2ImgParams(
            prompt="a test picture",
            strength=checkpoint.default_strength,
            steps=steps,
            guidance_scale=checkpoint.default_guidance,
            seed=0,
            width=TEST_LOAD_SIDE,
            height=TEST_LOAD_SIDE,
        )
        started = time.perf_counter()
        image = run_img2img(pipe, spec, Image.new("RGB", (TEST_LOAD_SIDE,) * 2, (128, 96, 64)), params)[0]
        run.run_seconds = time.perf_counter() - started
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        run.result_png = buffer.getvalue()
        run.status = CheckpointTestRun.Status.SUCCEEDED
    except Exception as exc:
        error = classify(exc)
        log.warning("test load of %s failed: %s", checkpoint.slug, error)
        run.status, run.error_kind, run.error = CheckpointTestRun.Status.FAILED, error.kind, error.detail
    run.device, run.finished_at = cache_.device, timezone.now()
    with transaction.atomic():
        run.save()
    return run.status
