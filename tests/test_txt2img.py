"""Text to image: POST /api/v1/txt2img on the real worker at 128 and 512 px,
priced by the one pricing function at every step, lineage into image to
image, the pipeline built from the loaded one (from_pipe, no new memory),
the same seed giving the same pixels, and every bad input refused with no
job and no charge."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from billing.selectors import balance_of
from catalog.models import Checkpoint
from generation.models import Job
from generation.params import JobParams
from generation.pricing import quote
from tests.conftest import wait_for
from tests.helpers import png_bytes


def finished(client, job_id):
    body = client.get(f"/api/v1/jobs/{job_id}").json()
    return body if body["status"] in ("succeeded", "failed", "canceled") else None


def txt2img(client, **fields):
    data = {"model": "test-sd1", "prompt": "a lighthouse at dusk", "steps": 3, "seed": 5}
    data.update(fields)
    return client.post("/api/v1/txt2img", data)


def params(**fields) -> JobParams:
    values = dict(
        mode="txt2img",
        prompt="a red barn",
        negative_prompt="",
        strength=1.0,
        steps=3,
        guidance_scale=7.0,
        seed=11,
        num_images=1,
        width=128,
        height=128,
    )
    values.update(fields)
    return JobParams(**values)


# --- Through the API and the real worker ----------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("model", "size", "steps"),
    [("test-sd1", {"width": 128, "height": 128}, 3), ("test-sdxl-turbo", {}, 2)],
    ids=["sd1-128px", "sdxl-turbo-native-512px"],
)
def test_a_txt2img_job_runs_every_step_and_is_charged_its_quote(paid_api, alice, gpu_worker, model, size, steps):
    fields = {"model": model, "steps": steps, "num_images": 2, **size}
    price = paid_api.post("/api/v1/quote", {"mode": "txt2img", **fields}).json()["credits"]
    response = txt2img(paid_api, **fields)
    assert response.status_code == 202, response.content
    job = response.json()
    assert (job["mode"], job["status"], job["credits_held"]) == ("txt2img", "queued", price)
    assert (job["width"], job["height"], job["strength"]) == (size.get("width", 512), size.get("height", 512), 1.0)
    assert balance_of(user=alice) == 100 - price

    done = wait_for(lambda: finished(paid_api, job["id"]), timeout=120, message="the txt2img job")
    assert done["status"] == "succeeded", done
    # Every step ran, as priced; the charge is the quote.
    assert done["progress"] == {"step": steps, "total": steps}
    assert done["credits_charged"] == price and balance_of(user=alice) == 100 - price
    row = Job.objects.get(id=job["id"])
    assert (
        not row.input_image and [(i.width, i.height) for i in row.images.all()] == [(done["width"], done["height"])] * 2
    )


@pytest.mark.django_db(transaction=True)
def test_a_txt2img_result_is_the_input_of_an_img2img_job(paid_api, gpu_worker, client, alice):
    first = txt2img(paid_api, width=64, height=64).json()
    wait_for(lambda: finished(paid_api, first["id"]), timeout=120, message="the txt2img job")
    child = paid_api.post(
        "/api/v1/img2img",
        {"model": "test-sd1", "prompt": "sharper", "parent_job": first["id"], "steps": 4, "strength": 0.5},
    )
    assert child.status_code == 202, child.content
    body = child.json()
    # The parent's 64 px picture is the input: its size, fitted, is the output's.
    assert (body["mode"], body["parent_job"], body["width"], body["height"]) == ("img2img", first["id"], 64, 64)
    done = wait_for(lambda: finished(paid_api, body["id"]), timeout=120, message="the img2img child")
    assert done["status"] == "succeeded", done
    client.force_login(alice)
    page = client.get(f"/jobs/{body['id']}/").content.decode()
    assert "Image to image" in page and "text to image" in page  # the job's mode, its parent's in the lineage


# --- In process: the pipeline, the seed, the cache --------------------------------------


def test_the_text_pipeline_shares_the_loaded_modules_and_the_same_seed_gives_the_same_pixels(pipes):
    from workers.cache import PipelineCache
    from workers.runtime import BatchItem, mode_pipeline, run_batch

    pipe, spec = pipes("test-sd1")
    cache = PipelineCache(budget_bytes=1 << 40, loader=lambda spec, device, shared: (pipe, {}), device="cpu")
    cache.get(spec)
    before = cache.memory_bytes()
    first = run_batch(pipe, spec, [BatchItem(None, params())])[0][0]
    text = mode_pipeline(pipe, spec, "txt2img")
    assert type(text).__name__ == "StableDiffusionPipeline" and mode_pipeline(pipe, spec, "txt2img") is text
    assert (text.unet, text.vae, text.text_encoder) == (pipe.unet, pipe.vae, pipe.text_encoder)
    assert cache.memory_bytes() == before

    again = run_batch(pipe, spec, [BatchItem(None, params())])[0][0]
    other = run_batch(pipe, spec, [BatchItem(None, params(seed=12))])[0][0]
    assert first.size == (128, 128)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_txt2img_reports_each_step_and_stops_when_canceled(pipes):
    from workers.errors import Canceled
    from workers.runtime import BatchItem, run_batch

    pipe, spec = pipes("test-sdxl-turbo")
    seen: list = []
    turbo = params(steps=2, guidance_scale=0.0, width=64, height=64)
    images = run_batch(pipe, spec, [BatchItem(None, turbo, lambda step, total: seen.append((step, total)))])
    assert seen == [(1, 2), (2, 2)] and images[0][0].size == (64, 64)

    def cancel(step: int, total: int) -> bool:
        seen.append((step, total))
        return False

    seen.clear()
    with pytest.raises(Canceled):
        run_batch(pipe, spec, [BatchItem(None, turbo, cancel)])
    assert seen == [(1, 2)]


def test_one_pricing_function_prices_txt2img_at_every_step(paid_api):
    checkpoint = Checkpoint.objects.get(slug="test-sd1")  # 20 steps at 0.6 by default: 12 run
    assert quote(checkpoint=checkpoint, params=params(steps=24, num_images=2)) == 2 * 2
    for mode, credits in (("img2img", 1), ("txt2img", 2)):
        answer = paid_api.post("/api/v1/quote", {"model": "test-sd1", "mode": mode, "steps": 24, "strength": 0.5})
        assert answer.json() == {"credits": credits}, mode


# --- Bad input: 400 naming the field, no job, no charge -----------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"width": 100, "height": 128}, "width"),  # not a multiple of 8
        ({"width": 1032, "height": 512}, "width"),  # above the model's max side (1024)
        ({"width": 512}, "width"),  # one side alone
        ({"steps": 51}, "steps"),
        ({"prompt": "  "}, "prompt"),
    ],
)
def test_bad_settings_are_refused_with_the_field_and_cost_nothing(paid_api, alice, fields, field):
    response = txt2img(paid_api, **fields)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert balance_of(user=alice) == 100 and not Job.objects.exists()


def test_a_picture_sent_to_txt2img_is_refused(paid_api, alice):
    upload = SimpleUploadedFile("in.png", png_bytes(), content_type="image/png")
    response = paid_api.post("/api/v1/txt2img", {"model": "test-sd1", "prompt": "a castle", "image": upload})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"image"}
    assert balance_of(user=alice) == 100 and not Job.objects.exists()


def test_a_model_without_text_to_image_refuses_it_and_lists_only_img2img(paid_api, alice):
    Checkpoint.objects.filter(slug="test-sdxl").update(text_to_image=False)
    response = txt2img(paid_api, model="test-sdxl")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "model": "Test SDXL (random weights) cannot do text to image; it offers image to image. Choose another model."
    }
    assert paid_api.post("/api/v1/quote", {"model": "test-sdxl", "mode": "txt2img"}).status_code == 400
    assert balance_of(user=alice) == 100 and not Job.objects.exists()
    models = {m["slug"]: m for m in paid_api.get("/api/v1/models").json()["models"]}
    assert models["test-sdxl"]["modes"] == ["img2img"]
    assert models["test-sd1"]["modes"] == ["img2img", "txt2img", "inpaint", "controlnet"]
    assert models["test-sd1"]["native_size"] == [512, 512]


def test_the_seeded_sdxl_refiner_offers_image_to_image_only(db):
    from catalog.seeds import catalog_seed

    catalog_seed()
    assert Checkpoint.objects.get(slug="sdxl-refiner").modes == ["img2img"]
    assert Checkpoint.objects.get(slug="sdxl-base").modes == ["img2img", "txt2img", "inpaint", "controlnet"]


def test_a_job_row_needs_its_input_unless_it_is_text_to_image(paid_api, alice):
    from django.db import IntegrityError, transaction

    from tests.helpers import make_job

    assert make_job(alice, "test-sd1", mode="txt2img").mode == "txt2img"
    with pytest.raises(IntegrityError), transaction.atomic():
        make_job(alice, "test-sd1", input_image="")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_job(alice, "test-sd1", mode="txt2img", input_image="inputs/x.png")


def test_again_repeats_a_txt2img_job_with_a_new_seed(paid_api, alice, own_heartbeats):
    from generation.services import job_again
    from workers.heartbeat import publish

    publish(worker_id="w", serves=["test-sd1"], loaded=[], device="cpu")
    job = Job.objects.get(id=txt2img(paid_api, width=64, height=64).json()["id"])
    sibling = job_again(user=alice, job_id=job.id)
    assert (sibling.mode, sibling.prompt, sibling.width, sibling.steps, sibling.strength) == (
        "txt2img",
        *(
            job.prompt,
            64,
            3,
            1.0,
        ),
    )
    assert not sibling.input_image


def test_the_create_page_offers_both_modes_and_submits_text_to_image(paid_api, alice, client, own_heartbeats):
    from workers.heartbeat import publish

    publish(worker_id="w", serves=["test-sd1"], loaded=[], device="cpu")
    client.force_login(alice)
    page = client.get("/create/?mode=txt2img").content.decode()
    assert 'value="txt2img" checked' in page and "Square=512x512;Landscape 4:3=512x384" in page
    response = client.post(
        "/create/",
        {"mode": "txt2img", "model": "test-sd1", "prompt": "a fox", "steps": 3, "width": 64, "height": 64},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get()
    assert (job.mode, job.width, job.strength, bool(job.input_image)) == ("txt2img", 64, 1.0, False)


def test_batching_across_people_groups_only_jobs_of_one_mode(paid_api, alice, bob):
    from generation.services import job_claim, job_claim_companions
    from tests.helpers import make_job

    # The same size, steps, strength and guidance: only the mode differs.
    first = make_job(alice, "test-sd1", mode="txt2img")
    make_job(bob, "test-sd1", strength=1.0)
    same = make_job(bob, "test-sd1", mode="txt2img", prompt="another")
    job = job_claim(job_id=first.id, worker="w")
    assert [c.id for c in job_claim_companions(job=job, worker="w", images=3)] == [same.id]
    text = JobParams.of(first)
    assert text.batch_key != text.model_copy(update={"mode": "img2img"}).batch_key


def test_an_empty_mode_in_a_quote_is_refused_not_taken_for_img2img(paid_api):
    answer = paid_api.post("/api/v1/quote", {"model": "test-sd1", "mode": ""})
    assert answer.status_code == 400
    assert "mode" in answer.json()["error"]["fields"]
