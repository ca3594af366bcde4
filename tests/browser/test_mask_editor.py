"""The create page's mask editor in a real browser (Debian's Chromium driven
by Playwright): paint a mask over the picture with the mouse, undo, resize the
brush and invert from the keyboard, submit, and find the painted strokes in
the job's stored mask; extend the canvas instead (outpainting) and get a
wider picture."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from generation.models import Job
from tests.browser.conftest import open_job_page, result_in_place
from tests.helpers import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)

SIDE = 128
# Pixels of the mask canvas that the export (and the server) count as white.
WHITE_PIXELS = """() => {
    const canvas = document.getElementById("mask-canvas");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let white = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) white += 1;
    return white;
}"""


def open_inpainting(page, live_server, tmp_path):
    picture = tmp_path / "in.png"
    picture.write_bytes(png_bytes(size=(SIDE, SIDE)))
    page.goto(live_server.url + reverse("create"))
    page.check("input[name=mode][value=inpaint]")
    assert page.is_visible("#mask-editor") and page.input_value("#id_strength") == "1"
    page.check("input[name=model][value=test-sd1]")
    page.set_input_files("#id_image", str(picture))
    page.wait_for_selector("#mask-canvas:not([hidden])")
    # The canvas lies exactly over the preview.
    assert page.locator("#mask-canvas").bounding_box() == page.locator("#preview").bounding_box()
    page.fill("#id_prompt", "a red balloon")


def stroke(page, points: list[tuple[int, int]]) -> None:
    """Drag the mouse through `points`, in picture pixels."""
    page.locator("#mask-canvas").scroll_into_view_if_needed()
    box = page.locator("#mask-canvas").bounding_box()
    scale = box["width"] / SIDE

    def at(point):
        return box["x"] + point[0] * scale, box["y"] + point[1] * scale

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(point), steps=4)
    page.mouse.up()


def test_paint_undo_resize_and_submit_a_mask(page, live_server, tmp_path):
    open_inpainting(page, live_server, tmp_path)
    assert (page.evaluate("document.getElementById('mask-canvas').width"), page.evaluate(WHITE_PIXELS)) == (SIDE, 0)
    # A quote in inpainting mode, at strength 1: 20 steps run in full (2 credits; image to image's 0.6, 1).
    page.fill("#id_steps", "20")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '2'")
    page.fill("#id_steps", "4")

    # An empty mask is refused before anything is sent.
    page.click("form#create-form button[type=submit]")
    assert page.is_visible("#mask-error") and "Paint over" in page.text_content("#mask-error")
    assert "/create/" in page.url and not Job.objects.exists()

    stroke(page, [(16, 100), (64, 100)])  # a line, then undone
    painted = page.evaluate(WHITE_PIXELS)
    assert painted > 48 * 8  # continuous: the whole line, not dots at the moves
    page.keyboard.press("Control+z")
    assert page.evaluate(WHITE_PIXELS) == 0
    page.keyboard.press("i")  # invert: all but nothing
    assert page.evaluate(WHITE_PIXELS) == SIDE * SIDE
    page.click("#mask-undo")
    assert page.evaluate(WHITE_PIXELS) == 0
    # The undo button, now disabled, hands the focus to the picture: the keys go on working.
    assert page.evaluate("document.activeElement.id") == "mask-canvas"

    size = int(page.input_value("#mask-size"))
    page.keyboard.press("]")
    assert int(page.input_value("#mask-size")) > size
    page.keyboard.press("e")
    assert page.get_attribute("#mask-eraser", "aria-pressed") == "true"
    assert page.get_attribute("#mask-brush", "aria-pressed") == "false"
    page.keyboard.press("b")
    assert page.get_attribute("#mask-brush", "aria-pressed") == "true"
    stroke(page, [(24, 40), (64, 44), (104, 40)])
    painted = page.evaluate(WHITE_PIXELS)
    assert painted > 70 * size

    page.click("form#create-form button[type=submit]")
    result_in_place(page)
    assert page.is_visible("#studio-images >> text=Inpaint this")
    job = Job.objects.get(user=page.user)
    assert (job.status, job.mode, job.strength, job.width, job.height) == ("succeeded", "inpaint", 1.0, SIDE, SIDE)
    with job.mask.open("rb") as stored:
        mask = np.asarray(Image.open(stored).convert("L"))
    assert int((mask == 255).sum()) == painted and set(np.unique(mask)) == {0, 255}
    assert mask[40, 24] == mask[42, 64] == mask[40, 104] == 255  # on the stroke (row, column)
    assert mask[100, 40] == mask[120, 120] == mask[5, 5] == 0  # the undone line and far away
    open_job_page(page)
    assert page.is_visible("#mask-figure img")  # the mask beside the results
    assert page.is_visible("text=Inpaint this")
    assert page.errors == []


def test_extending_the_canvas_outpaints_without_the_mask(page, live_server, tmp_path):
    open_inpainting(page, live_server, tmp_path)
    page.fill("#id_steps", "4")
    page.fill("#id_expand_right", "1024")  # 1152 px: past the model's 1024
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '–'")
    page.fill("#id_expand_right", "64")
    assert page.is_visible("#expand-note") and "192×128" in page.text_content("#expand-note")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '1'")

    page.click("form#create-form button[type=submit]")  # nothing painted: the added area is the mask
    result_in_place(page)
    job = Job.objects.get(user=page.user)
    assert (job.status, job.mode, job.width, job.height) == ("succeeded", "inpaint", 192, 128)
    with job.mask.open("rb") as stored:
        mask = np.asarray(Image.open(stored).convert("L"))
    assert (mask[:, SIDE:] == 255).all() and (mask[:, :SIDE] == 0).all()
    assert page.errors == []


def test_the_editors_keys_act_only_where_the_editor_has_focus(page, live_server, tmp_path):
    open_inpainting(page, live_server, tmp_path)
    size = int(page.input_value("#mask-size"))
    page.focus("input[name=model][value=test-sd1]")  # elsewhere on the page: keys keep their meaning
    page.keyboard.press("]")
    page.keyboard.press("e")
    assert int(page.input_value("#mask-size")) == size
    assert page.get_attribute("#mask-eraser", "aria-pressed") == "false"
    page.focus("#mask-canvas")
    page.keyboard.press("e")
    assert page.get_attribute("#mask-eraser", "aria-pressed") == "true"
    assert page.errors == []


def test_a_finger_paints_a_stroke(page, live_server, tmp_path):
    """Touch input (Chromium's own touch events, through the DevTools
    protocol) paints like the mouse: Pointer Events of type touch."""
    open_inpainting(page, live_server, tmp_path)
    page.locator("#mask-canvas").scroll_into_view_if_needed()
    box = page.locator("#mask-canvas").bounding_box()
    scale = box["width"] / SIDE
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
    page.evaluate(
        """() => { window.kinds = []; document.getElementById("mask-canvas")
            .addEventListener("pointerdown", (e) => window.kinds.push(e.pointerType)); }"""
    )

    def touch(kind, x, y=64):
        points = [] if kind == "touchEnd" else [{"x": box["x"] + x * scale, "y": box["y"] + y * scale}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    touch("touchStart", 16)
    for x in range(24, 113, 8):
        touch("touchMove", x)
    touch("touchEnd", 112)
    kinds = page.evaluate("window.kinds")
    assert kinds == ["touch"]
    painted = page.evaluate(WHITE_PIXELS)
    assert painted > 90 * 4  # a continuous line across the picture, not a dot
    assert page.errors == []
