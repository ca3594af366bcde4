"""Samplers: a job names one of its model's (catalog.samplers); the
worker builds it from the loaded pipeline's scheduler config, per call,
with nothing reloaded; the same seed and sampler give the same pixels,
alone or batched; bad names are a 400 that costs nothing."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from billing.selectors import balance_of
from catalog.models import Checkpoint
from catalog.samplers import FAMILY_SAMPLERS, SAMPLERS
from generation.models import Job
from generation.services import job_again
from tests.conftest import wait_for
from tests.helpers import job_params
from workers.runtime import BatchItem, run_batch, run_img2img

SOURCE = Image.new("RGB", (96, 80), (200, 120, 40))


params = functools.partial(job_params)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_every_family_lists_its_default_first_and_only_known_samplers():
    for family, names in FAMILY_SAMPLERS.items():
        assert names, family
        assert set(names) <= set(SAMPLERS), family


@pytest.mark.parametrize("name", FAMILY_SAMPLERS["sd1"])
def test_each_sampler_runs_and_the_same_seed_gives_the_same_pixels(pipes, name):
    pipe, spec = pipes("test-sd1")
    unet, own = pipe.unet, pipe.__dict__.get("_portal_samplers", {}).get("", pipe.scheduler)
    first = run_img2img(pipe, spec, SOURCE, params(scheduler=name))[0]
    again = run_img2img(pipe, spec, SOURCE, params(scheduler=name))[0]
    assert np.array_equal(pixels(first), pixels(again))
    assert type(pipe.scheduler).__name__ == SAMPLERS[name].scheduler
    # Built from the loaded scheduler's config: the same schedule, no weights loaded.
    assert pipe.unet is unet
    assert pipe.scheduler.config.beta_schedule == own.config.beta_schedule == "scaled_linear"


def test_samplers_differ_and_the_models_own_scheduler_is_kept(pipes):
    pipe, spec = pipes("test-sd1")
    own = run_img2img(pipe, spec, SOURCE, params(scheduler=""))[0]
    made = {name: pixels(run_img2img(pipe, spec, SOURCE, params(scheduler=name))[0]) for name in ("euler_a", "ddim")}
    assert np.abs(made["euler_a"] - made["ddim"]).mean() > 1.0
    # The test checkpoint ships DDIM: "" (the model's own) is DDIM, after any other ran.
    assert np.array_equal(pixels(run_img2img(pipe, spec, SOURCE, params(scheduler=""))[0]), pixels(own))
    assert np.array_equal(made["ddim"], pixels(own))


@pytest.mark.parametrize("name", ["euler_a", "dpmpp_sde_karras"])
def test_a_stochastic_sampler_gives_a_job_the_same_pixels_alone_and_batched(pipes, name):
    pipe, spec = pipes("test-sdxl")
    mine = params(scheduler=name, seed=7, prompt="a boat")
    other = params(scheduler=name, seed=900, prompt="a mountain", num_images=2)
    alone = run_batch(pipe, spec, [BatchItem(SOURCE, mine)])[0]
    batched = run_batch(pipe, spec, [BatchItem(SOURCE.rotate(90), other), BatchItem(SOURCE, mine)])[1]
    # Up to the float rounding that differs between batched and single kernels.
    assert np.abs(pixels(alone[0]) - pixels(batched[0])).max() <= 2
    another_seed = run_batch(pipe, spec, [BatchItem(SOURCE, params(scheduler=name, seed=8, prompt="a boat"))])[0]
    assert np.abs(pixels(alone[0]) - pixels(another_seed[0])).mean() > 1.0


def test_jobs_of_different_samplers_do_not_share_a_call():
    assert params(scheduler="euler").batch_key != params(scheduler="ddim").batch_key


# --- Through the API ---------------------------------------------------------------


@pytest.mark.django_db
def test_models_list_their_samplers_and_default(paid_api):
    Checkpoint.objects.filter(slug="test-sd1").update(default_scheduler="unipc")
    models = {model["slug"]: model for model in paid_api.get("/api/v1/models").json()["models"]}
    assert models["test-sd1"]["default_scheduler"] == "unipc"
    assert models["test-sd1"]["schedulers"][0] == "unipc"
    assert set(models["test-sd1"]["schedulers"]) == set(FAMILY_SAMPLERS["sd1"])
    assert models["test-sdxl-turbo"]["schedulers"] == list(FAMILY_SAMPLERS["sdxl-turbo"])
    assert models["test-sdxl-turbo"]["default_scheduler"] == "euler_a"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "scheduler"),
    [("test-sd1", "heun"), ("test-sd1", "DDIM"), ("test-sdxl-turbo", "ddim"), ("test-sd1", " ")],
)
def test_a_sampler_the_model_does_not_list_is_a_400_naming_it_and_costs_nothing(paid_api, alice, model, scheduler):
    fields = {"model": model, "prompt": "a fox", "scheduler": scheduler, "steps": 2}
    answer = paid_api.post("/api/v1/txt2img", fields)
    assert answer.status_code == 400, answer.content
    assert "scheduler" in answer.json()["error"]["fields"]
    quote = paid_api.post("/api/v1/quote", {"mode": "txt2img", **fields})
    assert quote.status_code == 400 and "scheduler" in quote.json()["error"]["fields"]
    assert not Job.objects.exists() and balance_of(user=alice) == 100


@pytest.mark.django_db(transaction=True)
def test_a_job_runs_with_its_sampler_and_again_keeps_it(paid_api, alice, gpu_worker):
    fields = {"model": "test-sd1", "prompt": "a fox", "scheduler": "euler_a", "steps": 3, "width": 64, "height": 64}
    job = paid_api.post("/api/v1/txt2img", fields).json()
    assert job["scheduler"] == "euler_a"
    done = wait_for(
        lambda: (body := paid_api.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "succeeded" and body,
        timeout=60,
        message="the job succeeds",
    )
    assert done["scheduler"] == "euler_a"
    again = job_again(user=alice, job_id=job["id"])
    assert again.scheduler == "euler_a" and again.seed != job["seed"]
    # Left out (or sent empty): the model's default.
    plain = paid_api.post("/api/v1/txt2img", {**fields, "scheduler": ""}).json()
    assert plain["scheduler"] == Checkpoint.objects.get(slug="test-sd1").scheduler_default


def test_a_second_order_sampler_counts_its_steps_and_is_priced_at_its_model_calls(pipes):
    from generation.pricing import quote

    pipe, spec = pipes("test-sd1")
    seen: list[tuple[int, int]] = []
    item = BatchItem(SOURCE, params(scheduler="dpmpp_sde_karras", steps=4, strength=1.0))
    item.on_step = lambda step, total: seen.append((step, total))
    run_batch(pipe, spec, [item])
    # Seven model calls (two a step, one for the first), reported as the 4 steps they make.
    assert seen[-1] == (4, 4) and all(step <= total for step, total in seen)
    assert [step for step, _ in seen] == sorted(step for step, _ in seen)
    checkpoint = Checkpoint(price_per_image=3, default_steps=4, default_strength=1.0)
    euler = quote(checkpoint=checkpoint, params=params(scheduler="euler", steps=4, strength=1.0))
    assert quote(checkpoint=checkpoint, params=params(scheduler="dpmpp_sde_karras", steps=4, strength=1.0)) == 2 * euler
