"""The pipeline cache: a memory budget, least recently used out, and shared
components between checkpoints of one architecture."""

from __future__ import annotations

import pytest

from workers.cache import PipelineCache, parse_bytes
from workers.runtime import load_pipeline, module_bytes
from workers.spec import CheckpointSpec

# The worker's memory, no database: CI runs it in the PostgreSQL pass only (one_engine).
pytestmark = pytest.mark.one_engine


def spec(test_checkpoints, slug: str) -> CheckpointSpec:
    return test_checkpoints[slug].spec


def new_cache(budget: int) -> PipelineCache:
    return PipelineCache(budget_bytes=budget, loader=load_pipeline, device="cpu")


def size_alone(test_checkpoints, slug: str) -> int:
    cache = new_cache(1 << 40)
    cache.get(spec(test_checkpoints, slug))
    return cache.memory_bytes()


def test_a_hit_returns_the_loaded_pipeline(test_checkpoints):
    cache = new_cache(1 << 40)
    first, loaded = cache.get(spec(test_checkpoints, "test-sd1"))
    again, loaded_again = cache.get(spec(test_checkpoints, "test-sd1"))
    assert (loaded, loaded_again) == (True, False)
    assert again is first


def test_a_fine_tune_shares_the_vae_and_text_encoder_of_its_base(test_checkpoints):
    cache = new_cache(1 << 40)
    base, _ = cache.get(spec(test_checkpoints, "test-sd1"))
    tuned, _ = cache.get(spec(test_checkpoints, "test-sd1-alt"))
    assert tuned.vae is base.vae
    assert tuned.text_encoder is base.text_encoder
    assert tuned.unet is not base.unet
    together = cache.memory_bytes()
    apart = size_alone(test_checkpoints, "test-sd1") + size_alone(test_checkpoints, "test-sd1-alt")
    assert together == apart - module_bytes(base.vae) - module_bytes(base.text_encoder)


def test_identical_weights_load_once(test_checkpoints):
    cache = new_cache(1 << 40)
    sdxl, _ = cache.get(spec(test_checkpoints, "test-sdxl"))
    turbo, _ = cache.get(spec(test_checkpoints, "test-sdxl-turbo"))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert getattr(turbo, name) is getattr(sdxl, name), name
    assert cache.memory_bytes() == size_alone(test_checkpoints, "test-sdxl")


def test_the_budget_evicts_the_least_recently_used(test_checkpoints):
    sd1, sd2, sdxl = (spec(test_checkpoints, s) for s in ("test-sd1", "test-sd2", "test-sdxl"))
    budget = size_alone(test_checkpoints, "test-sd1") + size_alone(test_checkpoints, "test-sdxl") + 1024
    cache = new_cache(budget)
    cache.get(sd1)
    cache.get(sd2)
    cache.get(sd1)  # sd1 is now the most recently used
    cache.get(sdxl)
    assert cache.loaded() == ["test-sd1", "test-sdxl"]
    assert cache.memory_bytes() <= budget


def test_a_pipeline_larger_than_the_budget_still_runs_alone(test_checkpoints):
    cache = new_cache(1)
    cache.get(spec(test_checkpoints, "test-sd1"))
    cache.get(spec(test_checkpoints, "test-sd2"))
    assert cache.loaded() == ["test-sd2"]


@pytest.mark.parametrize(("text", "value"), [("12GB", 12 << 30), ("512m", 512 << 20), ("1048576", 1 << 20)])
def test_budget_sizes_parse(text, value):
    assert parse_bytes(text) == value


def test_a_bad_budget_size_is_refused():
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_a_controlnet_counts_in_the_budget_and_goes_before_any_pipeline(test_checkpoints):
    from workers.runtime import load_controlnet
    from workers.spec import ControlNetSpec
    from workers.testweights import RANDOM_CONTROLNETS

    sd1, alt = spec(test_checkpoints, "test-sd1"), spec(test_checkpoints, "test-sd1-alt")
    built = RANDOM_CONTROLNETS[0]
    control = ControlNetSpec(slug=built.slug, family=built.family, source_kind="folder", source=built.folder)
    cache = new_cache(1 << 40)
    pipe, _ = cache.get(sd1)
    loads = []

    def load():
        loads.append(1)
        return load_controlnet(control, device="cpu", dtype=pipe.dtype)

    network = cache.network(control, load)
    assert cache.network(control, load) is network and len(loads) == 1  # loaded once
    assert cache.memory_bytes() == size_alone(test_checkpoints, "test-sd1") + module_bytes(network)

    # Over budget with a second pipeline: the network goes first, both pipelines stay.
    cache.budget_bytes = size_alone(test_checkpoints, "test-sd1") + size_alone(test_checkpoints, "test-sd1-alt")
    cache.get(alt)
    assert cache.loaded() == ["test-sd1", "test-sd1-alt"] and cache.network(control, load) is not network
    # Loading it again (it is used with test-sd1-alt, the pipeline used last) evicts test-sd1, not alt.
    assert cache.loaded() == ["test-sd1-alt"] and len(loads) == 2
