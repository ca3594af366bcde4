"""Moving the catalog out of generation loses no row: a database in the old
layout (the catalog's tables in the generation app, jobs pointing at them)
migrates to the new one, tags, foreign keys, permissions and the admin's
history included."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

OLD = [
    ("generation", "0017_hires"),
    ("contenttypes", "0002_remove_content_type_name"),
    ("auth", "0012_alter_user_first_name_max_length"),
    ("admin", "0003_logentry_add_action_flag_choices"),
]
NEW = [("catalog", "0002_rename_tables")]
MOVED = ("tag", "checkpoint", "controlnet", "lora", "checkpointtestrun")


@pytest.fixture
def old_layout(migrator):
    """The database as the previous release left it: a catalog, a job on it,
    a staff grant and an admin history entry."""
    apps = migrator.apply_initial_migration(OLD).apps
    user = apps.get_model("accounts", "User").objects.create(username="ann", email="ann@example.com")
    Tag = apps.get_model("generation", "Tag")
    Checkpoint = apps.get_model("generation", "Checkpoint")
    ControlNet = apps.get_model("generation", "ControlNet")
    Lora = apps.get_model("generation", "Lora")
    photo = Tag.objects.create(slug="photoreal", name="Photoreal")
    checkpoint = Checkpoint.objects.create(
        slug="sd15",
        name="SD 1.5",
        family="sd1",
        source="org/sd15",
        default_strength=0.6,
        default_steps=20,
        default_guidance=7.0,
        price_per_image=2,
        default_scheduler="euler_a",
    )
    checkpoint.tags.add(photo)
    control = ControlNet.objects.create(slug="canny", name="Canny", family="sd1", kind="canny", source="org/canny")
    lora = Lora.objects.create(slug="ink", name="Ink", family="sd1", source="loras/ink.safetensors", price_per_image=1)
    lora.tags.add(photo)
    apps.get_model("generation", "CheckpointTestRun").objects.create(checkpoint=checkpoint, requested_by=user)
    job = apps.get_model("generation", "Job").objects.create(
        user=user,
        checkpoint=checkpoint,
        mode="controlnet",
        controlnet=control,
        control_image="controls/1/x.png",
        prompt="a house",
        strength=1.0,
        steps=20,
        guidance_scale=7.0,
        seed=1,
        num_images=1,
        width=512,
        height=512,
        credits_held=3,
        loras=[{"slug": "ink", "weight": 0.5}],
    )
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    types = {model: ContentType.objects.get_or_create(app_label="generation", model=model)[0] for model in MOVED}
    grant = Permission.objects.get_or_create(
        content_type=types["checkpoint"], codename="change_checkpoint", defaults={"name": "Can change checkpoint"}
    )[0]
    apps.get_model("auth", "Group").objects.create(name="catalog staff").permissions.add(grant)
    # An earlier, partial migrate may already have made the catalog's own row.
    ContentType.objects.create(app_label="catalog", model="lora")
    apps.get_model("admin", "LogEntry").objects.create(
        user=user, content_type=types["checkpoint"], object_id=str(checkpoint.id), object_repr="SD 1.5", action_flag=2
    )
    return {"checkpoint": checkpoint.id, "control": control.id, "lora": lora.id, "job": job.id, "types": types}


def test_the_catalog_moves_to_its_app_without_losing_a_row(migrator, old_layout):
    apps = migrator.apply_tested_migration(NEW).apps
    Checkpoint = apps.get_model("catalog", "Checkpoint")
    Lora = apps.get_model("catalog", "Lora")
    Job = apps.get_model("generation", "Job")

    checkpoint = Checkpoint.objects.get(id=old_layout["checkpoint"])
    assert (checkpoint.slug, checkpoint.price_per_image, checkpoint.default_scheduler) == ("sd15", 2, "euler_a")
    assert [tag.slug for tag in checkpoint.tags.all()] == ["photoreal"]
    assert [tag.slug for tag in Lora.objects.get(id=old_layout["lora"]).tags.all()] == ["photoreal"]
    assert checkpoint.test_runs.count() == 1
    job = Job.objects.get(id=old_layout["job"])
    assert (job.checkpoint.slug, job.controlnet.slug, job.loras) == ("sd15", "canny", [{"slug": "ink", "weight": 0.5}])

    tables = set(connection.introspection.table_names())
    assert {f"catalog_{model}" for model in MOVED} | {"catalog_checkpoint_tags", "catalog_lora_tags"} <= tables
    assert not {f"generation_{model}" for model in MOVED} & tables

    # Constraints came along: slugs stay unique, a job's checkpoint is protected.
    with pytest.raises(IntegrityError), transaction.atomic():
        Checkpoint.objects.create(
            slug="sd15", name="again", family="sd1", source="o/x", default_strength=0.5, default_steps=4,
            default_guidance=7, price_per_image=1,
        )  # fmt: skip
    with pytest.raises(Exception), transaction.atomic():  # noqa: B017 (ProtectedError or IntegrityError)
        checkpoint.delete()
    newest = Checkpoint.objects.create(
        slug="new", name="new", family="sd1", source="o/y", default_strength=0.5, default_steps=4,
        default_guidance=7, price_per_image=1,
    )  # fmt: skip
    assert newest.id > old_layout["checkpoint"]

    # Permissions and the admin's history follow the models' content types.
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, old in old_layout["types"].items():
        assert (ContentType.objects.get(id=old.id).app_label, model) == ("catalog", model)
    assert not ContentType.objects.filter(app_label="generation", model__in=MOVED).exists()
    group = apps.get_model("auth", "Group").objects.get(name="catalog staff")
    assert [(p.content_type.app_label, p.codename) for p in group.permissions.all()] == [
        ("catalog", "change_checkpoint")
    ]
    entry = apps.get_model("admin", "LogEntry").objects.get()
    assert (entry.content_type.app_label, entry.content_type.model) == ("catalog", "checkpoint")
