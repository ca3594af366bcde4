"""Inpainting and outpainting: POST /api/v1/inpaint run in this process
(the worker's job_run) at 128 px, the runtime at 512 px, pixels outside the
mask exactly the input's, the same seed giving the same pixels, the canvas
grown with the picture in place, quote equal to charge, the mask served to
its owner only, and every bad input refused with the field, no job and no
charge; the same through the create page's form (its mask editor's export:
tests/browser/test_mask_editor.py)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape
from PIL import Image

import workers.services
from billing.selectors import balance_of
from catalog.models import Checkpoint
from generation.models import Job
from generation.params import JobParams
from generation.services import MASK_OR_EXPAND, NO_MASK, job_again
from tests.helpers import api_client, png_bytes

pytestmark = pytest.mark.django_db  # no commit: no task is sent; the test runs the worker's job_run


def noise_png(size=(128, 128), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def box_mask(size=(128, 128), box=(32, 32, 96, 96)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def inpaint(client, *, image=None, mask=None, **fields):
    data = {"model": "test-sd1", "prompt": "a boat on the sea", "steps": 4, "seed": 7, **fields}
    if image is not None:
        data["image"] = SimpleUploadedFile("in.png", image)
    if mask is not None:
        data["mask"] = SimpleUploadedFile("mask.png", mask)
    return client.post("/api/v1/inpaint", data)


def pixels_of(client, url) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return np.asarray(Image.open(io.BytesIO(b"".join(response.streaming_content))).convert("RGB"))


def run_here(client, response) -> dict:
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert workers.services.job_run(job_id=job_id) == "succeeded"
    return client.get(f"/api/v1/jobs/{job_id}").json()


def test_an_inpainting_job_changes_only_the_masked_pixels_and_is_charged_its_quote(paid_api, alice, bob, gpu_worker):
    Checkpoint.objects.filter(slug="test-sd1").update(price_per_image=12)  # so that steps x strength shows
    picture, mask = noise_png(), box_mask()
    quoted = paid_api.post(
        "/api/v1/quote",
        {"model": "test-sd1", "mode": "inpaint", "steps": 4, "image": SimpleUploadedFile("i.png", picture)},
    ).json()["credits"]
    # 12 credits at the default 20 steps x 0.6; inpainting runs 4 x 1.
    assert quoted == 4
    job = inpaint(paid_api, image=picture, mask=png_of(mask), mask_blur=0)
    body = job.json()
    assert (body["mode"], body["strength"], body["mask_blur"], body["credits_held"]) == ("inpaint", 1.0, 0, quoted)
    assert (body["width"], body["height"]) == (128, 128) and body["mask_url"].endswith("/mask")

    done = run_here(paid_api, job)
    assert done["status"] == "succeeded" and done["progress"] == {"step": 4, "total": 4}
    assert done["credits_charged"] == quoted and balance_of(user=alice) == 100 - quoted
    result = pixels_of(paid_api, done["images"][0]["url"])
    original = np.asarray(Image.open(io.BytesIO(picture)))
    outside = np.asarray(mask) == 0
    assert np.array_equal(result[outside], original[outside])
    assert not np.array_equal(result[~outside], original[~outside])

    # The mask: its owner's only (another person gets the same 404 as for no job).
    assert np.array_equal(pixels_of(paid_api, done["mask_url"])[..., 0], np.asarray(mask))
    assert api_client(bob).get(done["mask_url"]).status_code == 404
    # The same seed, the same pixels.
    again = run_here(paid_api, inpaint(paid_api, image=picture, mask=png_of(mask), mask_blur=0))
    assert np.array_equal(pixels_of(paid_api, again["images"][0]["url"]), result)


def test_outpainting_grows_the_canvas_and_keeps_the_picture_in_place(paid_api, alice, gpu_worker):
    picture = noise_png(size=(64, 64), seed=3)
    quoted = paid_api.post(
        "/api/v1/quote",
        {
            "model": "test-sd1",
            "mode": "inpaint",
            "steps": 3,
            "expand_right": 32,
            "expand_top": 16,
            "image": SimpleUploadedFile("i.png", picture),
        },
    ).json()["credits"]
    job = inpaint(paid_api, image=picture, steps=3, expand_right=32, expand_top=16, mask_blur=0)
    assert (job.json()["width"], job.json()["height"]) == (96, 80)
    done = run_here(paid_api, job)
    assert done["credits_charged"] == quoted == job.json()["credits_held"]
    result = pixels_of(paid_api, done["images"][0]["url"])
    assert result.shape == (80, 96, 3)
    assert np.array_equal(result[16:80, 0:64], np.asarray(Image.open(io.BytesIO(picture))))
    # The new area is the mask: white, the picture's place black.
    mask = pixels_of(paid_api, done["mask_url"])[..., 0]
    assert (mask[16:, :64] == 0).all() and (mask[:16] == 255).all() and (mask[:, 64:] == 255).all()
    # Its "again" inpaints the same canvas with the same mask.
    row = Job.objects.get(id=done["id"])
    sibling = job_again(user=alice, job_id=row.id)
    assert (sibling.mode, sibling.width, sibling.height, sibling.mask_blur) == ("inpaint", 96, 80, 0)
    with sibling.mask.open("rb") as new, row.mask.open("rb") as old:
        assert new.read() == old.read()


@pytest.mark.one_engine
def test_the_inpaint_pipeline_shares_the_loaded_modules_and_keeps_pixels_outside_the_soft_mask_at_512px(pipes):
    from workers.cache import PipelineCache
    from workers.runtime import BatchItem, mode_pipeline, run_batch

    pipe, spec = pipes("test-sd1")
    cache = PipelineCache(budget_bytes=1 << 40, loader=lambda spec, device, shared: (pipe, {}), device="cpu")
    cache.get(spec)
    before = cache.memory_bytes()
    picture = Image.open(io.BytesIO(noise_png(size=(512, 512), seed=5)))
    mask = box_mask(size=(512, 512), box=(128, 128, 384, 384))
    params = JobParams(
        mode="inpaint",
        prompt="a cat",
        negative_prompt="",
        strength=1.0,
        steps=2,
        guidance_scale=7.0,
        seed=3,
        num_images=1,
        width=512,
        height=512,
        mask_blur=8,
    )
    first = run_batch(pipe, spec, [BatchItem(picture, params, mask=mask)])[0][0]
    runner = mode_pipeline(pipe, spec, "inpaint")
    assert type(runner).__name__ == "StableDiffusionInpaintPipeline" and mode_pipeline(pipe, spec, "inpaint") is runner
    assert (runner.unet, runner.vae, runner.text_encoder) == (pipe.unet, pipe.vae, pipe.text_encoder)
    assert cache.memory_bytes() == before
    again = run_batch(pipe, spec, [BatchItem(picture, params, mask=mask)])[0][0]
    assert first.size == (512, 512) and np.array_equal(np.asarray(first), np.asarray(again))
    # The soft edge reaches a few blur radii out; beyond it, the input's pixels.
    far = np.ones((512, 512), dtype=bool)
    far[128 - 32 : 384 + 32, 128 - 32 : 384 + 32] = False
    assert np.array_equal(np.asarray(first)[far], np.asarray(picture)[far])
    assert not np.array_equal(np.asarray(first)[200:300, 200:300], np.asarray(picture)[200:300, 200:300])


WHITE = png_of(box_mask(size=(96, 80), box=(0, 0, 40, 40)))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mask": b"not a picture"}, "mask"),
        ({"mask": png_of(Image.new("L", (96, 80), 0))}, "mask"),  # all black
        ({"mask": png_of(box_mask(size=(64, 64), box=(0, 0, 8, 8)))}, "mask"),  # another size
        ({"mask": WHITE, "expand_left": 8}, "mask"),  # both
        ({}, "mask"),  # neither
        ({"expand_left": 12}, "expand_left"),  # not a multiple of 8
        ({"expand_right": 1024}, "expand_right"),  # 1120 px > the model's 1024
        ({"mask": WHITE, "mask_blur": 65}, "mask_blur"),
        ({"mask": WHITE, "model": "test-sdxl"}, "model"),  # its inpainting is off below
        ({"mask": WHITE, "image": None}, "image"),
    ],
    ids=[
        "not-an-image",
        "empty",
        "other-size",
        "both",
        "neither",
        "not-multiple-of-8",
        "too-large",
        "blur",
        "no-inpainting",
        "no-picture",
    ],
)
def test_bad_inpainting_input_is_refused_with_the_field_and_costs_nothing(paid_api, alice, gpu_worker, fields, field):
    Checkpoint.objects.filter(slug="test-sdxl").update(text_to_image=False)
    image = fields.pop("image", png_bytes(size=(96, 80)))
    response = inpaint(paid_api, image=image, mask=fields.pop("mask", None), **fields)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"], response.json()
    assert balance_of(user=alice) == 100 and not Job.objects.exists()


def test_other_modes_have_no_mask_link(paid_api, gpu_worker):
    from tests.helpers import job_run_here

    body = job_run_here(paid_api).json()
    assert body["mode"] == "img2img" and body["mask_url"] is None
    assert paid_api.get(f"/api/v1/jobs/{body['id']}/mask").status_code == 404


@pytest.fixture
def inpainting_served(test_checkpoints):
    """The dedicated inpainting test checkpoints served (a heartbeat); their
    jobs run in this process."""
    from workers.heartbeat import publish, remove

    publish(worker_id="inpaint-tests", serves=["test-sd1-inpaint", "test-sdxl-inpaint"], loaded=[], device="cpu")
    yield
    remove("inpaint-tests")


@pytest.mark.parametrize("slug", ["test-sd1-inpaint", "test-sdxl-inpaint"])
def test_a_dedicated_inpainting_checkpoint_runs_its_9_channel_unet_and_offers_inpainting_only(
    paid_api, alice, inpainting_served, slug
):
    from workers.services import pipeline_cache
    from workers.spec import CheckpointSpec

    models = {m["slug"]: m for m in paid_api.get("/api/v1/models").json()["models"]}
    assert models[slug]["modes"] == ["inpaint"]
    refused = paid_api.post(
        "/api/v1/img2img",
        {"model": slug, "prompt": "x", "image": SimpleUploadedFile("i.png", png_bytes())},
    )
    assert refused.status_code == 400 and "model" in refused.json()["error"]["fields"]

    picture, mask = noise_png(seed=9), box_mask()
    done = run_here(paid_api, inpaint(paid_api, model=slug, image=picture, mask=png_of(mask)))
    assert done["status"] == "succeeded" and done["mode"] == "inpaint" and done["mask_blur"] == 4
    pipe, _ = pipeline_cache().get(CheckpointSpec.from_checkpoint(Checkpoint.objects.get(slug=slug)))
    assert pipe.unet.config.in_channels == 9
    # Outside the blurred mask (a few blur radii out), the input's pixels.
    result = pixels_of(paid_api, done["images"][0]["url"])
    far = np.ones((128, 128), dtype=bool)
    far[16:112, 16:112] = False
    assert np.array_equal(result[far], np.asarray(Image.open(io.BytesIO(picture)))[far])
    assert balance_of(user=alice) == 100 - done["credits_charged"]


def test_the_test_load_of_an_inpainting_checkpoint_inpaints(paid_api):
    from catalog.models import CheckpointTestRun

    run = CheckpointTestRun.objects.create(checkpoint=Checkpoint.objects.get(slug="test-sd1-inpaint"))
    assert workers.services.checkpoint_test_run(run_id=run.id) == "succeeded"
    run.refresh_from_db()
    assert Image.open(io.BytesIO(run.result_png)).size == (workers.services.TEST_LOAD_SIDE,) * 2


def test_retention_deletes_the_mask_with_the_input(paid_api, gpu_worker, settings):
    from datetime import timedelta

    from django.utils import timezone

    from generation.services import results_expire

    settings.RESULT_RETENTION_DAYS = 30
    done = run_here(paid_api, inpaint(paid_api, image=noise_png(), mask=png_of(box_mask()), steps=2))
    row = Job.objects.get(id=done["id"])
    name, storage = row.mask.name, row.mask.storage
    assert storage.exists(name)
    Job.objects.filter(id=row.id).update(finished_at=timezone.now() - timedelta(days=31))
    assert results_expire() == 1
    assert not storage.exists(name) and not Job.objects.get(id=row.id).mask
    assert paid_api.get(f"/api/v1/jobs/{row.id}").json()["mask_url"] is None
    assert paid_api.get(done["mask_url"]).status_code == 404


def test_sdxl_inpaints_through_its_xl_inpaint_pipeline(pipes):
    from workers.runtime import BatchItem, mode_pipeline, run_batch

    pipe, spec = pipes("test-sdxl")
    picture, mask = Image.open(io.BytesIO(noise_png(seed=4))), box_mask()
    params = JobParams(
        mode="inpaint",
        prompt="a cat",
        negative_prompt="",
        strength=1.0,
        steps=2,
        guidance_scale=5.0,
        seed=1,
        num_images=1,
        width=128,
        height=128,
    )
    made = run_batch(pipe, spec, [BatchItem(picture, params, mask=mask)])[0][0]
    assert type(mode_pipeline(pipe, spec, "inpaint")).__name__ == "StableDiffusionXLInpaintPipeline"
    outside = np.asarray(mask) == 0
    assert made.size == (128, 128) and np.array_equal(np.asarray(made)[outside], np.asarray(picture)[outside])


def test_an_idempotency_key_covers_the_mask(paid_api, gpu_worker):
    picture = noise_png()
    first = paid_api.post(
        "/api/v1/inpaint",
        {
            "model": "test-sd1",
            "prompt": "x",
            "image": SimpleUploadedFile("i.png", picture),
            "mask": SimpleUploadedFile("m.png", png_of(box_mask())),
        },
        headers={"Idempotency-Key": "inpaint-1"},
    )
    assert first.status_code == 202
    other_mask = paid_api.post(
        "/api/v1/inpaint",
        {
            "model": "test-sd1",
            "prompt": "x",
            "image": SimpleUploadedFile("i.png", picture),
            "mask": SimpleUploadedFile("m.png", png_of(box_mask(box=(0, 0, 8, 8)))),
        },
        headers={"Idempotency-Key": "inpaint-1"},
    )
    assert other_mask.status_code == 409 and other_mask.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def page_form(**fields) -> dict:
    """The create page's form in inpainting mode, as the browser sends it
    (empty fields included)."""
    return {
        "mode": "inpaint",
        "model": "test-sd1",
        "prompt": "a boat on the sea",
        "negative_prompt": "",
        "strength": "1",
        "steps": "2",
        "seed": "5",
        "num_images": "1",
        "width": "",
        "height": "",
        "mask_blur": "0",
        "expand_left": "",
        "expand_right": "",
        "expand_top": "",
        "expand_bottom": "",
        **fields,
    }


def test_the_create_page_offers_inpainting_with_its_editor_and_the_inpainting_only_model(paid_api, alice, client):
    client.force_login(alice)
    page = client.get("/create/?mode=inpaint").content.decode()
    assert 'value="inpaint" checked' in page and 'id="mask-canvas"' in page and 'name="mask_blur"' in page
    assert 'value="test-sd1-inpaint"' in page and "inpainting only</span>" in page
    assert re.search(r'name="strength"[^>]*value="1.0"', page), "inpainting starts at strength 1"
    for field in ("expand_left", "expand_right", "expand_top", "expand_bottom", "mask_blur"):
        assert re.search(rf'name="{field}"[^>]*data-inpaint-only>', page), field  # sent in inpainting mode
    # The other modes do not send the editor's fields.
    page = client.get("/create/").content.decode()
    assert 'value="img2img" checked' in page and re.search(r'name="mask_blur"[^>]*disabled', page)


def test_the_create_page_submits_an_inpainting_job_with_its_mask_and_its_page_shows_it(
    paid_api, alice, client, gpu_worker
):
    client.force_login(alice)
    picture, mask = noise_png(), box_mask()
    response = client.post(
        "/create/",
        page_form(image=SimpleUploadedFile("in.png", picture), mask=SimpleUploadedFile("mask.png", png_of(mask))),
    )
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.id}/"
    assert (job.mode, job.strength, job.mask_blur, job.width, job.height) == ("inpaint", 1.0, 0, 128, 128)
    with job.mask.open("rb") as stored:
        assert np.array_equal(np.asarray(Image.open(stored)), np.asarray(mask))
    assert balance_of(user=alice) == 100 - job.credits_held

    assert workers.services.job_run(job_id=str(job.id)) == "succeeded"
    html = client.get(f"/jobs/{job.id}/").content.decode()
    assert 'id="mask-figure"' in html and f'src="/api/v1/jobs/{job.id}/mask"' in html
    assert f'href="/create/?parent={job.id}&amp;mode=inpaint">Inpaint this</a>' in html
    # Inpaint this: the editor paints over the job's first result, at strength 1.
    again = client.get("/create/", {"parent": str(job.id), "mode": "inpaint"}).content.decode()
    first = job.images.get()
    assert 'value="inpaint" checked' in again and f'data-parent-src="/api/v1/images/{first.id}"' in again
    assert re.search(r'name="strength"[^>]*value="1.0"', again)


def test_the_create_page_outpaints_with_expand_and_no_mask(paid_api, alice, client, gpu_worker):
    client.force_login(alice)
    response = client.post(
        "/create/", page_form(image=SimpleUploadedFile("in.png", noise_png(size=(64, 64))), expand_right="32")
    )
    assert response.status_code == 302
    job = Job.objects.get()
    assert (job.mode, job.width, job.height) == ("inpaint", 96, 64)


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({}, NO_MASK),
        ({"expand_top": "12"}, "A multiple of 8 from 0"),
        ({"mask": png_of(box_mask()), "expand_left": "8"}, MASK_OR_EXPAND),
    ],
    ids=["neither", "expand-not-multiple-of-8", "both"],
)
def test_the_create_page_refuses_bad_inpainting_input_with_its_error_and_costs_nothing(
    paid_api, alice, client, fields, shown
):
    client.force_login(alice)
    if "mask" in fields:
        fields["mask"] = SimpleUploadedFile("mask.png", fields["mask"])
    response = client.post("/create/", page_form(image=SimpleUploadedFile("in.png", noise_png()), **fields))
    assert response.status_code == 400
    html = response.content.decode()
    assert escape(shown) in html and 'value="inpaint" checked' in html
    assert balance_of(user=alice) == 100 and not Job.objects.exists()
