"""An optional form field sent empty means "not given", as HTML forms and
most HTTP clients send it: every submit operation and the quote accept a
request whose optional fields are all empty and apply the defaults, and the
OpenAPI schema says so. A choice (the quote's mode) stays refused when empty,
and so does a required field."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.seeds import catalog_register_test_checkpoints, catalog_register_test_controlnets
from generation.models import Job
from generation.params import CHOICES, SUBMIT_FORMS, ControlPreviewIn, QuoteIn
from tests.helpers import png_bytes
from workers.heartbeat import publish, remove
from workers.testweights import RANDOM_CONTROLNETS

pytestmark = pytest.mark.django_db
FORMS = {**{f"/api/v1/{mode}": form for mode, form in SUBMIT_FORMS.items()}, "/api/v1/quote": QuoteIn}
REQUIRED = {"model": "test-sd1", "prompt": "a lighthouse at dusk"}


@pytest.fixture
def served(test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())
    controls = [control.slug for control in catalog_register_test_controlnets(RANDOM_CONTROLNETS)]
    publish(worker_id="empty-fields", serves=list(test_checkpoints), loaded=[], device="cpu", controls=controls)
    yield
    remove("empty-fields")


def empty_optional_fields(form) -> dict[str, str]:
    return {name: "" for name, field in form.model_fields.items() if not field.is_required() and name not in CHOICES}


def files_for(path: str) -> dict:
    picture = {"image": SimpleUploadedFile("in.png", png_bytes(size=(64, 64)))}
    if path.endswith("/inpaint"):
        return {**picture, "mask": SimpleUploadedFile("mask.png", png_bytes(size=(64, 64), color=(255, 255, 255)))}
    if path.endswith("/controlnet"):
        return {"control_image": SimpleUploadedFile("c.png", png_bytes(size=(64, 64))), "control": "test-sd1-canny"}
    if path.endswith("/txt2img"):
        return {}
    return picture


@pytest.mark.parametrize("path", list(FORMS))
def test_every_optional_field_sent_empty_means_not_given(paid_api, alice, served, path):
    empty = empty_optional_fields(FORMS[path])
    assert {"seed", "negative_prompt", "parent_job", "width", "num_images"} <= set(empty)
    if path != "/api/v1/quote":
        assert "webhook_url" in empty
    response = paid_api.post(path, {**REQUIRED, **empty, **files_for(path)})
    assert response.status_code == (200 if path.endswith("/quote") else 202), response.content
    if path.endswith("/quote"):
        return
    job = Job.objects.get(id=response.json()["id"])
    assert (job.webhook_url, job.negative_prompt, job.parent_id, job.num_images) == ("", "", None, 1)
    assert job.mask_blur == (4 if path.endswith("/inpaint") else 0)


def test_the_controlnet_preview_takes_empty_fields_too(paid_api, served):
    response = paid_api.post(
        "/api/v1/controlnet/preview",
        {**empty_optional_fields(ControlPreviewIn), "control_image": SimpleUploadedFile("c.png", png_bytes())},
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/png"


def test_an_empty_required_field_or_choice_is_still_refused(paid_api, served):
    response = paid_api.post("/api/v1/txt2img", {**REQUIRED, "prompt": ""})
    assert response.status_code == 400 and "prompt" in response.json()["error"]["fields"]
    response = paid_api.post("/api/v1/quote", {"model": "test-sd1", "mode": ""})
    assert response.status_code == 400 and "mode" in response.json()["error"]["fields"]


def test_the_schema_says_an_optional_field_may_be_empty(client):
    schema = client.get("/api/v1/openapi.json").json()
    for path, form in FORMS.items():
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        properties = next(iter(content.values()))["schema"]["properties"]
        for name in empty_optional_fields(form):
            assert {"type": "string", "maxLength": 0} in properties[name]["anyOf"], (path, name)
        for name in CHOICES & set(properties):
            assert (
                "anyOf" not in properties[name] or {"type": "string", "maxLength": 0} not in properties[name]["anyOf"]
            ), (path, name)
