"""No WCAG 2 A or AA violation that axe-core (npm, package.json) finds, on
every page a person uses, in every create mode, on a wide screen and on a
phone."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from catalog.modes import OFFERED
from generation.models import JobImage
from tests.conftest import IN_CI
from tests.helpers import make_job, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SCREENS = {"wide": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}
RUN_AXE = """async () => {
    const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
    const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
    return result.violations.map(v =>
        v.id + ": " + v.help + " @ " + v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(" | "));
}"""


@pytest.fixture
def axe():
    if not AXE.exists():
        message = f"needs axe-core at {AXE} (scripts/test runs npm ci)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return str(AXE)


@pytest.mark.parametrize("screen", list(SCREENS))
def test_no_page_has_an_accessibility_violation(page, live_server, axe, screen):
    page.set_viewport_size(SCREENS[screen])
    job = make_job(page.user, "test-sd1", status="succeeded", credits_charged=1, width=96, height=80)
    JobImage(job=job, index=0, width=96, height=80).file.save("0.png", ContentFile(png_bytes()))
    paths = [
        reverse("home"),
        *(f"{reverse('create')}?mode={mode}" for mode in OFFERED),
        reverse("job", args=[job.id]),
        reverse("history"),
        reverse("account"),
        reverse("pricing"),
        reverse("models"),
        reverse("status"),
    ]
    # The check itself finds a violation where there is one.
    page.set_content("<!doctype html><html lang=en><title>t</title><main><img src=x.png></main></html>")
    page.add_script_tag(path=axe)
    assert any(violation.startswith("image-alt:") for violation in page.evaluate(RUN_AXE))
    found = {}
    for path in paths:
        page.goto(live_server.url + path)
        page.add_script_tag(path=axe)
        if violations := page.evaluate(RUN_AXE):
            found[path] = violations
    assert not found, found
    assert page.errors == []


@pytest.mark.parametrize("screen", list(SCREENS))
def test_results_in_place_are_accessible_and_fit_the_screen(page, live_server, axe, screen, tmp_path):
    from tests.browser.conftest import result_in_place

    page.set_viewport_size(SCREENS[screen])
    picture = tmp_path / "in.png"
    picture.write_bytes(png_bytes(size=(128, 96)))
    page.goto(live_server.url + reverse("create"))
    page.set_input_files("#id_image", str(picture))
    page.wait_for_selector("#preview:not([hidden])")
    page.check("input[name=model][value=test-sd1]")
    page.fill("#id_prompt", "a harbour at dawn")
    page.fill("#id_steps", "4")
    page.click("form#create-form button[type=submit]")
    result_in_place(page)
    page.add_script_tag(path=axe)
    assert page.evaluate(RUN_AXE) == []
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    assert page.errors == []
