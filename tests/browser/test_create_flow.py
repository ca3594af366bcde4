"""In a real browser (Debian's Chromium driven by Playwright): pick or drop a
picture, watch the quote follow the settings, submit, and see the results
arrive on the job page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.selectors import balance_of
from catalog.models import Lora
from generation.models import Job
from tests.browser.conftest import open_job_page, result_in_place
from tests.helpers import make_job, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_quote_submit_and_results(page, live_server, tmp_path):
    picture = tmp_path / "in.png"
    picture.write_bytes(png_bytes(size=(320, 240)))
    page.goto(live_server.url + reverse("create"))
    page.set_input_files("#id_image", str(picture))
    page.wait_for_selector("#preview:not([hidden])")
    page.check("input[name=model][value=test-sd1]")
    page.fill("#id_prompt", "a lighthouse at night")
    page.click("button.preset[data-strength='0.3']")
    assert page.input_value("#id_strength") == "0.3"
    page.fill("#id_steps", "10")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '1'")
    page.select_option("#id_num_images", "4")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '4'")
    page.select_option("#id_num_images", "1")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '1'")

    page.click("form#create-form button[type=submit]")
    result_in_place(page)  # the create page follows the job, then shows its pictures
    job = Job.objects.get(user=page.user)
    assert job.status == "succeeded" and (job.width, job.height, job.strength) == (320, 240, 0.3)
    assert balance_of(user=page.user) == 10 - job.credits_charged
    # In place: the picture it started from beside the result, what it cost
    # (the charge, not the hold), the session's strip.
    assert page.is_visible("#studio-images img[alt^=Before]")
    assert page.text_content("#studio-credits") == "Charged 1 credit" and job.credits_charged == 1
    assert page.locator("#recent-strip img").count() == 1
    # "Use as input", in place: the result is the next picture, its job the parent.
    page.click("#studio-images >> text=Use as input")
    page.wait_for_function(f"document.querySelector('input[name=parent_job]')?.value === '{job.id}'")
    assert page.is_checked("input[name=mode][value=img2img]") and page.is_visible("#preview")

    open_job_page(page)
    assert page.is_visible("text=Use as input") and page.is_visible("text=Again with a new seed")
    assert page.is_visible("#before-figure img")  # the picture it started from, beside the result
    assert page.text_content("#job-credits") == "Charged 1 credit"
    assert page.errors == []


def test_text_to_image_hides_the_picture_offers_sizes_and_runs(page, live_server):
    page.goto(live_server.url + reverse("create"))
    page.check("input[name=model][value=test-sd1]")
    page.check("input[name=mode][value=txt2img]")
    assert page.is_hidden("#picture-section") and page.is_disabled("#id_image") and page.is_hidden("#id_strength")
    assert page.input_value("#id_size") == "512x512"  # the model's native size first
    page.select_option("#id_size", "512x384")
    assert (page.input_value("#id_width"), page.input_value("#id_height")) == ("512", "384")
    page.fill("#id_prompt", "a fox in the snow")
    # test-sd1 prices 12 denoising steps (20 x 0.6) at 1 credit; text to image runs all 24.
    page.fill("#id_steps", "24")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '2'")
    page.fill("#id_steps", "3")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '1'")

    page.click("form#create-form button[type=submit]")
    result_in_place(page)
    job = Job.objects.get(user=page.user)
    assert (job.status, job.mode, job.width, job.height, job.strength) == ("succeeded", "txt2img", 512, 384, 1.0)
    assert not page.is_visible("#studio-images img[alt^=Before]")  # nothing it started from
    open_job_page(page)
    assert page.text_content("#job-mode") == "Text to image"
    assert page.errors == []


def test_a_sampler_and_loras_are_picked_priced_and_shown_on_the_job(page, live_server):
    Lora.objects.filter(slug="test-sd1-ink").update(price_per_image=1)
    page.goto(live_server.url + reverse("create"))
    page.check("input[name=model][value=test-sd1]")
    page.check("input[name=mode][value=txt2img]")
    # The chosen model's samplers and LoRAs only.
    assert page.is_visible(".lora[data-lora=test-sd1-ink]") and page.is_hidden(".lora[data-lora=test-sdxl-film]")
    assert page.locator("#id_scheduler option[value=ddim]").is_enabled()
    page.select_option("#id_scheduler", "euler_a")
    page.fill("#id_prompt", "a fox")
    page.fill("#id_steps", "3")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '1'")
    page.check(".lora[data-lora=test-sd1-ink] .lora-use")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '2'")  # its add-on
    page.locator(".lora[data-lora=test-sd1-ink] .lora-strength").fill("0.5")
    assert page.input_value("#id_loras") == "test-sd1-ink:0.5"
    page.click(".lora[data-lora=test-sd1-ink] .lora-trigger")
    assert page.input_value("#id_prompt") == "a fox, ink"
    page.fill("#lora-search", "glow")
    assert page.is_hidden(".lora[data-lora=test-sd1-ink]") and page.is_visible(".lora[data-lora=test-sd1-glow]")
    page.locator(".lora[data-lora=test-sd1-glow] .lora-strength").fill("0.3")  # not chosen: nothing changes
    assert page.input_value("#id_loras") == "test-sd1-ink:0.5"

    page.click("form#create-form button[type=submit]")
    result_in_place(page)
    job = Job.objects.get(user=page.user)
    assert (job.status, job.scheduler, job.loras) == ("succeeded", "euler_a", [{"slug": "test-sd1-ink", "weight": 0.5}])
    open_job_page(page)
    assert page.text_content("#job-sampler") == "Euler a"
    assert page.text_content("#job-loras") == "test-sd1-ink at 0.5"
    assert page.errors == []


def test_the_hires_toggle_sends_its_fields_only_when_on_and_prices_both_passes(page, live_server):
    page.goto(live_server.url + reverse("create"))
    page.check("input[name=model][value=test-sd1]")
    page.check("input[name=mode][value=txt2img]")
    page.fill("#id_prompt", "a fox")
    page.fill("#id_steps", "24")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '2'")
    assert page.is_disabled("#id_hires_scale") and page.is_hidden("#hires-fields")
    page.check("#hires-toggle")
    assert page.is_enabled("#id_hires_scale") and page.input_value("#id_hires_scale") == "2"
    # 24 steps at 512 px, then 12 at 1024 px: 2 + 1 credits.
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '3'")
    page.check("input[name=mode][value=inpaint]")
    assert page.is_hidden("#hires-settings") and page.is_disabled("#id_hires_scale")
    page.check("input[name=mode][value=txt2img]")
    page.uncheck("#hires-toggle")
    page.wait_for_function("document.getElementById('quote').textContent.trim() === '2'")
    assert page.errors == []


def test_a_dropped_picture_is_taken_and_previewed(page, live_server):
    page.goto(live_server.url + reverse("create"))
    data = list(png_bytes(size=(64, 48)))
    page.evaluate(
        """bytes => {
            const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
            const transfer = new DataTransfer();
            transfer.items.add(file);
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    page.wait_for_selector("#preview:not([hidden])")
    assert page.evaluate("document.getElementById('id_image').files[0].name") == "dropped.png"
    assert page.errors == []


def test_not_enough_credits_shows_the_buy_link(page, live_server):
    page.goto(live_server.url + reverse("create"))
    page.check("input[name=model][value=test-sd1]")
    page.fill("#id_steps", "50")
    page.fill("#id_width", "1024")
    page.fill("#id_height", "1024")
    page.select_option("#id_num_images", "4")
    page.wait_for_selector("#short:not([hidden])")
    assert page.get_attribute("#short a", "href") == reverse("pricing")


def test_the_submit_bar_shows_the_chosen_models_expected_wait(page, live_server):
    now = timezone.now()
    for slug, seconds in (("test-sd1", 30), ("test-sdxl-turbo", 90)):
        make_job(page.user, slug, status="succeeded", started_at=now - timedelta(seconds=seconds), finished_at=now)
    page.goto(live_server.url + reverse("create"))
    page.check("input[name=model][value=test-sd1]")
    assert page.text_content("#wait") == "about 30 s"
    page.check("input[name=model][value=test-sdxl-turbo]")
    assert page.text_content("#wait") == "about 2 min"
    assert page.errors == []


def test_served_models_come_first_the_others_folded_and_the_list_narrows(page, live_server):
    from catalog.models import Checkpoint
    from catalog.seeds import _tags

    Checkpoint.objects.get(slug="test-sdxl-turbo").tags.add(*_tags(["anime"]))
    page.goto(live_server.url + reverse("create"))
    served = page.eval_on_selector_all(
        "#create-form section .model-cards:not(details .model-cards) input[name=model]",
        "inputs => inputs.map(i => i.value)",
    )
    assert set(served) == {"test-sd1", "test-sdxl-turbo"}  # what the session's worker serves
    summary = page.text_content("#unserved-models summary")
    unserved = page.eval_on_selector_all("#unserved-models input[name=model]", "inputs => inputs.map(i => i.value)")
    assert summary == f"Not served right now ({len(unserved)})" and "test-sd2" in unserved
    assert not page.is_visible("#unserved-models .model-card")  # folded until opened

    page.fill("#model-search", "turbo")
    assert page.is_hidden("input[name=model][value=test-sd1] >> xpath=..")
    assert page.is_visible("input[name=model][value=test-sdxl-turbo] >> xpath=..")
    page.fill("#model-search", "")
    page.click(".tag-button[data-tag=anime]")
    assert page.get_attribute(".tag-button[data-tag=anime]", "aria-pressed") == "true"
    assert page.is_hidden("input[name=model][value=test-sd1] >> xpath=..")
    page.fill("#model-search", "sd1")
    assert page.is_visible("#no-model-matches")
    page.click(".tag-button[data-tag=anime]")  # off again
    assert page.is_visible("input[name=model][value=test-sd1] >> xpath=..")
    assert page.errors == []
