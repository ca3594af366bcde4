"""Staff manage the catalog in the admin: list, filters, bulk enable/disable,
inline edits, and validation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Checkpoint, Tag
from catalog.seeds import catalog_seed
from workers.heartbeat import publish, remove

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:catalog_checkpoint_changelist")


@pytest.fixture
def staff_client(client, charlie):
    catalog_seed()
    client.force_login(charlie)
    return client


def listed(response) -> set[str]:
    return {c.slug for c in response.context["cl"].result_list}


def test_the_list_shows_the_catalog(staff_client):
    response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    assert listed(response) == set(Checkpoint.objects.values_list("slug", flat=True))


def test_filters_by_family_tag_enabled_and_availability(staff_client):
    assert listed(staff_client.get(CHANGELIST, {"family": "sdxl"})) == set(
        Checkpoint.objects.filter(family="sdxl").values_list("slug", flat=True)
    )
    anime = staff_client.get(CHANGELIST, {"tags__id__exact": Tag.objects.get(slug="anime").pk})
    assert listed(anime) >= {"ghibli-diffusion", "animagine-xl-3-1"} and "sd15" not in listed(anime)
    Checkpoint.objects.filter(slug="sd15").update(enabled=False)
    assert listed(staff_client.get(CHANGELIST, {"enabled__exact": "0"})) == {"sd15"}
    publish(worker_id="pytest-admin", serves=["sdxl-turbo"], loaded=[], device="cuda")
    try:
        assert listed(staff_client.get(CHANGELIST, {"available": "yes"})) == {"sdxl-turbo"}
        assert "sdxl-turbo" not in listed(staff_client.get(CHANGELIST, {"available": "no"}))
    finally:
        remove("pytest-admin")


def test_search_finds_by_name_and_repo(staff_client):
    assert listed(staff_client.get(CHANGELIST, {"q": "Juggernaut"})) == {"juggernaut-xl-9"}
    assert listed(staff_client.get(CHANGELIST, {"q": "cagliostrolab"})) == {"animagine-xl-3-1"}


def test_bulk_disable_and_enable(staff_client):
    ids = list(Checkpoint.objects.filter(family="sd1").values_list("pk", flat=True))
    staff_client.post(CHANGELIST, {"action": "disable", "_selected_action": ids})
    assert not Checkpoint.objects.filter(pk__in=ids, enabled=True).exists()
    assert Checkpoint.objects.exclude(pk__in=ids).filter(enabled=False).count() == 0
    staff_client.post(CHANGELIST, {"action": "enable", "_selected_action": ids})
    assert Checkpoint.objects.filter(pk__in=ids, enabled=True).count() == len(ids)


def change_form_data(checkpoint: Checkpoint, **changes) -> dict:
    data = {
        "name": checkpoint.name,
        "slug": checkpoint.slug,
        "description": checkpoint.description,
        "family": checkpoint.family,
        "tags": [t.pk for t in checkpoint.tags.all()],
        "enabled": "on",
        "sort_order": checkpoint.sort_order,
        "source_kind": checkpoint.source_kind,
        "source": checkpoint.source,
        "revision": checkpoint.revision,
        "variant": checkpoint.variant,
        "dtype": checkpoint.dtype,
        "default_strength": checkpoint.default_strength,
        "default_steps": checkpoint.default_steps,
        "default_guidance": checkpoint.default_guidance,
        "max_side": checkpoint.max_side,
        "max_steps": checkpoint.max_steps,
        "allowed_sizes": "[]",
        "price_per_image": checkpoint.price_per_image,
        "test_runs-TOTAL_FORMS": "0",
        "test_runs-INITIAL_FORMS": "0",
        "test_runs-MIN_NUM_FORMS": "0",
        "test_runs-MAX_NUM_FORMS": "0",
    }
    data.update(changes)
    return data


def test_a_valid_edit_saves(staff_client):
    checkpoint = Checkpoint.objects.get(slug="sd15")
    url = reverse("admin:catalog_checkpoint_change", args=[checkpoint.pk])
    response = staff_client.post(url, change_form_data(checkpoint, price_per_image=2, default_steps=25))
    assert response.status_code == 302, response.context["adminform"].form.errors
    checkpoint.refresh_from_db()
    assert (checkpoint.price_per_image, checkpoint.default_steps) == (2, 25)


@pytest.mark.parametrize(
    "changes",
    [
        {"default_steps": 80},  # above max steps 50
        {"default_strength": 1.4},
        {"source": "just-a-name"},
        {"source_kind": "single_file", "source": "weights/model.ckpt"},
        {"allowed_sizes": "[[2048, 2048]]"},
    ],
)
def test_invalid_defaults_or_sources_are_rejected(staff_client, changes):
    checkpoint = Checkpoint.objects.get(slug="sd15")
    url = reverse("admin:catalog_checkpoint_change", args=[checkpoint.pk])
    response = staff_client.post(url, change_form_data(checkpoint, **changes))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    fresh = Checkpoint.objects.get(pk=checkpoint.pk)
    assert (fresh.default_steps, fresh.source) == (checkpoint.default_steps, checkpoint.source)


def test_inline_list_edits_are_validated_too(staff_client):
    checkpoint = Checkpoint.objects.get(slug="sd15")
    total = Checkpoint.objects.count()
    rows = list(Checkpoint.objects.order_by("sort_order", "name"))
    data = {"form-TOTAL_FORMS": str(total), "form-INITIAL_FORMS": str(total), "_save": "Save"}
    for i, row in enumerate(rows):
        data.update(
            {
                f"form-{i}-id": row.pk,
                f"form-{i}-price_per_image": row.price_per_image,
                f"form-{i}-default_strength": row.default_strength,
                f"form-{i}-default_steps": row.default_steps,
                f"form-{i}-default_guidance": row.default_guidance,
                f"form-{i}-max_steps": row.max_steps,
                f"form-{i}-max_side": row.max_side,
                f"form-{i}-sort_order": row.sort_order,
            }
        )
        if row.enabled:
            data[f"form-{i}-enabled"] = "on"
    index = rows.index(checkpoint)
    data[f"form-{index}-default_steps"] = 99
    response = staff_client.post(CHANGELIST, data)
    assert response.status_code == 200
    assert Checkpoint.objects.get(pk=checkpoint.pk).default_steps == checkpoint.default_steps
    data[f"form-{index}-default_steps"] = 40
    data[f"form-{index}-price_per_image"] = 5
    assert staff_client.post(CHANGELIST, data).status_code == 302
    fresh = Checkpoint.objects.get(pk=checkpoint.pk)
    assert (fresh.default_steps, fresh.price_per_image) == (40, 5)


def test_people_who_are_not_staff_cannot_manage_models(client, alice):
    client.force_login(alice)
    assert client.get(CHANGELIST).status_code == 302


def test_staff_manage_controlnets_beside_checkpoints(staff_client):
    from catalog.models import ControlNet
    from catalog.seeds import catalog_seed_controlnets
    from workers.heartbeat import publish, remove

    catalog_seed_controlnets()
    publish(worker_id="admin-test", serves=["sd15"], loaded=[], device="cpu", controls=["sd15-canny"])
    try:
        response = staff_client.get("/admin/catalog/controlnet/")
    finally:
        remove("admin-test")
    assert response.status_code == 200
    rows = {control.slug: control for control in response.context["cl"].result_list}
    assert set(rows) == set(ControlNet.objects.values_list("slug", flat=True)) >= {"sd15-canny", "sdxl-depth"}
    assert rows["sd15-canny"].is_available and not rows["sd15-depth"].is_available
    # A ControlNet of an architecture without ControlNet pipelines, or a single file, is refused.
    form = staff_client.get("/admin/catalog/controlnet/add/")
    assert form.status_code == 200
    refused = staff_client.post(
        "/admin/catalog/controlnet/add/",
        {
            "slug": "sd3-canny",
            "name": "SD3 canny",
            "family": "sd3",
            "kind": "canny",
            "source_kind": "single_file",
            "source": "x.safetensors",
            "cost_factor": "1.5",
            "sort_order": "1",
        },
    )
    assert refused.status_code == 200 and set(refused.context["adminform"].form.errors) == {"family", "source_kind"}
    assert not ControlNet.objects.filter(slug="sd3-canny").exists()
