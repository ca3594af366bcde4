"""What a worker process does, called by the thin Celery tasks."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from functools import cache

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from PIL import Image

from catalog.availability import worker_name
from catalog.controls import WEIGHT_FREE, control_map
from catalog.families import FAMILIES
from catalog.models import LORA_ARCHITECTURES, Checkpoint, CheckpointTestRun, ControlNet, Lora
from catalog.modes import Mode
from generation.affinity import may_forward, worker_unreserve
from generation.dispatch import job_forward, job_send_back
from generation.models import Job
from generation.params import MODE_RULES, JobParams, fewest_steps
from generation.services import (
    Abilities,
    job_claim,
    job_claim_companions,
    job_claim_warm,
    job_fail,
    job_progress,
    job_refuse_images,
    job_succeed,
    jobs_reap_if_due,
)
from workers.errors import MESSAGES, ErrorKind, MissingWeights, classify
from workers.moderation import ImageFlag, screen
from workers.moderation import is_on as moderation_on
from workers.progress import ProgressRelay
from workers.runtime import IMG2IMG_CLASSES, BatchItem, run_batch, run_img2img, warm_up_pipeline
from workers.spec import CheckpointSpec, ControlNetSpec, LoraSpec

log = logging.getLogger(__name__)
AUTO_BATCH_CUDA = 8
TEST_LOAD_SIDE = 128
TEST_LOAD_STEPS = 4


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


def warm_slugs(requested: str, *, served: list[str], device: str) -> list[str]:
    """WORKER_WARM_CHECKPOINTS: a comma list of slugs (those this worker
    serves), "" or "none", or "auto": on CUDA the checkpoints a worker was
    told to serve by name (WORKER_CHECKPOINTS as a list of slugs, a few
    busy ones), else none (with "all" it may serve dozens)."""
    requested = requested.strip()
    if requested == "auto":
        listed = settings.WORKER_CHECKPOINTS.strip() not in ("all", "", "none")
        return list(served) if device == "cuda" and listed else []
    if requested in ("", "none"):
        return []
    return [slug.strip() for slug in requested.split(",") if slug.strip() in served]


def warm_checkpoints(slugs: list[str]) -> None:
    """Load these checkpoints into this process's cache and compile them
    (workers.runtime.warm_up_pipeline) before the process takes its first
    job, in the thread that runs jobs (CUDA graphs are per thread). Jobs
    sent meanwhile wait in the broker."""
    from catalog.limits import MAX_IMAGES

    try:
        for checkpoint in Checkpoint.objects.filter(slug__in=slugs):
            started = time.perf_counter()
            spec = CheckpointSpec.from_checkpoint(checkpoint)
            try:
                pipe, _ = pipeline_cache().get(spec)
                warm_up_pipeline(pipe, spec, largest_batch=max(batch_limit(), MAX_IMAGES))
            except Exception:
                log.warning("could not warm %s", checkpoint.slug, exc_info=True)
                continue
            log.warning("warm: %s ready in %.1f s", checkpoint.slug, time.perf_counter() - started)
    finally:
        connection.close()


def servable_slugs(requested: str) -> list[str]:
    """The checkpoints this worker serves. "all": every catalog entry whose
    family the runtime knows and whose weights are on this machine. A comma
    list of slugs is taken as given (an entry without local weights fails
    its jobs as missing weights, refunded); "" or "none": nothing."""
    requested = requested.strip()
    if requested in ("", "none"):
        return []
    if requested != "all":
        slugs = [slug.strip() for slug in requested.split(",") if slug.strip()]
        for checkpoint in Checkpoint.objects.filter(slug__in=slugs):
            if CheckpointSpec.from_checkpoint(checkpoint).local_path() is None:
                log.warning("%s is served as asked, but its weights are not here", checkpoint.slug)
        return slugs
    served = []
    for checkpoint in Checkpoint.objects.all():
        spec = CheckpointSpec.from_checkpoint(checkpoint)
        if spec.family in IMG2IMG_CLASSES and spec.local_path() is not None:
            served.append(checkpoint.slug)
        else:
            log.info("not serving %s: no local weights for %s", checkpoint.slug, checkpoint.source)
    return served


def servable_controls(requested: str, *, served: list[str]) -> list[str]:
    """The ControlNets this worker offers, read once at start like the
    checkpoints it serves (WORKER_CONTROLNETS): see _servable."""
    return _servable(
        requested,
        served=served,
        rows=ControlNet.objects,
        what="ControlNet",
        has=_has_weights(ControlNetSpec.from_controlnet),
    )


def servable_loras(requested: str, *, served: list[str]) -> list[str]:
    """The LoRAs this worker offers, read once at start (WORKER_LORAS): see
    _servable; only those of the architectures LoRAs run on."""
    rows = Lora.objects.filter(
        family__in=[f for f, family in FAMILIES.items() if family.architecture in LORA_ARCHITECTURES]
    )
    return _servable(requested, served=served, rows=rows, what="LoRA", has=_has_weights(LoraSpec.from_lora))


def _has_weights(spec_of):
    return lambda entry: spec_of(entry).local_path() is not None


def _servable(requested: str, *, served: list[str], rows, what: str, has) -> list[str]:
    """The entries (ControlNets, LoRAs) a worker offers: "all", the enabled
    ones that fit the architecture of a checkpoint it serves and whose
    weights are on this machine; a comma list of slugs, but not those whose
    catalog entry's weights are not here (a slug not in the catalog yet is
    kept: its entry may come later); "" or "none", none."""
    requested = requested.strip()
    if requested in ("", "none"):
        return []
    if requested != "all":
        slugs = [slug.strip() for slug in requested.split(",") if slug.strip()]
        for entry in rows.filter(slug__in=slugs):
            if not has(entry):
                log.warning("not offering %s %s: its weights are not here", what, entry.slug)
                slugs.remove(entry.slug)
        return slugs
    families = Checkpoint.objects.filter(slug__in=served).values_list("family", flat=True)
    architectures = {FAMILIES[family].architecture for family in families}
    offered = []
    for entry in rows.filter(enabled=True):
        if entry.architecture not in architectures:
            log.info("not offering %s %s: no checkpoint of its architecture served here", what, entry.slug)
        elif not has(entry):
            log.warning("not offering %s %s: its weights are not here", what, entry.slug)
        else:
            offered.append(entry.slug)
    return offered


# What this worker can run beyond its checkpoints (workers.boot sets it at
# start); None in a process that did not boot as a worker (tests run jobs in
# place), which claims anything.
abilities: Abilities | None = None


def controlnet_for(control: ControlNet, *, dtype):
    """A ControlNet's network, loaded once into this process's pipeline
    cache (its memory counts in the cache's budget)."""
    from workers.runtime import load_controlnet

    cache = pipeline_cache()
    spec = ControlNetSpec.from_controlnet(control)
    return cache.network((spec, str(dtype)), lambda: load_controlnet(spec, device=cache.device, dtype=dtype))


# Steps of running jobs, served off the pipeline's thread in a worker
# process (workers.boot makes it threaded), inline elsewhere.
progress_relay = ProgressRelay(threaded=False)

# Jobs handed to the record stage and not recorded yet, at most; and how
# long one may take there before its lease is let go (the task's own limit).
RECORD_BACKLOG = 16
RECORD_SECONDS = settings.CELERY_TASK_SOFT_TIME_LIMIT


class WorkerState:
    """What this worker process holds, for its heartbeat (which lists the
    jobs and renews their leases) and its stages, behind one lock: the jobs
    of the pipeline call now (several when batched), the companions claimed
    while a batch forms, and the jobs whose results are being stored and
    recorded (the record stage, off the pipeline's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[Job] = []
        self._claiming: list = []
        self._recording: dict = {}

    def run(self, jobs: list[Job]) -> None:
        with self._lock:
            self._running = list(jobs)
            self._claiming = []

    def claiming(self, job_id) -> None:
        with self._lock:
            self._claiming.append(job_id)

    def ran(self) -> None:
        with self._lock:
            self._running, self._claiming = [], []

    def recording(self, job: Job) -> None:
        """`job` is handed to the record stage, which has RECORD_SECONDS for it."""
        with self._lock:
            self._recording[job.id] = (job, time.monotonic() + RECORD_SECONDS)

    def recorded(self, job: Job) -> None:
        with self._lock:
            self._recording.pop(job.id, None)

    def running(self) -> list[Job]:
        """The jobs of the pipeline call now."""
        with self._lock:
            return list(self._running)

    def leased(self) -> list[Job]:
        """The jobs whose leases this process keeps: a record past its time
        is let go (its lease runs out, the heartbeat stops listing it, and
        the reaper takes the job as it would from a dead worker)."""
        now = time.monotonic()
        with self._lock:
            return [*self._running, *(job for job, until in self._recording.values() if until > now)]

    def job_ids(self) -> list[str]:
        with self._lock:
            claiming = list(self._claiming)
        return [str(job.id) for job in self.leased()] + [str(job_id) for job_id in claiming]


state = WorkerState()


def renew_lease() -> None:
    """On every heartbeat: keep the leases alive of the jobs this process
    runs or records (steps alone may be minutes apart, and a cold load
    longer)."""
    running = state.running()
    for job in state.leased():
        # A job no longer owned stops its run; one being recorded is the
        # record's to find (its owned update does nothing).
        if not job_progress(job=job) and job in running:
            progress_relay.stop(job)


def running_jobs() -> list[str]:
    """The ids of the jobs this process runs or records now, for its heartbeat."""
    return state.job_ids()


class Recorder:
    """The record stage: each finished job's pictures encoded and stored, its
    outcome written and its hold captured or released (_finish), on a thread
    of its own in a worker process, so the pipeline's thread takes the next
    job meanwhile. Until recorded a job stays running, listed in the
    heartbeat and its lease renewed; if the process dies first, the reaper
    runs it again or releases its hold (nothing is charged before the
    record). Inline outside a worker process (tests that run jobs in place)."""

    def __init__(self, *, threaded: bool) -> None:
        self.threaded = threaded
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        # At most RECORD_BACKLOG jobs wait for the stage: past it the
        # pipeline's thread waits (inside its task, under its time limit)
        # instead of piling up pictures in memory.
        self._room = threading.BoundedSemaphore(RECORD_BACKLOG)

    def record(self, jobs: list[Job], results: list, flags: dict) -> dict:
        """The outcome of each job by id: what _finish returned, or
        "recording" where the stage's thread will record it."""
        if not self.threaded:
            together = zip(jobs, results, strict=True)
            return {job.id: _record_one(job, result, flags.get(job.id)) for job, result in together}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-record")
        self._pending = [future for future in self._pending if not future.done()]
        outcomes = {}
        for job, result in zip(jobs, results, strict=True):
            self._room.acquire()
            state.recording(job)
            try:
                self._pending.append(self._pool.submit(self._record, job, result, flags.get(job.id)))
            except BaseException:
                state.recorded(job)
                self._room.release()
                raise
            outcomes[job.id] = "recording"
        return outcomes

    def _record(self, job: Job, result, flags) -> str:
        try:
            return _record_in_stage(job, result, flags)
        finally:
            self._room.release()

    def drain(self, timeout: float = 60.0) -> None:
        """Wait for the jobs handed over so far (at a worker's shutdown)."""
        futures_wait(self._pending, timeout=timeout)


def _record_one(job: Job, result, flags) -> str:
    try:
        return _finish(job, result, flags)
    except Exception as exc:  # storing this job's result failed: it alone is retried
        return _failed(job, exc)


def _record_in_stage(job: Job, result, flags) -> str:
    if settings.WORKER_RECORD_DELAY_MS:
        time.sleep(settings.WORKER_RECORD_DELAY_MS / 1000)  # the record-delay drill
    try:
        outcome = _record_one(job, result, flags)
        log.info("job %s: %s", job.id, outcome)
        return outcome
    except Exception:
        # Even failing it failed (the database is down): it stays running
        # under this live worker, and the reaper takes it once its lease
        # ends (renewals stop here).
        log.exception("job %s: could not record its outcome", job.id)
        return "not recorded"
    finally:
        state.recorded(job)
        close_old_connections()


recorder = Recorder(threaded=False)


def batch_limit() -> int:
    """Images one pipeline call may take across people's jobs: JOB_BATCH_MAX,
    or when it is 0 ("auto") 8 on CUDA and 1 elsewhere (on the CPU a batch
    takes as long as its jobs one after another, so it only adds waiting)."""
    if settings.JOB_BATCH_MAX:
        return settings.JOB_BATCH_MAX
    return AUTO_BATCH_CUDA if pipeline_cache().device == "cuda" else 1


def reap() -> None:
    """Every REAPER_INTERVAL, in every worker process: run the reaper unless
    another process ran it lately (so no single scheduler is needed)."""
    jobs_reap_if_due(owner=worker_name())


def _report_progress(job: Job, step: int, total: int) -> bool:
    """The step callback, on the pipeline's thread: the relay does the rest."""
    return progress_relay.step(job, step, total)


def job_run(*, job_id: str, slug: str | None = None, hops: int = 0, forwarded: bool = False) -> str:
    """Take a turn of checkpoint `slug` (_take_turn: model affinity may send
    it on, or serve a warm checkpoint first), claim a job and the queued jobs
    that can share its pipeline call (batching across people, up to
    batch_limit() images; a job on its second attempt runs alone, so a batch
    that failed does not form again), run them in one call, and record each
    one's outcome. A duplicate delivery, a canceled job or a lost lease ends
    quietly; errors are classified and either retried (bounded) or failed
    with the hold released. Returns the outcomes, one per job,
    comma-separated."""
    worker = worker_name()
    try:
        job = _take_turn(job_id=job_id, slug=slug, hops=hops, worker=worker)
    finally:
        if forwarded:  # this turn came through our own queue: we are free to reserve again
            worker_unreserve(worker)
    if job == FORWARDED:
        return FORWARDED
    if job is None:
        return "not claimed"
    jobs = [job]
    state.run(jobs)
    try:
        room = batch_limit() - job.num_images
        if room > 0 and job.attempts == 1:
            jobs += job_claim_companions(
                job=job, worker=worker, images=room, wait_ms=settings.JOB_BATCH_WAIT_MS, on_claim=state.claiming
            )
            state.run(jobs)
        return ",".join(_run_together(jobs))
    except BaseException:
        # Whatever escaped (the database, a time limit while storing): no job
        # of the batch may stay running under a worker that still beats.
        for each in jobs:
            with contextlib.suppress(Exception):
                job_fail(job=each, code=ErrorKind.TRANSIENT, message=MESSAGES[ErrorKind.TRANSIENT], retry=True)
        raise
    finally:
        progress_relay.finish(jobs)
        state.ran()


FORWARDED = "forwarded"


def _take_turn(*, job_id: str, slug: str | None, hops: int, worker: str) -> Job | str | None:
    """Model affinity, when this process does not hold `slug`'s pipeline and
    the turn was not routed yet (hops 0): send the turn on to an idle worker
    that holds it (FORWARDED: take nothing), or else serve the next queued
    job of a checkpoint held here, most recently used first, and send the
    turn back with hops 1 (job_send_back: to a busy worker that holds it,
    else to its checkpoint's queue; whoever takes it serves it, so it waits
    at most one more round). Otherwise, or when no
    held checkpoint has a queued job, the turn claims a job of its own
    checkpoint (job_claim)."""
    held = pipeline_cache().loaded()
    if slug and slug not in held and may_forward(hops):
        if job_forward(job_id=job_id, slug=slug, worker=worker):
            return FORWARDED
        warm = job_claim_warm(slugs=held[::-1], worker=worker, abilities=abilities)
        if warm is not None:
            try:
                job_send_back(job_id=job_id, slug=slug, worker=worker)
            except Exception:  # its job stays queued unmarked: the reaper's sweep sends it
                log.warning("could not send a turn of %s back; the sweep will", slug, exc_info=True)
            return warm
    return job_claim(job_id=job_id, worker=worker, slug=slug, abilities=abilities)


def _run_together(jobs: list[Job]) -> list[str]:
    outcomes: dict = {}
    items, ready = [], []
    # Live previews show the picture before the image check has seen it: off
    # while the check is on.
    previews = not moderation_on()
    for job in jobs:
        try:
            items.append(
                BatchItem(
                    _input_of(job),
                    JobParams.of(job),
                    on_step=lambda step, total, job=job: _report_progress(job, step, total),
                    on_preview=(lambda make, job=job: progress_relay.preview(job, make)) if previews else None,
                    mask=_mask_of(job),
                )
            )
            ready.append(job)
        except Exception as exc:  # this job's input alone is bad: the others go on
            outcomes[job.id] = _failed(job, exc)
    if ready:
        if len(ready) > 1:
            log.info("running %s jobs in one call: %s", len(ready), ", ".join(str(job.id) for job in ready))
        spec = CheckpointSpec.from_checkpoint(ready[0].checkpoint)
        try:
            started = time.perf_counter()
            pipe, loaded = pipeline_cache().get(spec)
            if loaded:  # bench/affinity.py counts these lines
                log.info(
                    "%s: cold load (not in this worker's cache) in %.2f s", spec.slug, time.perf_counter() - started
                )
            control = ready[0].controlnet
            network = controlnet_for(control, dtype=pipe.unet.dtype) if control else None
            # Its map, made once the pipeline is in the cache (an annotator
            # loaded now may evict other networks, never this pipeline).
            for item, job in zip(items, ready, strict=True):
                item.control = _control_of(job)
            results = run_batch(pipe, spec, items, controlnet=network, loras=_loras_of(ready[0]))
        except Exception as exc:
            results = [exc] * len(ready)
        finally:
            progress_relay.finish(ready)  # the steps' events end before the outcome's
        # Nothing on this thread touched the database while the pipeline ran
        # (the relay's thread did): a restart meanwhile left its connection
        # dead, which the outcome's writes must not find.
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        results, flags = _screen(ready, results)
        outcomes.update(recorder.record(ready, results, flags))
    return [outcomes[job.id] for job in jobs]


def _screen(jobs: list[Job], results: list) -> tuple[list, dict]:
    """The image check (workers.moderation) on every picture of the batch,
    before any is stored: the results, and each job's flags. If the check
    itself fails, the jobs whose pictures it could not check fail with it
    (retryable) instead of being stored unchecked."""
    made = {job.id: result for job, result in zip(jobs, results, strict=True) if isinstance(result, list)}
    try:
        return results, screen(made)
    except Exception as exc:
        log.warning("image moderation failed for %s job(s)", len(made), exc_info=True)
        return [exc if isinstance(result, list) else result for result in results], {}


def _finish(job: Job, result, flags: list[ImageFlag] | None) -> str:
    """Record one job's outcome: canceled, failed, refused (a picture was
    flagged: nothing is stored, the hold is released; the others of the
    batch go on) or succeeded (its pictures stored, the hold captured)."""
    if result is None:
        return "canceled"
    if isinstance(result, BaseException):
        return _failed(job, result)
    if flags:
        log.warning("job %s: image moderation flagged %s", job.id, ", ".join(f"#{f.index} {f.label}" for f in flags))
        outcome = job_refuse_images(job=job, flags=[(f.index, f.label, f.score) for f in flags])
        return "moderated" if outcome == "failed" else outcome
    return "succeeded" if job_succeed(job=job, images=result) else "not owned"


def _input_of(job: Job):
    """The job's input picture; None for text to image, which has none, and
    for ControlNet from the prompt alone."""
    if MODE_RULES[job.mode].picture == "none" or not job.input_image:
        return None
    return _picture(job.input_image)


def _mask_of(job: Job):
    """An inpainting job's mask; None for the modes without one."""
    if "mask" not in MODE_RULES[job.mode].files:
        return None
    return _picture(job.mask)


def _loras_of(job: Job) -> list[tuple[LoraSpec, float]]:
    """A job's LoRAs (those of its batch: the batch key holds them) with
    their weights; MissingWeights for one that left the catalog."""
    if not job.loras:
        return []
    rows = {lora.slug: lora for lora in Lora.objects.filter(slug__in=[item["slug"] for item in job.loras])}
    missing = [item["slug"] for item in job.loras if item["slug"] not in rows]
    if missing:
        raise MissingWeights(f"LoRA {missing[0]} is no longer in the catalog")
    return [(LoraSpec.from_lora(rows[item["slug"]]), item["weight"]) for item in job.loras]


def _control_of(job: Job):
    """A ControlNet job's map, made as its preprocess says from its control
    picture at the job's output size; None for the other modes."""
    if job.mode != Mode.CONTROLNET:
        return None
    picture = _picture(job.control_image).convert("RGB").resize((job.width, job.height), Image.Resampling.LANCZOS)
    if job.preprocess in WEIGHT_FREE:
        return control_map(picture, job.preprocess)
    from workers.annotators import annotate

    return annotate(job.preprocess, picture, cache=pipeline_cache())


def _picture(field) -> Image.Image:
    """A job's stored picture (input, mask or control picture), decoded."""
    with field.open("rb") as handle:
        picture = Image.open(io.BytesIO(handle.read()))
        picture.load()
    return picture


def _failed(job: Job, exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded) or isinstance(exc.__cause__, SoftTimeLimitExceeded):
        return job_fail(job=job, code="time_limit", message="The job took too long and was stopped.", retry=False)
    error = classify(exc)
    if error.kind == ErrorKind.CANCELED:
        return "canceled"
    log.warning("job %s failed (%s): %s", job.id, error.kind, error.detail)
    return job_fail(job=job, code=str(error.kind), message=error.public_message, retry=error.retryable)


def checkpoint_test_run(*, run_id: int) -> str:
    """Load the checkpoint and make one tiny image; record timings or the error."""
    claimed = CheckpointTestRun.objects.filter(id=run_id, status=CheckpointTestRun.Status.QUEUED).update(
        status=CheckpointTestRun.Status.RUNNING, worker=worker_name()
    )
    if not claimed:
        return "not claimed"
    run = CheckpointTestRun.objects.select_related("checkpoint").get(id=run_id)
    checkpoint = run.checkpoint
    spec = CheckpointSpec.from_checkpoint(checkpoint)
    cache_ = pipeline_cache()
    try:
        started = time.perf_counter()
        pipe, _ = cache_.get(spec)
        run.load_seconds = time.perf_counter() - started
        strength = checkpoint.default_strength
        params = JobParams(
            prompt="a test picture",
            negative_prompt="",
            strength=strength,
            steps=max(min(checkpoint.default_steps, TEST_LOAD_STEPS), fewest_steps(strength=strength)),
            guidance_scale=checkpoint.default_guidance,
            seed=0,
            num_images=1,
            width=TEST_LOAD_SIDE,
            height=TEST_LOAD_SIDE,
        )
        started = time.perf_counter()
        picture = Image.new("RGB", (TEST_LOAD_SIDE,) * 2, (128, 96, 64))
        if spec.inpainting:  # it runs inpainting only: the whole picture is the mask
            mask = Image.new("L", picture.size, 255)
            params = params.model_copy(update={"mode": Mode.INPAINT})
            image = run_batch(pipe, spec, [BatchItem(picture, params, mask=mask)])[0][0]
        else:
            image = run_img2img(pipe, spec, picture, params)[0]
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
