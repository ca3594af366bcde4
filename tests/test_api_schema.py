"""Schemathesis fuzzes the JSON API from its own OpenAPI schema, in process
(the real WSGI application, database and Redis), with its default checks:
no server error, and every status code, content type, header and body as
the schema documents it; schema-invalid input refused, schema-valid input
accepted. A fixed seed (derandomize) makes a failure reproducible."""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from billing.ledger import credits_grant, credits_hold
from catalog.seeds import catalog_register_test_checkpoints, catalog_register_test_controlnets
from generation.models import JobImage
from generation.params import EXPAND_FIELDS
from portal.wsgi import application
from tests.helpers import make_job, png_bytes
from workers.heartbeat import publish, remove
from workers.testweights import RANDOM_CONTROLNETS

# Every CI run fuzzes this many requests per operation (a seed of its own
# each day would find more over time, but not reproducibly); a deeper run:
# SCHEMA_FUZZ_EXAMPLES=500 scripts/test tests/test_api_schema.py
EXAMPLES_PER_OPERATION = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "50"))
UPLOADS = {
    "/api/v1/quote",
    "/api/v1/img2img",
    "/api/v1/txt2img",
    "/api/v1/inpaint",
    "/api/v1/controlnet",
    "/api/v1/controlnet/preview",
}
# Why a schema-valid upload may still be refused: what the schema cannot say.
# The catalog (which slugs exist), a model's own limits (its max steps and
# size, steps x strength >= 1), whether the bytes are a picture, and where a
# webhook_url points (a host that does not resolve, or to a private address);
# for inpainting, a mask or expand_* (one of them) and the mask's content
# (its size, not all black) or the grown canvas within the model's max side;
# for ControlNet, which ControlNets exist and fit the model, a control picture
# (or a parent), an annotator's weights, and guidance that ends after it starts;
# which samplers the model's family has, which LoRAs exist and fit it (and the
# list's syntax past its length), and a hires pass's fit: its mode, the
# model's max side, a strength only with a scale.
CONTENT_REFUSALS = {"unknown_model", "invalid_image", "invalid_params", "insufficient_credits"}
MODEL_LIMIT_FIELDS = {
    "steps",
    "strength",
    "width",
    "parent_job",
    "webhook_url",
    "mask",
    *EXPAND_FIELDS,
    "control",
    "control_image",
    "preprocess",
    "control_end",
    "scheduler",
    "loras",
    "hires_scale",
    "hires_strength",
}
# Nor does it say that text has no NUL character (PostgreSQL cannot store
# one): portal.middleware refuses it up front, field by field.
NUL_REFUSAL = "contains a NUL character"
# Nor which Idempotency-Key was sent before with another request (the fuzzer
# sends the same few keys with many bodies).
KEY_REUSED = (409, "idempotency_key_reused")

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)


# Real ids and slugs from the fuzzer's fixture: half the generated values are
# swapped for them, so requests also reach what lies past "not found".
KNOWN: dict[str, list] = {}


def _sometimes(value, known: list):
    return st.sampled_from([*known, value]) if known else st.just(value)


@schema.hook
def flatmap_body(context, body):
    """Uploads with a real picture, a model of the catalog and a job of the
    person, at times: submits then reach pricing, the hold and the 202."""
    if context.operation.path not in UPLOADS or not isinstance(body, dict):
        return st.just(body)
    strategies = {key: st.just(value) for key, value in body.items()}
    if "image" in body:
        strategies["image"] = _sometimes(body["image"], [png_bytes(size=(80, 64))])
    if "mask" in body:  # white: change everything
        strategies["mask"] = _sometimes(body["mask"], [png_bytes(size=(80, 64), color=(255, 255, 255))])
    if "control_image" in body:
        strategies["control_image"] = _sometimes(body["control_image"], [png_bytes(size=(80, 64))])
    if "control" in body:
        strategies["control"] = _sometimes(body["control"], KNOWN["controls"])
    if "model" in body:
        strategies["model"] = _sometimes(body.get("model"), KNOWN["models"])
    if "parent_job" in body:
        strategies["parent_job"] = _sometimes(body["parent_job"], KNOWN["jobs"])
    return st.fixed_dictionaries(strategies)


@schema.hook
def filter_body(context, body):
    """No list for a form field: multipart sends a list as repeated fields
    (or, for some values, fields without a name), which a form reads as one
    value, so "an array where the schema says integer" cannot reach the API
    as such. Nor an empty text field (below)."""
    if context.operation.path not in UPLOADS or not isinstance(body, dict):
        return True
    # Nor an empty text field: Werkzeug's multipart encoder (the WSGI
    # transport) writes an empty value without the line break that ends it,
    # so the field never reaches the API, which then applies the default (an
    # empty `mode` read as img2img, "accepted"). An empty field that does
    # arrive is refused where the schema says so (tests/test_txt2img.py).
    return not any(isinstance(value, list) or value == "" for value in body.values())


@schema.hook
def flatmap_path_parameters(context, parameters):
    if not parameters:
        return st.just(parameters)
    if "job_id" in parameters:
        return st.fixed_dictionaries({"job_id": _sometimes(parameters["job_id"], KNOWN["jobs"])})
    if "image_id" in parameters:
        return st.fixed_dictionaries({"image_id": _sometimes(parameters["image_id"], KNOWN["images"])})
    return st.just(parameters)


def refused_only_for_what_the_schema_cannot_say(ctx, response, case):
    """For uploads, in place of positive_data_acceptance: a schema-valid
    request is accepted, or refused for a reason outside the schema."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return None
    error = response.json().get("error", {})
    if response.status_code in (401, 402, 404, 429) or (
        response.status_code == 400
        and error.get("code") in CONTENT_REFUSALS
        and set(error.get("fields") or {}) <= MODEL_LIMIT_FIELDS | {"image", "model"}
    ):
        return None
    if response.status_code == 400 and set((error.get("fields") or {}).values()) == {NUL_REFUSAL}:
        return None
    if (response.status_code, error.get("code")) == KEY_REUSED:
        return None
    raise AssertionError(f"schema-valid request refused: {response.status_code} {error}")


@pytest.fixture
def in_process(db):
    """Requests share the test's connection and transaction, as with
    Django's test client (so nothing is committed and no task is sent)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def fuzzer(in_process, alice, test_checkpoints, settings):
    """A person with credits, a job with a result and a child, an API key;
    every test model served (a heartbeat), so no submit is a 503."""
    from accounts.services import api_key_create

    settings.SUBMIT_RATE_LIMIT = "1000/m"
    settings.QUOTE_RATE_LIMIT = "1000/m"
    settings.WORKER_HEARTBEAT_TTL = 3600  # the stand-in heartbeat outlives a slow run of every example
    catalog_register_test_checkpoints(test_checkpoints.values())
    controls = [control.slug for control in catalog_register_test_controlnets(RANDOM_CONTROLNETS)]
    publish(worker_id="fuzz", serves=list(test_checkpoints), loaded=[], device="cpu", controls=controls)
    credits_grant(user=alice, amount=500, ref="g:fuzz")
    parent = make_job(alice, "test-sd1", status="succeeded", credits_charged=1)
    image = JobImage(job=parent, index=0, width=80, height=64)
    image.file.save("0.png", ContentFile(png_bytes(size=(80, 64))), save=True)
    child = make_job(alice, "test-sd1", parent=parent)  # queued, its credits held: it can be canceled
    credits_hold(user=alice, amount=child.credits_held, ref=child.hold_ref)
    KNOWN.update(
        models=list(test_checkpoints), controls=controls, jobs=[str(parent.id), str(child.id)], images=[str(image.id)]
    )
    _, secret = api_key_create(user=alice, name="fuzz")
    yield secret
    remove("fuzz")
    KNOWN.clear()


# The schema contract is the API layer's, which no database engine changes:
# CI fuzzes it in the PostgreSQL pass only (one_engine).
@pytest.mark.one_engine
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_the_api_answers_as_its_schema_says(case, fuzzer):
    upload = case.operation.path in UPLOADS
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzzer}"},
        excluded_checks=[positive_data_acceptance] if upload else [],
        additional_checks=[refused_only_for_what_the_schema_cannot_say] if upload else [],
    )
