"""LoRAs: catalog entries a job stacks on a checkpoint of their architecture
(up to 4, weights -2..2); the worker loads each file once as a named
adapter (diffusers' and kohya's key layouts), activates exactly the job's
for its call, and never lets one job's LoRA into the next; bad lists are a
400 naming `loras` that costs nothing; a LoRA's price adds to each image."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from billing.selectors import balance_of
from catalog.models import Lora
from catalog.seeds import catalog_register_test_loras
from generation.models import Job
from generation.params import LoraWeight
from generation.services import job_again
from tests.conftest import wait_for
from tests.helpers import job_params
from workers.loras import active_loras
from workers.runtime import BatchItem, run_batch
from workers.spec import LoraSpec
from workers.testweights import RANDOM_LORAS

SOURCE = Image.new("RGB", (96, 80), (200, 120, 40))
BY_SLUG = {lora.slug: lora for lora in RANDOM_LORAS}


params = functools.partial(job_params)


def spec_of(slug: str) -> LoraSpec:
    lora = BY_SLUG[slug]
    return LoraSpec(slug=lora.slug, family=lora.family, source=lora.file)


def made(pipe, spec, *loras: tuple[str, float]) -> np.ndarray:
    result = run_batch(pipe, spec, [BatchItem(SOURCE, params())], loras=[(spec_of(s), w) for s, w in loras])
    return np.asarray(result[0][0], dtype=np.int16)


@pytest.mark.parametrize(
    ("checkpoint", "lora"),
    [("test-sd1", "test-sd1-ink"), ("test-sd1", "test-sd1-glow"), ("test-sdxl", "test-sdxl-film")],
    ids=["kohya-layout", "diffusers-layout", "sdxl-two-text-encoders"],
)
def test_weight_zero_is_no_lora_weight_one_differs_and_nothing_leaks(pipes, checkpoint, lora):
    pipe, spec = pipes(checkpoint)
    plain = made(pipe, spec)
    with_lora = made(pipe, spec, (lora, 1.0))
    assert np.abs(with_lora - plain).mean() > 1.0
    # It changes the text encoders too (every one of SDXL's), not the UNet alone.
    adapters = pipe.get_list_adapters()
    name = pipe._portal_loras[spec_of(lora)]
    assert all(name in adapters[module] for module in ("unet", "text_encoder"))
    if checkpoint == "test-sdxl":
        assert name in adapters["text_encoder_2"]
    assert np.array_equal(made(pipe, spec, (lora, 0.0)), plain)
    # The text encoders' part loaded too: the file's weights, not an adapter
    # added with fresh ones (as when its keys do not match the module's).
    from safetensors.torch import load_file

    saved = load_file(str(spec_of(lora).local_path()))
    ups = {
        "text_encoder": (
            "text_encoder.encoder.layers.0.self_attn.q_proj.lora_B.weight",
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
        ),
        "text_encoder_2": ("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight",),
    }
    for component, keys in ups.items():
        if getattr(pipe, component, None) is not None:
            up = next(saved[key] for key in keys if key in saved)
            encoder = getattr(pipe, component)
            layer = getattr(encoder, "text_model", encoder).encoder.layers[0].self_attn.q_proj
            assert layer.lora_B[name].weight.equal(up), component
    # The next job without LoRAs: the base weights alone, adapters off.
    assert np.array_equal(made(pipe, spec), plain)
    assert all(active == [] for active in active_loras(pipe).values())
    # Loaded once, kept for the next job that names it.
    assert np.array_equal(made(pipe, spec, (lora, 1.0)), with_lora)
    assert pipe._portal_loras[spec_of(lora)] == name


def test_loras_stack_with_their_own_weights(pipes):
    pipe, spec = pipes("test-sd1")
    ink, glow = made(pipe, spec, ("test-sd1-ink", 1.0)), made(pipe, spec, ("test-sd1-glow", 1.0))
    both = made(pipe, spec, ("test-sd1-ink", 1.0), ("test-sd1-glow", 1.0))
    assert np.abs(both - ink).mean() > 1.0 and np.abs(both - glow).mean() > 1.0
    assert np.array_equal(made(pipe, spec, ("test-sd1-ink", 1.0), ("test-sd1-glow", 0.0)), ink)
    assert sorted(active_loras(pipe)["unet"]) == sorted(pipe._portal_loras[spec_of(s)] for s in BY_SLUG if "sd1" in s)


def test_a_job_with_loras_does_not_share_a_call_with_one_without():
    assert params().batch_key != params(loras=(LoraWeight(slug="x", weight=1.0),)).batch_key


# --- Through the API ---------------------------------------------------------------


@pytest.fixture
def loras(paid_api):
    catalog_register_test_loras(RANDOM_LORAS)
    return {lora.slug: lora for lora in Lora.objects.all()}


@pytest.mark.django_db
def test_models_list_the_loras_that_fit_them(paid_api, loras, own_heartbeats):
    from workers.heartbeat import publish

    publish(worker_id="w", serves=["test-sd1"], loaded=[], device="cpu", loras=["test-sd1-ink"])
    models = {model["slug"]: model for model in paid_api.get("/api/v1/models").json()["models"]}
    sd1 = {lora["slug"]: lora for lora in models["test-sd1"]["loras"]}
    assert set(sd1) == {"test-sd1-ink", "test-sd1-glow"}
    assert sd1["test-sd1-ink"]["available"] and not sd1["test-sd1-glow"]["available"]
    assert sd1["test-sd1-ink"]["trigger_words"] == "ink" and sd1["test-sd1-ink"]["default_weight"] == 1.0
    assert [lora["slug"] for lora in models["test-sdxl-turbo"]["loras"]] == ["test-sdxl-film"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [
        "nope",  # not in the catalog
        "test-sdxl-film",  # another architecture
        "test-sd1-ink:3",  # weight out of range
        "test-sd1-ink:x",  # malformed
        "test-sd1-ink:0.5,test-sd1-ink",  # twice
        "a,b,c,d,e",  # more than 4
        "test-sd1-ink:nan",
        ",",
    ],
)
def test_a_bad_lora_list_is_a_400_naming_loras_and_costs_nothing(paid_api, alice, loras, value):
    fields = {"model": "test-sd1", "prompt": "a fox", "steps": 2, "loras": value}
    answer = paid_api.post("/api/v1/txt2img", fields)
    assert answer.status_code == 400, answer.content
    assert "loras" in answer.json()["error"]["fields"]
    quote = paid_api.post("/api/v1/quote", {"mode": "txt2img", **fields})
    assert quote.status_code == 400 and "loras" in quote.json()["error"]["fields"]
    assert not Job.objects.exists() and balance_of(user=alice) == 100


@pytest.mark.django_db
def test_a_disabled_lora_is_refused_and_a_lora_adds_its_price_to_each_image(paid_api, loras):
    fields = {"mode": "txt2img", "model": "test-sd1", "steps": 2, "num_images": 2, "width": 64, "height": 64}
    base = paid_api.post("/api/v1/quote", fields).json()["credits"]
    Lora.objects.filter(slug="test-sd1-ink").update(price_per_image=3)
    priced = paid_api.post("/api/v1/quote", {**fields, "loras": "test-sd1-ink:0.5,test-sd1-glow"}).json()["credits"]
    assert priced == base + 2 * 3
    Lora.objects.filter(slug="test-sd1-ink").update(enabled=False)
    assert paid_api.post("/api/v1/quote", {**fields, "loras": "test-sd1-ink"}).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_a_job_runs_with_its_loras_is_charged_its_quote_and_again_keeps_them(paid_api, alice, loras, gpu_worker):
    Lora.objects.filter(slug="test-sd1-glow").update(default_weight=0.6, price_per_image=1)
    fields = {"model": "test-sd1", "prompt": "ink drawing of a fox", "steps": 3, "width": 64, "height": 64}
    fields["loras"] = "test-sd1-ink:-0.5, test-sd1-glow"
    price = paid_api.post("/api/v1/quote", {"mode": "txt2img", **fields}).json()["credits"]
    job = paid_api.post("/api/v1/txt2img", fields).json()
    assert job["loras"] == [{"slug": "test-sd1-ink", "weight": -0.5}, {"slug": "test-sd1-glow", "weight": 0.6}]
    done = wait_for(
        lambda: (
            (body := paid_api.get(f"/api/v1/jobs/{job['id']}").json())["status"] in ("succeeded", "failed") and body
        ),
        timeout=60,
        message="the job ends",
    )
    assert done["status"] == "succeeded", done["error"]
    assert done["credits_charged"] == price and balance_of(user=alice) == 100 - price
    again = job_again(user=alice, job_id=job["id"])
    assert again.loras == job["loras"]


# --- Review findings: routing, shared modules, fused attention, round trips ----------


@pytest.mark.django_db
def test_a_worker_claims_a_lora_job_only_with_every_lora_it_names(alice, loras):
    from generation.selectors import fair_next
    from generation.services import Abilities
    from tests.helpers import make_job

    plain = make_job(alice, "test-sd1")
    inked = make_job(alice, "test-sd1", loras=[{"slug": "test-sd1-ink", "weight": 1.0}])
    both = make_job(
        alice, "test-sd1", loras=[{"slug": "test-sd1-ink", "weight": 1.0}, {"slug": "test-sd1-glow", "weight": 1.0}]
    )
    checkpoint = plain.checkpoint_id
    assert set(fair_next(checkpoint_id=checkpoint, limit=10, loras=frozenset())) == {plain.id}
    assert set(fair_next(checkpoint_id=checkpoint, limit=10, loras=frozenset({"test-sd1-ink"}))) == {
        plain.id,
        inked.id,
    }
    assert set(fair_next(checkpoint_id=checkpoint, limit=10)) == {plain.id, inked.id, both.id}
    able = Abilities(loras=frozenset({"test-sd1-ink"}))
    assert able.can_run(inked) and not able.can_run(both) and able.can_run(plain)
    assert set(Job.objects.filter(Abilities(loras=frozenset()).runnable()).values_list("id", flat=True)) == {plain.id}


@pytest.mark.django_db
def test_a_submit_needs_a_worker_serving_the_model_that_has_the_lora(paid_api, loras, own_heartbeats):
    from workers.heartbeat import publish

    publish(worker_id="a", serves=["test-sd1"], loaded=[], device="cpu", loras=[])
    publish(worker_id="b", serves=["test-sdxl"], loaded=[], device="cpu", loras=["test-sd1-ink"])
    answer = paid_api.post("/api/v1/txt2img", {"model": "test-sd1", "prompt": "a fox", "loras": "test-sd1-ink"})
    assert answer.status_code == 503 and "loras" in answer.json()["error"]["fields"]
    assert not Job.objects.exists()


def test_a_lora_never_reaches_a_checkpoint_that_shares_a_text_encoder(test_checkpoints):
    from workers.cache import PipelineCache
    from workers.loras import forget_loras
    from workers.runtime import load_pipeline

    cache = PipelineCache(budget_bytes=1 << 40, loader=load_pipeline, device="cpu")
    base_spec, alt_spec = test_checkpoints["test-sd1"].spec, test_checkpoints["test-sd1-alt"].spec
    base, alt = cache.get(base_spec)[0], cache.get(alt_spec)[0]
    assert base.text_encoder is alt.text_encoder  # shared (the same weights)
    before = made(alt, alt_spec)
    made(base, base_spec, ("test-sd1-ink", 1.0))
    assert np.array_equal(made(alt, alt_spec), before)
    name = base._portal_loras[spec_of("test-sd1-ink")]
    forget_loras(base)  # as the cache does when it evicts base
    assert name not in (getattr(alt.text_encoder, "peft_config", None) or {})


def test_fused_attention_is_undone_before_a_lora_loads(test_checkpoints):
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    from workers.runtime import load_pipeline

    spec = test_checkpoints["test-sd1"].spec
    pipe = load_pipeline(spec, device="cpu")[0]
    plain = made(pipe, spec)
    pipe.fuse_qkv_projections(unet=True, vae=False)
    assert any(isinstance(p, FusedAttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    inked = made(pipe, spec, ("test-sd1-ink", 1.0))
    assert not any(isinstance(p, FusedAttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    assert np.abs(inked - plain).mean() > 1.0


def test_weights_round_trip_through_again_exactly():
    from generation.params import parse_loras

    job = params(loras=(LoraWeight(slug="a", weight=1e-05), LoraWeight(slug="b", weight=1.234567)))
    assert parse_loras(job.loras_text) == [("a", 1e-05), ("b", 1.234567)]


def test_loras_are_for_the_sd_and_sdxl_architectures():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="SDXL"):
        Lora(slug="x", name="x", family="flux", source="x.safetensors").clean()
