"""The create, job and history pages, and API keys on the account page."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey
from billing.ledger import credits_grant
from billing.models import LedgerEntry
from billing.selectors import balance_of
from catalog.seeds import catalog_register_test_checkpoints
from generation.models import Job
from tests.conftest import wait_for
from tests.helpers import make_job, png_bytes


@pytest.fixture
def catalog(test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())


def form(**changes) -> dict:
    data = {
        "model": "test-sd1",
        "prompt": "a lighthouse in fog",
        "strength": "0.5",
        "steps": "4",
        "num_images": "1",
        "image": SimpleUploadedFile("in.png", png_bytes()),
    }
    data.update(changes)
    return data


@pytest.mark.django_db(transaction=True)
def test_submit_through_the_page_runs_the_job_and_charges_the_quote(client, alice, catalog, gpu_worker):
    credits_grant(user=alice, amount=30, ref="g")
    client.force_login(alice)
    page = client.get(reverse("create")).content.decode()
    assert 'value="test-sd1"' in page and "Subtle 0.3" in page and "Dramatic 0.85" in page
    assert re.search(r'value="test-sd2"[^>]*disabled', page), "an unavailable model must not be selectable"

    response = client.post(reverse("create"), form())
    assert response.status_code == 302
    job = Job.objects.get(user=alice)
    assert response["Location"] == reverse("job", args=[job.id])
    assert balance_of(user=alice) == 30 - job.credits_held

    done = wait_for(lambda: (j := Job.objects.get(id=job.id)).is_finished and j, timeout=120, message="the job")
    assert done.status == "succeeded"
    html = client.get(reverse("job", args=[job.id])).content.decode()
    image = done.images.get()
    assert f"/api/v1/images/{image.id}" in html and "Use as input" in html and "Again with a new seed" in html
    # Any mode's result can be inpainted next (lineage across modes); an image to image job has no mask.
    assert f"?parent={job.id}&amp;mode=inpaint" in html and 'id="mask-figure"' not in html
    assert balance_of(user=alice) == 30 - done.credits_charged
    assert [e.kind for e in LedgerEntry.objects.filter(account__user=alice).order_by("id")][-2:] == ["hold", "capture"]

    # Use as input: the create page is prefilled and the new job is a child.
    prefilled = client.get(reverse("create"), {"parent": job.id}).content.decode()
    assert f'name="parent_job" value="{job.id}"' in prefilled and "a lighthouse in fog" in prefilled
    child = client.post(reverse("create"), form(image="", parent_job=str(job.id), prompt="sharper"))
    assert child.status_code == 302
    child_job = Job.objects.exclude(id=job.id).get()
    assert child_job.parent_id == job.id
    lineage = client.get(reverse("job", args=[child_job.id])).content.decode()
    assert "Lineage" in lineage and reverse("job", args=[job.id]) in lineage

    again = client.post(reverse("job_again", args=[job.id]))
    sibling = Job.objects.exclude(id__in=[job.id, child_job.id]).get()
    assert again["Location"] == reverse("job", args=[sibling.id])
    assert (sibling.prompt, sibling.steps) == (job.prompt, job.steps)
    assert sibling.seed != job.seed  # a fresh random seed (1 in 2**32 to collide)


@pytest.mark.django_db
def test_page_errors_are_shown_and_cost_nothing(client, alice, catalog):
    credits_grant(user=alice, amount=5, ref="g")
    client.force_login(alice)
    response = client.post(reverse("create"), form(image=SimpleUploadedFile("x.png", b"not a picture")))
    assert response.status_code == 400
    assert b"not a readable PNG, JPEG or WebP image" in response.content
    response = client.post(reverse("create"), form(strength="7"))
    assert response.status_code == 400 and b"Between 0 (exclusive) and 1" in response.content
    assert balance_of(user=alice) == 5 and not Job.objects.exists()


@pytest.mark.django_db
def test_the_studio_submits_for_json_and_gets_the_job_or_the_fields_to_fix(client, alice, catalog, own_heartbeats):
    from workers.heartbeat import publish

    publish(worker_id="w", serves=["test-sd1"], loaded=[], device="cpu")
    credits_grant(user=alice, amount=5, ref="g")
    client.force_login(alice)
    bad = client.post(reverse("create"), form(strength="7"), HTTP_ACCEPT="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_params"
    assert "strength" in bad.json()["error"]["fields"] and not Job.objects.exists()
    made = client.post(reverse("create"), form(scheduler="euler_a"), HTTP_ACCEPT="application/json")
    assert made.status_code == 202, made.content
    job = Job.objects.get()
    assert made.json()["id"] == str(job.id) and made.json()["status"] == "queued"
    assert made.json()["credits_held"] == job.credits_held and made.json()["scheduler"] == "euler_a"


@pytest.mark.django_db
def test_pages_need_a_login(client):
    for name in ("create", "history"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and reverse("account_login") in response["Location"]


@pytest.mark.django_db
def test_someone_elses_job_page_is_404(client, alice, bob, catalog):
    job = make_job(bob, "test-sd1")
    client.force_login(alice)
    assert client.get(reverse("job", args=[job.id])).status_code == 404
    assert client.post(reverse("job_cancel", args=[job.id])).status_code == 404
    assert client.post(reverse("job_again", args=[job.id])).status_code == 404
    assert client.get(reverse("create"), {"parent": job.id}).status_code == 404


@pytest.mark.django_db
def test_page_posts_need_the_csrf_token(alice, catalog):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post(reverse("create"), form()).status_code == 403


@pytest.mark.django_db
def test_history_lists_own_jobs_with_filters(client, alice, bob, catalog):
    def make(user, slug, status, prompt):
        return make_job(user, slug, status=status, prompt=prompt)

    make(alice, "test-sd1", "succeeded", "alpha picture")
    make(alice, "test-sdxl", "failed", "beta picture")
    make(bob, "test-sd1", "succeeded", "bob private picture")
    client.force_login(alice)
    html = client.get(reverse("history")).content.decode()
    assert "alpha picture" in html and "beta picture" in html and "bob private picture" not in html
    html = client.get(reverse("history"), {"status": "failed"}).content.decode()
    assert "beta picture" in html and "alpha picture" not in html
    html = client.get(reverse("history"), {"model": "test-sd1"}).content.decode()
    assert "alpha picture" in html and "beta picture" not in html


@pytest.mark.django_db
def test_api_keys_are_shown_once_stored_hashed_and_revocable(client, alice):
    client.force_login(alice)
    response = client.post(reverse("api_key_new"), {"name": "laptop"})
    secret = re.search(r'data-testid="new-api-key">([^<]+)<', response.content.decode()).group(1)
    key = ApiKey.objects.get(user=alice)
    assert secret not in (key.key_hash, key.prefix) and key.key_hash != secret
    assert secret not in client.get(reverse("account")).content.decode()  # never shown again
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/account").json()["email"] == alice.email
    client.post(reverse("api_key_revoke", args=[key.id]))
    assert api.get("/api/v1/account").status_code == 401


@pytest.mark.django_db
def test_again_on_a_job_past_todays_limits_is_an_error_message_not_a_crash(client, alice, catalog):
    job = make_job(alice, "test-sd1", status="succeeded", steps=200)  # above every model's limit now
    client.force_login(alice)
    response = client.post(reverse("job_again", args=[job.id]), follow=True)
    assert response.status_code == 200 and "Some settings are not valid" in response.content.decode()
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_an_inpainting_jobs_page_shows_its_mask_until_retention_deletes_it(client, alice, catalog):
    from django.utils import timezone

    job = make_job(alice, "test-sd1", mode="inpaint", mask="masks/made-by-test.png", status="succeeded")
    client.force_login(alice)
    html = client.get(reverse("job", args=[job.id])).content.decode()
    assert re.search(r'id="results"\s*>', html), "the results show the mask before any result"
    assert 'id="mask-figure"' in html and f'src="/api/v1/jobs/{job.id}/mask"' in html and "Mask" in html
    job.mask, job.input_image, job.expired_at = "", "", timezone.now()
    job.save()
    html = client.get(reverse("job", args=[job.id])).content.decode()
    assert 'id="mask-figure"' not in html and f"/api/v1/jobs/{job.id}/mask" not in html


@pytest.mark.django_db
def test_an_image_to_image_job_shows_its_picture_beside_the_results_to_its_owner_only(client, alice, bob, catalog):
    from django.core.files.base import ContentFile
    from django.utils import timezone

    job = make_job(alice, "test-sd1", status="succeeded")
    job.input_image.save("input.png", ContentFile(png_bytes(size=(64, 48))))
    text = make_job(alice, "test-sd1", mode="txt2img", status="succeeded")
    client.force_login(alice)
    html = client.get(reverse("job", args=[job.id])).content.decode()
    assert 'id="before-figure"' in html and f'src="/api/v1/jobs/{job.id}/input"' in html
    answer = client.get(f"/api/v1/jobs/{job.id}/input")
    assert answer.status_code == 200 and b"".join(answer.streaming_content) == job.input_image.open("rb").read()
    assert 'id="before-figure"' not in client.get(reverse("job", args=[text.id])).content.decode()
    assert client.get(f"/api/v1/jobs/{text.id}/input").status_code == 404  # text to image: no picture
    client.force_login(bob)
    assert client.get(f"/api/v1/jobs/{job.id}/input").status_code == 404
    # Deleted by retention between the read and the file's opening: 404, not 500.
    client.force_login(alice)
    stored = job.input_image.name
    job.input_image.storage.delete(stored)
    assert client.get(f"/api/v1/jobs/{job.id}/input").status_code == 404
    # After retention: no picture to show, and the API says so.
    job.input_image.delete(save=False)
    job.expired_at = timezone.now()
    job.save()
    client.force_login(alice)
    assert 'id="before-figure"' not in client.get(reverse("job", args=[job.id])).content.decode()
    assert client.get(f"/api/v1/jobs/{job.id}/input").status_code == 404
