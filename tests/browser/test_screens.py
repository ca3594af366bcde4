"""The main pages on a wide screen and on a phone (390 px): each fits its
width with no sideways scroll and runs without a script error. With
SCREENSHOTS_DIR set, the screenshots the docs show are written there:

    SCREENSHOTS_DIR=docs/img scripts/test tests/browser/test_screens.py -p no:xdist
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from generation.models import JobImage
from tests.helpers import make_job, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)
# The elements that reach past the screen's right edge, for the failure message.
WIDER_THAN_THE_SCREEN = """[...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
    .slice(0, 8).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + "." + [...e.classList].join("."))"""
SCREENS = {"wide": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}


def gradient(size=(512, 384)) -> bytes:
    """A picture with something in it (the random-weight models make noise)."""
    from PIL import Image

    width, height = size
    image = Image.new("RGB", size)
    image.putdata([(x * 255 // width, y * 255 // height, 160) for y in range(height) for x in range(width)])
    from io import BytesIO

    out = BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("screen", list(SCREENS))
def test_the_main_pages_fit_the_screen(page, live_server, screen, tmp_path):
    page.set_viewport_size(SCREENS[screen])
    job = make_job(
        page.user, "test-sd1", status="succeeded", credits_charged=1, prompt="a harbour at dawn", width=512, height=384
    )
    JobImage(job=job, index=0, width=512, height=384).file.save("0.png", ContentFile(gradient()))
    job.input_image.save("input.png", ContentFile(png_bytes(size=(512, 384))))
    shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    picture = tmp_path / "in.png"
    picture.write_bytes(gradient())

    page.goto(live_server.url + reverse("create"))
    page.set_input_files("#id_image", str(picture))
    page.wait_for_selector("#preview:not([hidden])")
    page.fill("#id_prompt", "the same street in watercolour, soft morning light")
    page.check("input[name=model][value=test-sd1]")
    page.wait_for_function("document.getElementById('quote').textContent.trim() !== ''")
    pages = {"create": None, "studio": "results", "job": reverse("job", args=[job.id]), "history": reverse("history")}
    for name, path in pages.items():
        if path == "results":
            # The studio after a submit: the result in place beside its picture.
            from tests.browser.conftest import result_in_place

            page.fill("#id_steps", "4")
            page.click("form#create-form button[type=submit]")
            result_in_place(page)
            page.locator("#studio-results").scroll_into_view_if_needed()
        elif path:
            page.goto(live_server.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        wide = page.evaluate(WIDER_THAN_THE_SCREEN)
        assert overflow <= 0, f"{name} scrolls sideways by {overflow} px at {screen} width: {wide}"
        page.screenshot(path=str(shots / f"{name}-{screen}.png"), full_page=screen == "phone")
    assert page.errors == []
