"""The hires pass (A1111's hires fix): text to image and image to image run
a second, image to image pass at hires_scale times the size on the same
pipeline; both passes are priced, progress counts both, bad input is a 400
naming the field that costs nothing."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from billing.selectors import balance_of
from catalog.models import Checkpoint
from generation.models import Job
from generation.pricing import quote
from generation.services import job_again
from tests.conftest import wait_for
from tests.helpers import job_params
from workers.runtime import BatchItem, run_batch

SOURCE = Image.new("RGB", (96, 80), (200, 120, 40))


params = functools.partial(
    job_params, mode="txt2img", prompt="a red fox", strength=1.0, height=48, hires_scale=2.0, hires_strength=0.5
)


def test_the_second_pass_makes_the_pictures_larger_and_counts_its_steps(pipes):
    pipe, spec = pipes("test-sd1")
    seen: list[tuple[int, int]] = []
    item = BatchItem(None, params(), on_step=lambda step, total: seen.append((step, total)))
    first, again = (run_batch(pipe, spec, [item])[0][0], run_batch(pipe, spec, [BatchItem(None, params())])[0][0])
    assert first.size == (128, 96) and np.array_equal(np.asarray(first), np.asarray(again))
    # 4 steps of text to image, then 4 x 0.5 of the hires pass, counted on.
    assert seen == [(step, 6) for step in range(1, 7)]
    plain = run_batch(pipe, spec, [BatchItem(None, params(hires_scale=1.0, hires_strength=0.0))])[0][0]
    assert plain.size == (64, 48)


def test_image_to_image_takes_the_pass_too(pipes):
    pipe, spec = pipes("test-sdxl")
    made = run_batch(pipe, spec, [BatchItem(SOURCE, params(mode="img2img", strength=0.5, hires_scale=1.5))])[0]
    assert made[0].size == (96, 72)


def test_both_passes_are_priced():
    checkpoint = Checkpoint(price_per_image=10, default_steps=20, default_strength=0.6)
    one = quote(
        checkpoint=checkpoint, params=params(width=512, height=512, steps=12, hires_scale=1.0, hires_strength=0)
    )
    # The hires pass: 12 x 0.5 steps at 1024 px (one megapixel) on top.
    both = quote(checkpoint=checkpoint, params=params(width=512, height=512, steps=12, hires_scale=2.0))
    assert (one, both) == (10, 15)


# --- Through the API ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "fields", "field"),
    [
        ("/api/v1/txt2img", {"hires_scale": "2.5"}, "hires_scale"),
        ("/api/v1/txt2img", {"hires_strength": "0.5"}, "hires_strength"),  # no scale
        ("/api/v1/txt2img", {"hires_scale": "2", "width": "768", "height": "512"}, "hires_scale"),  # past 1024
        ("/api/v1/txt2img", {"hires_scale": "2", "hires_strength": "0.1", "steps": "4"}, "hires_strength"),  # 0 steps
        ("/api/v1/inpaint", {"hires_scale": "2", "expand_right": "64"}, "hires_scale"),  # not its mode
    ],
)
def test_a_bad_hires_pass_is_a_400_naming_the_field_and_costs_nothing(paid_api, alice, path, fields, field):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.helpers import png_bytes

    data = {"model": "test-sd1", "prompt": "a fox", "steps": "8", **fields}
    if path == "/api/v1/inpaint":
        data["image"] = SimpleUploadedFile("in.png", png_bytes(size=(64, 64)))
    answer = paid_api.post(path, data)
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["error"]["fields"]
    assert not Job.objects.exists() and balance_of(user=alice) == 100


@pytest.mark.django_db(transaction=True)
def test_a_hires_job_runs_both_passes_is_charged_its_quote_and_again_keeps_it(paid_api, alice, gpu_worker):
    fields = {"model": "test-sd1", "prompt": "a fox", "steps": 4, "width": 64, "height": 64, "hires_scale": 2}
    price = paid_api.post("/api/v1/quote", {"mode": "txt2img", **fields}).json()["credits"]
    job = paid_api.post("/api/v1/txt2img", fields).json()
    assert job["hires"] == {"scale": 2.0, "strength": 0.5, "width": 128, "height": 128}
    done = wait_for(
        lambda: (
            (body := paid_api.get(f"/api/v1/jobs/{job['id']}").json())["status"] in ("succeeded", "failed") and body
        ),
        timeout=60,
        message="the job ends",
    )
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == {"step": 6, "total": 6}
    assert done["credits_charged"] == price and balance_of(user=alice) == 100 - price
    picture = Job.objects.get(id=job["id"]).images.get()
    assert (picture.width, picture.height) == (128, 128)
    again = job_again(user=alice, job_id=job["id"])
    assert (again.hires_scale, again.hires_strength) == (2.0, 0.5)
