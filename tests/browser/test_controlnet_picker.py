"""The create page's ControlNet picker in a real browser (Debian's Chromium
driven by Playwright): only the ControlNets of the chosen model are offered,
a control picture's canny map appears before submitting (the worker's own
map, from POST /api/v1/controlnet/preview) and follows the preprocess, the
quote follows the network's cost, and the job runs and shows its control
picture beside its result."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image, ImageDraw

from catalog.controls import control_map
from generation.models import Job
from tests.browser.conftest import open_job_page, result_in_place

pytestmark = pytest.mark.django_db(transaction=True)


def square(path, size=(128, 96)):
    picture = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(picture).rectangle((32, 24, 96, 72), fill=(255, 255, 255))
    picture.save(path)
    return picture


def shown_map(page) -> np.ndarray:
    """The preview's pixels, read back through a canvas."""
    data_url = page.evaluate(
        """() => {
            const img = document.getElementById("control-map");
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            canvas.getContext("2d").drawImage(img, 0, 0);
            return canvas.toDataURL("image/png");
        }"""
    )
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_pick_a_controlnet_preview_its_map_and_run_it(page, live_server, tmp_path):
    path = tmp_path / "control.png"
    picture = square(path)
    page.goto(live_server.url + reverse("create"))
    page.check("input[name=mode][value=controlnet]")
    assert page.is_visible("#control-section") and page.is_hidden("#picture-section")
    page.check("input[name=model][value=test-sdxl-turbo]")
    offered = page.eval_on_selector_all("#id_control option:not([disabled])", "options => options.map(o => o.value)")
    assert offered == ["test-sdxl-canny"]
    page.check("input[name=model][value=test-sd1]")
    assert page.input_value("#id_control") == "test-sd1-canny" and page.input_value("#id_preprocess") == "canny"
    # The SD 2.x test model has no ControlNet: not selectable in this mode.
    assert page.is_disabled("input[name=model][value=test-sd2]")

    page.set_input_files("#id_control_image", str(path))
    page.wait_for_selector("#control-map:not([hidden])")
    page.wait_for_function("document.getElementById('control-map').dataset.preprocess === 'canny'")
    assert np.array_equal(shown_map(page), np.asarray(control_map(picture, "canny")))
    page.select_option("#id_preprocess", "scribble")
    page.wait_for_function("document.getElementById('control-map').dataset.preprocess === 'scribble'")
    assert np.array_equal(shown_map(page), np.asarray(control_map(picture, "scribble")))
    # An annotator this service lacks cannot be chosen.
    assert page.is_disabled("#id_preprocess option[value=openpose]")

    page.fill("#id_prompt", "a glass house")
    page.fill("#id_steps", "12")
    # test-sd1: 1 credit at 20 x 0.6 steps; ControlNet runs all 12, with its network (x1.5): 2 credits.
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '2'")
    page.click("form#create-form button[type=submit]")
    result_in_place(page)
    job = Job.objects.get(user=page.user)
    assert (job.status, job.mode, job.control, job.preprocess, job.width, job.height) == (
        "succeeded",
        "controlnet",
        "test-sd1-canny",
        "scribble",
        128,
        96,
    )
    assert job.credits_charged == 2 and page.is_visible("#studio-images >> text=Keep its structure")

    # "Keep its structure", in place: the result is the next job's control
    # picture, its map previewed before submitting.
    shown = page.get_attribute("#control-map", "src")
    page.click("#studio-images >> text=Keep its structure")
    page.wait_for_function(f"document.querySelector('input[name=parent_job]')?.value === '{job.id}'")
    assert page.is_checked("input[name=mode][value=controlnet]") and page.input_value("#id_control_image") != ""
    page.wait_for_function("shown => document.getElementById('control-map').src !== shown", arg=shown)
    page.fill("#id_prompt", "the same house in winter")
    page.fill("#id_steps", "3")
    page.click("form#create-form button[type=submit]")
    result_in_place(page)
    child = Job.objects.get(user=page.user, parent=job)
    assert (child.status, child.mode, child.width, child.height) == ("succeeded", "controlnet", 128, 96)
    with child.control_image.open("rb") as control, job.images.first().file.open("rb") as result:
        assert np.array_equal(np.asarray(Image.open(control)), np.asarray(Image.open(result)))
    open_job_page(page)
    assert page.text_content("#job-mode") == "ControlNet" and page.is_visible("#control-figure")
    assert page.errors == []
