"""The seeded catalog, its validation, and the public models page."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from catalog.families import FAMILIES
from catalog.models import Checkpoint
from catalog.seeds import SEEDS, catalog_register_test_checkpoints, catalog_seed
from workers.heartbeat import publish, remove
from workers.testweights import RANDOM_CHECKPOINTS

pytestmark = pytest.mark.django_db


def test_the_seed_has_fifteen_real_checkpoints_across_families_and_styles():
    created = catalog_seed()
    real = Checkpoint.objects.filter(is_test=False)
    assert len(created) == real.count() >= 15
    assert {c.family for c in real} >= {"sd1", "sd2", "sd-turbo", "sdxl", "sdxl-turbo", "sd3", "flux"}
    tags = set(real.values_list("tags__slug", flat=True))
    assert {"photoreal", "anime", "art", "fast"} <= tags
    assert all("/" in c.source and c.source_kind == "hub" for c in real)
    for checkpoint in real:
        checkpoint.full_clean()  # every seeded row passes the admin's validation


def test_turbo_models_default_to_few_steps_and_no_guidance():
    catalog_seed()
    for checkpoint in Checkpoint.objects.filter(family__in=["sd-turbo", "sdxl-turbo"]):
        assert checkpoint.default_steps <= 4 and checkpoint.max_steps <= 4
        assert checkpoint.default_guidance == 0
        assert checkpoint.default_steps * checkpoint.default_strength >= 1


def test_prices_reflect_cost():
    catalog_seed()
    price = {c.slug: c.price_per_image for c in Checkpoint.objects.all()}
    assert price["sd15"] < price["sdxl-base"] < price["flux-dev"]
    assert price["sdxl-turbo"] < price["sdxl-base"]


def test_seeding_again_adds_nothing_and_keeps_staff_edits():
    catalog_seed()
    Checkpoint.objects.filter(slug="sd15").update(price_per_image=9, enabled=False)
    assert catalog_seed() == []
    sd15 = Checkpoint.objects.get(slug="sd15")
    assert (sd15.price_per_image, sd15.enabled) == (9, False)
    assert Checkpoint.objects.count() == len(SEEDS)


def test_test_checkpoints_are_registered_once_and_marked():
    catalog_register_test_checkpoints(RANDOM_CHECKPOINTS)
    assert catalog_register_test_checkpoints(RANDOM_CHECKPOINTS) == []
    tests = Checkpoint.objects.filter(is_test=True)
    assert tests.count() == len(RANDOM_CHECKPOINTS)
    assert {c.family for c in tests} >= {"sd1", "sdxl"}
    assert all(FAMILIES[c.family].has_test_build for c in tests)


def make(**changes) -> Checkpoint:
    values = dict(
        slug="x",
        name="X",
        family="sd1",
        source_kind="hub",
        source="org/model",
        default_strength=0.5,
        default_steps=20,
        default_guidance=7,
        max_steps=50,
        max_side=768,
        price_per_image=1,
    )
    values.update(changes)
    return Checkpoint(**values)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(default_steps=60), "default_steps"),
        (dict(default_strength=1.5), "default_strength"),
        (dict(default_guidance=-1), "default_guidance"),
        (dict(source="not a repo id"), "source"),
        (dict(source_kind="single_file", source="model.ckpt"), "source"),
        (dict(source_kind="folder", source=""), "source"),
        (dict(max_side=770), "max_side"),
        (dict(allowed_sizes=[[512, 500]]), "allowed_sizes"),
        (dict(allowed_sizes=[[1024, 1024]]), "allowed_sizes"),
        (dict(family="imagen"), "family"),
    ],
)
def test_invalid_defaults_limits_and_sources_are_rejected(changes, field):
    with pytest.raises(ValidationError) as info:
        make(**changes).full_clean()
    assert field in info.value.message_dict


def test_a_valid_entry_passes():
    make(allowed_sizes=[[512, 512], [768, 512]]).full_clean()


def card(html: str, slug: str) -> str:
    part = html[html.index(f'data-slug="{slug}"') :]
    return part[: part.index("</article>")]


def test_the_models_page_shows_availability_from_live_heartbeats(client):
    catalog_register_test_checkpoints(RANDOM_CHECKPOINTS)
    html = client.get(reverse("models")).content.decode()
    assert "Test models use random weights" in html
    # test-sd2: no worker of this test session serves it.
    assert "Unavailable" in card(html, "test-sd2") and 'class="badge ok"' not in card(html, "test-sd2")
    publish(worker_id="pytest-fake", serves=["test-sd2"], loaded=[], device="cpu")
    try:
        html = client.get(reverse("models")).content.decode()
    finally:
        remove("pytest-fake")
    assert 'class="badge ok"' in card(html, "test-sd2")


def test_the_runtime_runs_every_family_the_catalog_offers():
    from workers.runtime import IMG2IMG_CLASSES

    assert set(IMG2IMG_CLASSES) == set(FAMILIES), "a family the catalog offers would never be served"
