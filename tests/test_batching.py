"""Batching across people: a worker runs queued jobs that can share one
pipeline call together, each with its own seed, progress, cancel and charge,
and each job's pixels equal the same job run alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog.availability import available_slugs
from generation.models import Job
from generation.params import JobParams
from tests.conftest import wait_for
from tests.faults import SLOW_STEPS, assert_books_balance, long_job
from tests.helpers import make_job, png_bytes
from workers.errors import BadInput, Canceled
from workers.runtime import BatchItem, run_batch, run_img2img
from workers.spec import CheckpointSpec

SOURCES = [Image.new("RGB", (96, 80), color) for color in [(200, 30, 30), (30, 200, 30), (30, 30, 200)]]


def params(**changes) -> JobParams:
    values = dict(
        prompt="a red fox",
        negative_prompt="",
        strength=0.6,
        steps=5,
        guidance_scale=7.0,
        seed=1,
        num_images=1,
        width=128,
        height=96,
    )
    values.update(changes)
    return JobParams(**values)


# Three people's jobs: other prompts, seeds, inputs and image counts.
PEOPLE = [
    params(prompt="a red fox", negative_prompt="snow", seed=5),
    params(prompt="a dog on a boat", negative_prompt="blurry", seed=9, num_images=2),
    params(prompt="an orchard in spring", negative_prompt="people", seed=77),
]


def same_pixels(a: Image.Image, b: Image.Image) -> None:
    """Equal up to the float rounding of batched kernels: at most one 8-bit
    level on a few pixels (measured: a mean under 0.001 levels)."""
    difference = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    assert difference.max() <= 1 and difference.mean() < 0.01, (difference.max(), difference.mean())


@pytest.mark.parametrize("slug", ["test-sd1", "test-sdxl", "test-sdxl-turbo"])
def test_each_batched_job_s_pixels_equal_the_same_job_run_alone(pipes, slug):
    pipe, spec = pipes(slug)
    alone = [run_img2img(pipe, spec, source, job) for source, job in zip(SOURCES, PEOPLE, strict=True)]
    together = run_batch(pipe, spec, [BatchItem(source, job) for source, job in zip(SOURCES, PEOPLE, strict=True)])
    assert [len(images) for images in together] == [1, 2, 1]
    for mine, theirs in zip(alone, together, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            same_pixels(a, b)
    # Not one picture three times: the seeds and prompts made them differ.
    first, second = (np.asarray(images[0], dtype=np.int16) for images in together[:2])
    assert np.abs(first - second).mean() > 1


def unet_rows(pipe) -> tuple[list[int], object]:
    rows: list[int] = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(args[0].shape[0]), with_kwargs=True
    )
    return rows, hook


def test_a_compiled_pipeline_pads_a_batch_to_a_warm_size_and_each_job_s_pixels_stay_the_same(pipes, monkeypatch):
    """Compiled pipelines run only the shapes warmed up (no compilation in a
    paid job): three pictures run as four, the extra row is thrown away."""
    pipe, spec = pipes("test-sd1")
    jobs = [PEOPLE[0], PEOPLE[2], params(prompt="a third person", negative_prompt="wind", seed=12)]
    alone = [run_img2img(pipe, spec, source, job)[0] for source, job in zip(SOURCES, jobs, strict=True)]
    monkeypatch.setattr(pipe, "_accel_warm", {(2, True, 128, 96), (4, True, 128, 96)}, raising=False)
    rows, hook = unet_rows(pipe)
    try:
        together = run_batch(pipe, spec, [BatchItem(source, job) for source, job in zip(SOURCES, jobs, strict=True)])
    finally:
        hook.remove()
    assert set(rows) == {8}  # 4 pictures, twice for classifier-free guidance
    assert [len(images) for images in together] == [1, 1, 1]
    for mine, theirs in zip(alone, together, strict=True):
        same_pixels(mine, theirs[0])


def test_a_shape_that_was_not_warmed_runs_eagerly_and_never_compiles(pipes, monkeypatch):
    import torch._dynamo.utils

    pipe, spec = pipes("test-sd1")
    pipe.unet.compile(mode="reduce-overhead", fullgraph=True)  # lazy: compiles on its first call
    try:
        monkeypatch.setattr(pipe, "_accel_warm", {(4, True, 512, 512)}, raising=False)
        frames = torch._dynamo.utils.counters["frames"]["total"]
        rows, hook = unet_rows(pipe)
        try:
            images = run_img2img(pipe, spec, SOURCES[0], PEOPLE[0])
        finally:
            hook.remove()
        assert len(images) == 1 and set(rows) == {2}  # not padded: 4 is warm at another size only
        assert torch._dynamo.utils.counters["frames"]["total"] == frames  # nothing was compiled
        assert pipe.unet._compiled_call_impl is not None  # and the compiled path is back
    finally:
        pipe.unet._compiled_call_impl = None


def test_jobs_with_and_without_a_negative_prompt_never_share_a_call(pipes):
    pipe, spec = pipes("test-sdxl")
    with pytest.raises(BadInput):
        run_batch(pipe, spec, [BatchItem(SOURCES[0], PEOPLE[0]), BatchItem(SOURCES[1], params(negative_prompt=""))])


def test_a_job_that_leaves_the_batch_gets_nothing_and_the_others_go_on(pipes):
    pipe, spec = pipes("test-sd1")
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def on_step(index: int):
        def callback(step: int, total: int) -> bool:
            seen[index].append(step)
            return not (index == 1 and step >= 2)  # person 2 cancels at step 2

        return callback

    items = [
        BatchItem(source, job, on_step=on_step(i)) for i, (source, job) in enumerate(zip(SOURCES, PEOPLE, strict=True))
    ]
    together = run_batch(pipe, spec, items)
    assert together[1] is None
    assert seen[1] == [1, 2] and seen[0] == seen[2] == [1, 2, 3]  # 5 steps x 0.6
    for index in (0, 2):
        same_pixels(together[index][0], run_img2img(pipe, spec, SOURCES[index], PEOPLE[index])[0])


def test_a_batch_everyone_left_stops(pipes):
    pipe, spec = pipes("test-sd1")
    items = [
        BatchItem(source, job, on_step=lambda step, total: False) for source, job in zip(SOURCES, PEOPLE, strict=True)
    ]
    with pytest.raises(Canceled):
        run_batch(pipe, spec, items)


@pytest.mark.parametrize("other", [{"steps": 6}, {"strength": 0.5}, {"width": 136}, {"guidance_scale": 5.0}])
def test_jobs_of_another_size_or_schedule_never_share_a_call(pipes, other):
    pipe, spec = pipes("test-sd1")
    with pytest.raises(BadInput):
        run_batch(pipe, spec, [BatchItem(SOURCES[0], PEOPLE[0]), BatchItem(SOURCES[1], params(**other))])


# --- The worker: claims, charges and cancels, on rows ---------------------------------


def submit(api, *, prompt: str, seed: int, color=(200, 120, 40), **fields) -> str:
    data = {
        "model": "test-sd1",
        "prompt": prompt,
        "seed": seed,
        "steps": 5,
        "strength": 0.6,
        "width": 128,
        "height": 96,
    }
    data.update(fields)
    data["image"] = SimpleUploadedFile("in.png", png_bytes(color=color))
    response = api.post("/api/v1/img2img", data)
    assert response.status_code == 202, response.content
    return response.json()["id"]


# No transaction commits here, so no task is sent: the jobs wait in the
# queue and the test runs the worker's job_run in this process.
@pytest.mark.django_db
def test_a_worker_runs_compatible_queued_jobs_in_one_call_each_charged_and_equal_to_alone(
    paid_api, alice, gpu_worker, settings
):
    import workers.services

    settings.JOB_BATCH_MAX = 4
    settings.MAX_ACTIVE_JOBS = 6
    ids = [
        submit(paid_api, prompt="a red fox", seed=5, color=(200, 30, 30), negative_prompt="snow"),
        submit(paid_api, prompt="a dog on a boat", seed=9, color=(30, 200, 30), num_images=2, negative_prompt="x"),
        submit(paid_api, prompt="an orchard", seed=77, color=(30, 30, 200), negative_prompt="fog"),
    ]
    # Another size, and no negative prompt: not their company.
    other = submit(paid_api, prompt="a taller picture", seed=3, height=128, negative_prompt="fog")
    plain = submit(paid_api, prompt="no negative prompt", seed=4)
    crowded = submit(paid_api, prompt="one too many", seed=4, negative_prompt="y")  # 1 + 2 + 1 fill the call

    assert workers.services.job_run(job_id=ids[0]) == "succeeded,succeeded,succeeded"
    jobs = [Job.objects.get(id=job_id) for job_id in ids]
    assert {(job.status, job.batch_size, job.worker) for job in jobs} == {("succeeded", 3, jobs[0].worker)}
    assert {Job.objects.get(id=i).status for i in (other, plain, crowded)} == {"queued"}
    for job in jobs:
        assert job.credits_charged == job.credits_held > 0
    spec = CheckpointSpec.from_checkpoint(jobs[0].checkpoint)
    pipe, _ = workers.services.pipeline_cache().get(spec)
    for job in jobs:
        with job.input_image.open("rb") as handle:
            alone = run_img2img(pipe, spec, Image.open(handle), JobParams.of(job))
        stored = [Image.open(image.file) for image in job.images.order_by("index")]
        assert len(stored) == len(alone) == job.num_images
        for a, b in zip(stored, alone, strict=True):
            same_pixels(a, b)


@pytest.mark.django_db
def test_a_job_canceled_in_a_batch_is_released_and_the_others_are_charged(
    paid_api, alice, gpu_worker, monkeypatch, settings
):
    import workers.services
    from generation.services import job_cancel

    settings.JOB_BATCH_MAX = 8
    ids = [submit(paid_api, prompt=f"picture {i}", seed=i) for i in range(3)]
    report = workers.services._report_progress

    def cancel_the_second_at_step_2(job, step, total):
        if str(job.id) == ids[1] and step == 2:
            job_cancel(user=alice, job_id=job.id)
        return report(job, step, total)

    monkeypatch.setattr(workers.services, "_report_progress", cancel_the_second_at_step_2)
    assert workers.services.job_run(job_id=ids[0]) == "succeeded,canceled,succeeded"
    statuses = [Job.objects.get(id=job_id).status for job_id in ids]
    assert statuses == ["succeeded", "canceled", "succeeded"]
    assert not Job.objects.get(id=ids[1]).images.exists()
    assert_books_balance(alice, granted=100)


@pytest.mark.django_db
def test_batching_off_runs_one_job(paid_api, gpu_worker, settings):
    import workers.services

    settings.JOB_BATCH_MAX = 1
    ids = [submit(paid_api, prompt=f"picture {i}", seed=i) for i in range(2)]
    assert workers.services.job_run(job_id=ids[0]) == "succeeded"
    assert Job.objects.get(id=ids[1]).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_job_waits_for_company_at_most_the_set_time(alice, test_checkpoints):
    """Rows only (test-sd2 has no worker here): company that arrives within
    JOB_BATCH_WAIT_MS joins; with none, the wait ends at the bound."""
    from catalog.seeds import catalog_register_test_checkpoints
    from generation.services import job_claim, job_claim_companions

    catalog_register_test_checkpoints(test_checkpoints.values())
    first = make_job(alice, "test-sd2")
    job = job_claim(job_id=first.id, worker="w")
    late: list = []
    timer = threading.Timer(0.2, lambda: late.append(make_job(alice, "test-sd2", prompt="late")))
    timer.start()
    started = time.monotonic()
    listed: list = []
    company = job_claim_companions(job=job, worker="w", images=1, wait_ms=5000, on_claim=listed.append)
    waited = time.monotonic() - started
    timer.join()
    assert [c.id for c in company] == [late[0].id] == listed and waited < 5
    assert Job.objects.get(id=first.id).batch_size == 2

    started = time.monotonic()
    assert job_claim_companions(job=job, worker="w", images=1, wait_ms=300) == []
    assert 0.3 <= time.monotonic() - started < 2


# --- The real worker ---------------------------------------------------------------


@pytest.mark.one_engine
@pytest.mark.django_db(transaction=True)
def test_jobs_queued_behind_a_long_one_run_together_on_a_real_worker(paid_api, alice, start_worker):
    start_worker("test-sd1-alt", JOB_BATCH_MAX="8", **SLOW_STEPS)
    wait_for(lambda: "test-sd1-alt" in available_slugs(), timeout=90, message="the worker")
    busy = long_job(paid_api, steps=16)  # 4 s: the others are queued behind it meanwhile
    wait_for(lambda: Job.objects.get(id=busy).status == "running", timeout=60, message="the long job to start")
    ids = [submit(paid_api, prompt=f"picture {i}", seed=i, model="test-sd1-alt") for i in range(3)]

    def all_finished():
        jobs = list(Job.objects.filter(id__in=ids).order_by("created_at"))
        return all(job.is_finished for job in jobs) and jobs

    jobs = wait_for(all_finished, timeout=180, message="the queued jobs to finish")
    assert [job.status for job in jobs] == ["succeeded"] * 3
    assert [job.batch_size for job in jobs] == [3, 3, 3]
    wait_for(lambda: Job.objects.get(id=busy).is_finished, timeout=60, message="the long job")
    assert_books_balance(alice, granted=100)
