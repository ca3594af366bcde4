"""ControlNet: the weight-free maps (canny, scribble), the runtime on the SD
1.x and SDXL test builds at 128 and 512 px (a conditioning scale of 0 gives
text to image's pixels, so the network is really in the call), POST
/api/v1/controlnet run in this process (the worker's job_run) from a control
picture, from a picture too (image to image) and from a parent's result,
the depth annotator, quote equal to charge, the control picture served to its
owner only, the preview endpoint, the catalog, and every bad input refused
with the field, no job and no charge."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageDraw

import workers.services
from billing.selectors import balance_of
from catalog.controls import control_map
from catalog.models import Checkpoint, ControlNet
from catalog.seeds import catalog_register_test_controlnets
from generation.models import Job, JobImage
from generation.params import JobParams
from generation.services import job_again
from tests.helpers import api_client, make_job
from tests.test_inpaint import noise_png, pixels_of, png_of, run_here

pytestmark = pytest.mark.django_db  # no commit: no task is sent; the test runs the worker's job_run


@pytest.fixture
def controls(test_checkpoints):
    from workers.testweights import RANDOM_CONTROLNETS

    catalog_register_test_controlnets(RANDOM_CONTROLNETS)
    return {control.slug: control for control in ControlNet.objects.all()}


def square_png(size=(128, 128), box=(32, 40, 96, 88)) -> bytes:
    """A white rectangle on black: its canny edges are its outline."""
    picture = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(picture).rectangle(box, fill=(255, 255, 255))
    return png_of(picture)


def controlnet(client, *, control_image=None, image=None, HTTP_IDEMPOTENCY_KEY=None, **fields):
    headers = {"HTTP_IDEMPOTENCY_KEY": HTTP_IDEMPOTENCY_KEY} if HTTP_IDEMPOTENCY_KEY else {}
    data = {"model": "test-sd1", "control": "test-sd1-canny", "prompt": "a house", "steps": 4, "seed": 5, **fields}
    if control_image is not None:
        data["control_image"] = SimpleUploadedFile("control.png", control_image)
    if image is not None:
        data["image"] = SimpleUploadedFile("in.png", image)
    return client.post("/api/v1/controlnet", data, **headers)


# --- Maps ------------------------------------------------------------------------------


def test_canny_outlines_a_shape_and_scribble_makes_white_lines_on_black():
    edges = np.asarray(control_map(Image.open(io.BytesIO(square_png())), "canny"))
    assert edges.shape == (128, 128, 3) and set(np.unique(edges)) == {0, 255}
    assert edges[40:89, 32].any() and edges[40, 32:97].any()  # the outline
    assert not edges[50:80, 45:85].any() and not edges[:30].any()  # nothing inside or far outside

    drawing = Image.new("L", (64, 64), 250)  # dark pencil on light paper
    ImageDraw.Draw(drawing).line((8, 32, 56, 32), fill=20, width=3)
    lines = np.asarray(control_map(drawing, "scribble"))[..., 0]
    assert lines[32, 30] == 255 and lines[10, 10] == 0 and set(np.unique(lines)) == {0, 255}
    assert control_map(drawing, "none").mode == "RGB"
    with pytest.raises(ValueError):
        control_map(drawing, "depth")


# --- Runtime ---------------------------------------------------------------------------


def run_control(pipes, slug, control_slug, *, side, scale=1.0, image=None, steps=3, seed=3, start=0.0, end=1.0):
    from workers.runtime import BatchItem, load_controlnet, run_batch
    from workers.spec import ControlNetSpec
    from workers.testweights import RANDOM_CONTROLNETS

    pipe, spec = pipes(slug)
    built = next(c for c in RANDOM_CONTROLNETS if c.slug == control_slug)
    network = load_controlnet(
        ControlNetSpec(slug=built.slug, family=built.family, source_kind="folder", source=built.folder),
        device="cpu",
        dtype=pipe.dtype,
    )
    params = JobParams(
        mode="controlnet",
        prompt="a house",
        negative_prompt="",
        strength=0.5 if image is not None else 1.0,
        steps=steps,
        guidance_scale=0.0 if "turbo" in slug else 5.0,
        seed=seed,
        num_images=1,
        width=side,
        height=side,
        control=control_slug,
        preprocess="canny",
        conditioning_scale=scale,
        control_start=start,
        control_end=end,
    )
    control = control_map(
        Image.open(io.BytesIO(square_png((side, side), (side // 4, side // 3, 3 * side // 4, 2 * side // 3)))), "canny"
    )
    return np.asarray(run_batch(pipe, spec, [BatchItem(image, params, control=control)], controlnet=network)[0][0])


def run_text(pipes, slug, *, side, steps=3, seed=3):
    from workers.runtime import BatchItem, run_batch

    pipe, spec = pipes(slug)
    params = JobParams(
        mode="txt2img",
        prompt="a house",
        negative_prompt="",
        strength=1.0,
        steps=steps,
        guidance_scale=0.0 if "turbo" in slug else 5.0,
        seed=seed,
        num_images=1,
        width=side,
        height=side,
    )
    return np.asarray(run_batch(pipe, spec, [BatchItem(None, params)])[0][0])


@pytest.mark.one_engine
@pytest.mark.parametrize(("slug", "control_slug"), [("test-sd1", "test-sd1-canny"), ("test-sdxl", "test-sdxl-canny")])
def test_the_controlnet_guides_the_picture_and_the_same_seed_gives_the_same_pixels(pipes, slug, control_slug):
    guided = run_control(pipes, slug, control_slug, side=128)
    assert guided.shape == (128, 128, 3)
    assert np.array_equal(run_control(pipes, slug, control_slug, side=128), guided)
    # Scale 0: the network adds nothing, so the picture is text to image's
    # (to float rounding); at 1 it differs.
    unguided = run_control(pipes, slug, control_slug, side=128, scale=0.0)
    plain = run_text(pipes, slug, side=128)
    assert np.abs(unguided.astype(int) - plain.astype(int)).max() <= 2
    assert np.abs(guided.astype(int) - plain.astype(int)).mean() > 1
    # Guidance only in the first half of the steps: not the full guidance's picture.
    assert not np.array_equal(run_control(pipes, slug, control_slug, side=128, end=0.5), guided)


@pytest.mark.one_engine
def test_controlnet_at_512_px_from_the_prompt_and_from_a_picture(pipes):
    from_prompt = run_control(pipes, "test-sd1", "test-sd1-canny", side=512, steps=2)
    assert from_prompt.shape == (512, 512, 3)
    assert run_control(pipes, "test-sdxl", "test-sdxl-canny", side=512, steps=2).shape == (512, 512, 3)
    picture = Image.open(io.BytesIO(noise_png((512, 512), seed=4)))
    from_picture = run_control(pipes, "test-sd1", "test-sd1-canny", side=512, steps=2, image=picture)
    assert from_picture.shape == (512, 512, 3) and not np.array_equal(from_picture, from_prompt)


# --- API -------------------------------------------------------------------------------


def test_a_controlnet_job_runs_is_charged_its_quote_and_its_control_picture_is_its_owners(
    paid_api, alice, bob, gpu_worker, controls
):
    Checkpoint.objects.filter(slug="test-sd1").update(price_per_image=12)
    ControlNet.objects.filter(slug="test-sd1-canny").update(cost_factor=2.0)
    quoted = paid_api.post(
        "/api/v1/quote", {"model": "test-sd1", "mode": "controlnet", "control": "test-sd1-canny", "steps": 4}
    ).json()["credits"]
    # 12 credits at 20 x 0.6 steps; all 4 steps run, the network doubles them: 12 x 4/12 x 2 = 8.
    assert quoted == 8
    response = controlnet(paid_api, control_image=square_png(), conditioning_scale=0.8, control_end=0.75)
    body = response.json()
    assert response.status_code == 202, body
    assert (body["mode"], body["control"], body["preprocess"], body["strength"]) == (
        "controlnet",
        "test-sd1-canny",
        "canny",
        1.0,
    )
    assert (body["conditioning_scale"], body["control_start"], body["control_end"]) == (0.8, 0.0, 0.75)
    assert (body["width"], body["height"]) == (128, 128) and body["control_image_url"].endswith("/control")
    # Guided over 3/4 of the steps: 12 x 4/12 x (1 + 1 x 0.75) = 7, and the
    # quote of the same fields says so.
    assert body["credits_held"] == 7
    same = {"model": "test-sd1", "mode": "controlnet", "control": "test-sd1-canny", "steps": 4, "control_end": 0.75}
    assert paid_api.post("/api/v1/quote", same).json()["credits"] == 7

    done = run_here(paid_api, response)
    assert done["status"] == "succeeded" and done["progress"] == {"step": 4, "total": 4}
    assert done["credits_charged"] == 7 and balance_of(user=alice) == 100 - 7
    assert pixels_of(paid_api, done["images"][0]["url"]).shape == (128, 128, 3)
    sent = np.asarray(Image.open(io.BytesIO(square_png())))
    assert np.array_equal(pixels_of(paid_api, done["control_image_url"]), sent)
    assert api_client(bob).get(done["control_image_url"]).status_code == 404
    assert paid_api.get(done["images"][0]["url"].rsplit("/", 1)[0] + "/x").status_code == 404

    # "Again": the same control picture and settings, a new seed.
    job = Job.objects.get(id=done["id"])
    sibling = job_again(user=alice, job_id=job.id)
    assert (sibling.mode, sibling.control, sibling.conditioning_scale, sibling.control_end) == (
        "controlnet",
        "test-sd1-canny",
        0.8,
        0.75,
    )
    with sibling.control_image.open("rb") as handle:
        assert np.array_equal(np.asarray(Image.open(handle)), sent)


def test_image_to_image_with_controlnet_and_a_parents_result_as_the_control_picture(paid_api, gpu_worker, controls):
    # A text to image job first; its result guides the next one (cross-mode lineage).
    first = paid_api.post(
        "/api/v1/txt2img", {"model": "test-sd1", "prompt": "a hill", "steps": 3, "width": 96, "height": 96}
    )
    parent = run_here(paid_api, first)
    picture = noise_png((96, 96), seed=8)
    response = controlnet(paid_api, image=picture, parent_job=parent["id"], strength=0.5, preprocess="none")
    body = response.json()
    assert response.status_code == 202, body
    assert (body["strength"], body["parent_job"], body["width"], body["height"]) == (0.5, parent["id"], 96, 96)
    done = run_here(paid_api, response)
    assert done["status"] == "succeeded" and done["progress"]["total"] == 2  # 4 steps x 0.5
    control = pixels_of(paid_api, done["control_image_url"])
    assert np.array_equal(control, pixels_of(paid_api, parent["images"][0]["url"]))


def test_a_picture_alone_both_guides_and_seeds_and_its_quote_is_its_charge(paid_api, gpu_worker, controls):
    Checkpoint.objects.filter(slug="test-sd1").update(price_per_image=12)
    picture = square_png()
    quoted = paid_api.post(
        "/api/v1/quote",
        {
            "model": "test-sd1",
            "mode": "controlnet",
            "control": "test-sd1-canny",
            "steps": 4,
            "image": SimpleUploadedFile("i.png", picture),
        },
    ).json()["credits"]
    # The image to image variant at the model's strength (0.6): 2 of 4 steps run, x1.5 for the network.
    assert quoted == math.ceil(12 * 2 / 12 * 1.5)
    response = controlnet(paid_api, image=picture)
    body = response.json()
    assert response.status_code == 202, body
    assert (body["strength"], body["credits_held"]) == (0.6, quoted)
    done = run_here(paid_api, response)
    assert done["credits_charged"] == quoted and done["progress"]["total"] == 2
    assert np.array_equal(pixels_of(paid_api, done["control_image_url"]), np.asarray(Image.open(io.BytesIO(picture))))


def test_the_depth_annotator_makes_the_map_on_the_worker_and_counts_in_its_cache(paid_api, gpu_worker, controls):
    from workers.runtime import module_bytes
    from workers.services import pipeline_cache

    ControlNet.objects.filter(slug="test-sd1-canny").update(kind="depth")  # a depth ControlNet (random weights)
    response = controlnet(paid_api, control_image=noise_png((64, 64)), steps=2)
    assert response.status_code == 202, response.json()
    assert response.json()["preprocess"] == "depth"
    assert run_here(paid_api, response)["status"] == "succeeded"
    held = pipeline_cache()._networks
    depth = next(network for key, network in held.items() if key[0] == "annotator")
    assert module_bytes(depth.model) > 0 and pipeline_cache().memory_bytes() >= module_bytes(depth.model)


def test_retention_deletes_the_control_picture_and_a_retry_with_the_key_is_the_same_job(
    paid_api, gpu_worker, controls, settings
):
    from datetime import timedelta

    from django.utils import timezone

    from generation.services import results_expire

    first = controlnet(paid_api, control_image=square_png(), HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 202, first.json()
    replay = controlnet(paid_api, control_image=square_png(), HTTP_IDEMPOTENCY_KEY="k-1")
    assert replay.json()["id"] == first.json()["id"] and replay["Idempotent-Replayed"] == "true"
    other = controlnet(paid_api, control_image=square_png(box=(10, 10, 50, 50)), HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 409  # another control picture under the same key

    done = run_here(paid_api, first)
    job = Job.objects.get(id=done["id"])
    name, storage = job.control_image.name, job.control_image.storage
    assert storage.exists(name)
    Job.objects.filter(id=job.id).update(
        finished_at=timezone.now() - timedelta(days=settings.RESULT_RETENTION_DAYS + 1)
    )
    assert results_expire() == 1
    assert not storage.exists(name) and paid_api.get(done["control_image_url"]).status_code == 404
    assert paid_api.get(f"/api/v1/jobs/{job.id}").json()["control_image_url"] is None


def bad(client, alice, response, *fields, status=400):
    body = response.json()
    assert response.status_code == status, body
    assert set(fields) <= set(body["error"].get("fields", {})), body
    assert not Job.objects.exists() and balance_of(user=alice) == 100
    return body


def test_bad_controlnet_input_is_refused_with_the_field_and_costs_nothing(paid_api, alice, gpu_worker, controls):
    picture = square_png()
    # A ControlNet of another family, an unknown one, none.
    body = bad(paid_api, alice, controlnet(paid_api, control_image=picture, control="test-sdxl-canny"), "control")
    assert "SDXL" in body["error"]["fields"]["control"]
    bad(paid_api, alice, controlnet(paid_api, control_image=picture, control="nope"), "control")
    bad(paid_api, alice, paid_api.post("/api/v1/controlnet", {"model": "test-sd1", "prompt": "x"}), "control")
    # No control picture; one that is not a picture.
    bad(paid_api, alice, controlnet(paid_api), "control_image")
    bad(paid_api, alice, controlnet(paid_api, control_image=b"not a picture"), "control_image")
    # A model without ControlNet (SD 2.x here), a dedicated inpainting one.
    bad(paid_api, alice, controlnet(paid_api, control_image=picture, model="test-sd2"), "model")
    bad(paid_api, alice, controlnet(paid_api, control_image=picture, model="test-sd1-inpaint"), "model")
    # A preprocess whose annotator this service lacks; an unknown one.
    body = bad(paid_api, alice, controlnet(paid_api, control_image=picture, preprocess="openpose"), "preprocess")
    assert "preprocess=none" in body["error"]["fields"]["preprocess"]
    bad(paid_api, alice, controlnet(paid_api, control_image=picture, preprocess="sobel"), "preprocess")
    # A strength without a picture (every step runs from the prompt alone).
    body = bad(paid_api, alice, controlnet(paid_api, control_image=picture, strength=0.5), "strength")
    assert "leave strength out" in body["error"]["fields"]["strength"]
    # Guidance that ends before it starts; a scale out of range.
    bad(paid_api, alice, controlnet(paid_api, control_image=picture, control_start=0.6, control_end=0.4), "control_end")
    bad(paid_api, alice, controlnet(paid_api, control_image=picture, conditioning_scale=3), "conditioning_scale")
    # A ControlNet no live worker has: unavailable (503), nothing held.
    ControlNet.objects.create(slug="sd1-other", name="Other", family="sd1", kind="canny", source="x/y")
    bad(paid_api, alice, controlnet(paid_api, control_image=picture, control="sd1-other"), "control", status=503)
    # A disabled one is unknown.
    ControlNet.objects.filter(slug="test-sd1-canny").update(enabled=False)
    bad(paid_api, alice, controlnet(paid_api, control_image=picture), "control")
    # The quote names a missing control too.
    response = paid_api.post("/api/v1/quote", {"model": "test-sd1", "mode": "controlnet"})
    assert response.status_code == 400 and "control" in response.json()["error"]["fields"]


def test_the_preview_shows_the_workers_map(paid_api, controls):
    picture = square_png((160, 120), (40, 30, 120, 90))
    response = paid_api.post(
        "/api/v1/controlnet/preview",
        {"preprocess": "canny", "width": 128, "height": 96, "control_image": SimpleUploadedFile("c.png", picture)},
    )
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)))
    resized = Image.open(io.BytesIO(picture)).convert("RGB").resize((128, 96), Image.Resampling.LANCZOS)
    assert np.array_equal(shown, np.asarray(control_map(resized, "canny")))
    refused = paid_api.post(
        "/api/v1/controlnet/preview", {"preprocess": "depth", "control_image": SimpleUploadedFile("c.png", picture)}
    )
    assert refused.status_code == 400 and "preprocess" in refused.json()["error"]["fields"]


def test_the_catalog_lists_the_controlnets_that_fit_each_model(paid_api, gpu_worker, controls):
    models = {model["slug"]: model for model in paid_api.get("/api/v1/models").json()["models"]}
    assert "controlnet" in models["test-sd1"]["modes"] and "controlnet" not in models["test-sd2"]["modes"]
    assert [c["slug"] for c in models["test-sd1"]["controlnets"]] == ["test-sd1-canny"]
    assert [c["slug"] for c in models["test-sdxl-turbo"]["controlnets"]] == ["test-sdxl-canny"]
    assert models["test-sd1"]["controlnets"][0]["available"] is True
    assert models["test-sd1-inpaint"]["controlnets"] == [] and models["test-sd2"]["controlnets"] == []


def test_the_create_page_submits_controlnet_and_the_job_page_shows_the_control_picture(
    paid_api, alice, client, gpu_worker, controls
):
    client.force_login(alice)
    page = client.get("/create/?mode=controlnet").content.decode()
    assert 'id="control-section"' in page and 'value="test-sd1-canny"' in page
    assert 'data-controls="test-sd1-canny"' in page  # test-sd1's card lists its ControlNets
    form = {"mode": "controlnet", "model": "test-sd1", "prompt": "a barn", "steps": "3", "control": "test-sd1-canny"}

    refused = client.post("/create/", form)  # no control picture
    assert refused.status_code == 400 and "Send a control picture" in refused.content.decode()
    assert not Job.objects.exists() and balance_of(user=alice) == 100

    # "Also start from a picture" unticked: a picture sent along is not used.
    files = {
        "control_image": SimpleUploadedFile("c.png", square_png()),
        "image": SimpleUploadedFile("i.png", noise_png()),
    }
    response = client.post("/create/", {**form, "preprocess": "none", "conditioning_scale": "0.5", **files})
    assert response.status_code == 302
    job = Job.objects.get()
    assert (job.mode, job.control, job.preprocess, job.conditioning_scale, job.input_image.name) == (
        "controlnet",
        "test-sd1-canny",
        "none",
        0.5,
        "",
    )
    assert workers.services.job_run(job_id=str(job.id)) == "succeeded"
    shown = client.get(response["Location"]).content.decode()
    assert 'id="control-figure"' in shown and f"/api/v1/jobs/{job.id}/control" in shown
    assert "Keep its structure" in shown and "ControlNet Test SD 1.x canny ControlNet at 0.5" in shown

    # Ticked: the image to image variant, at the picture's strength.
    files = {
        "control_image": SimpleUploadedFile("c.png", square_png()),
        "image": SimpleUploadedFile("i.png", noise_png()),
    }
    client.post("/create/", {**form, "use_picture": "1", "strength": "0.5", **files})
    variant = Job.objects.exclude(id=job.id).get()
    assert variant.input_image and variant.strength == 0.5


def test_a_worker_claims_only_the_controlnet_jobs_it_can_run(paid_api, alice, gpu_worker, controls):
    from generation.services import Abilities, job_claim

    ControlNet.objects.filter(slug="test-sd1-canny").update(kind="depth")
    depth = controlnet(paid_api, control_image=square_png(), steps=2).json()  # the depth annotator
    canny = controlnet(paid_api, control_image=square_png(), steps=2, preprocess="canny").json()
    plain = paid_api.post(
        "/api/v1/txt2img", {"model": "test-sd1", "prompt": "a hill", "steps": 2, "width": 64, "height": 64}
    ).json()
    # Neither the network nor the annotator: only the plain job, whosever turn it is.
    unable = Abilities()
    assert str(job_claim(job_id=depth["id"], worker="w1", abilities=unable).id) == plain["id"]
    assert job_claim(job_id=canny["id"], worker="w1", abilities=unable) is None
    # The network but not the annotator: the canny job, not the depth one.
    no_depth = Abilities(controls=frozenset({"test-sd1-canny"}))
    assert str(job_claim(job_id=depth["id"], worker="w2", abilities=no_depth).id) == canny["id"]
    assert job_claim(job_id=depth["id"], worker="w2", abilities=no_depth) is None
    both = Abilities(controls=frozenset({"test-sd1-canny"}), annotators=frozenset({"depth"}))
    assert str(job_claim(job_id=depth["id"], worker="w3", abilities=both).id) == depth["id"]


def test_a_turn_that_reaches_a_worker_without_the_controlnet_goes_to_one_with_it(
    paid_api, controls, own_heartbeats, monkeypatch
):
    from generation import dispatch
    from generation.dispatch import SENT_PREFIX
    from generation.services import Abilities, job_claim
    from workers.heartbeat import publish, remove

    def beat(name, **fields):
        publish(
            worker_id=name, serves=["test-sd1"], loaded=["test-sd1"], device="cpu", queue=f"worker.{name}", **fields
        )

    beat("able", controls=["test-sd1-canny"])
    beat("unable")
    job = controlnet(paid_api, control_image=square_png()).json()
    sent = []
    monkeypatch.setattr(dispatch, "_send_turn", lambda **turn: sent.append(turn))
    # The worker without it serves the queue (nothing else waits) and sends the turn to the one with it.
    assert job_claim(job_id=job["id"], worker="unable", abilities=Abilities()) is None
    assert [(turn["target"]["worker"], turn["reason"], turn["hops"]) for turn in sent] == [("able", "redirect", 1)]
    # With no worker that has it, the turn is left to the sweep: its sent marker is cleared.
    remove("able")
    from catalog.availability import heartbeat_client

    heartbeat_client().set(SENT_PREFIX + job["id"], "1")
    assert job_claim(job_id=job["id"], worker="unable", abilities=Abilities()) is None
    assert len(sent) == 1 and heartbeat_client().get(SENT_PREFIX + job["id"]) is None


def test_a_controlnet_is_offered_with_a_model_only_where_a_worker_serving_it_has_it(paid_api, controls, own_heartbeats):
    from workers.heartbeat import publish

    publish(worker_id="a", serves=["test-sd1"], loaded=[], device="cpu", controls=["test-sd1-canny", "test-sdxl-canny"])
    publish(worker_id="b", serves=["test-sdxl-turbo"], loaded=[], device="cpu")
    models = {model["slug"]: model for model in paid_api.get("/api/v1/models").json()["models"]}
    assert [(c["slug"], c["available"]) for c in models["test-sd1"]["controlnets"]] == [("test-sd1-canny", True)]
    assert [(c["slug"], c["available"]) for c in models["test-sdxl-turbo"]["controlnets"]] == [
        ("test-sdxl-canny", False)
    ]
    refused = controlnet(paid_api, control_image=square_png(), model="test-sdxl-turbo", control="test-sdxl-canny")
    assert refused.status_code == 503 and "control" in refused.json()["error"]["fields"]


def test_a_quote_sizes_from_the_parents_result_and_the_page_ignores_a_strength_without_a_picture(
    paid_api, alice, bob, client, gpu_worker, controls
):
    Checkpoint.objects.filter(slug="test-sd1").update(price_per_image=1, max_side=2048)
    # A finished text to image job with a 1280 x 1024 result (its pixels do not matter here).
    made = make_job(alice, "test-sd1", mode="txt2img", status="succeeded", width=1280, height=1024)
    JobImage(job=made, index=0, width=1280, height=1024).file.save("0.png", ContentFile(noise_png((1280, 1024))))
    parent = {"id": str(made.id)}
    fields = {"model": "test-sd1", "mode": "controlnet", "control": "test-sd1-canny", "steps": 12}
    # 12 steps at 1 credit per 12, x1.5 for the network: 2 credits at 512 px; 1280 x 1024 is two started
    # megapixels: 3.
    assert paid_api.post("/api/v1/quote", fields).json()["credits"] == 2
    assert paid_api.post("/api/v1/quote", {**fields, "parent_job": parent["id"]}).json()["credits"] == 3
    assert api_client(bob).post("/api/v1/quote", {**fields, "parent_job": parent["id"]}).status_code == 404
    submitted = controlnet(paid_api, parent_job=parent["id"], steps=12)
    assert (
        submitted.json()["credits_held"]
        == paid_api.post("/api/v1/quote", {**fields, "parent_job": parent["id"]}).json()["credits"]
    )

    # The page: a strength posted without "start from a picture" (no scripts) is not used.
    client.force_login(alice)
    form = {"mode": "controlnet", "model": "test-sd1", "prompt": "a barn", "steps": "3", "control": "test-sd1-canny"}
    picture = SimpleUploadedFile("c.png", square_png())
    response = client.post("/create/", {**form, "strength": "0.6", "control_image": picture})
    assert response.status_code == 302 and Job.objects.order_by("-created_at").first().strength == 1.0
