"""The catalog in the admin: checkpoints (with availability from the
workers' heartbeats, enable and disable, test loads), ControlNets, LoRAs
and tags."""

from __future__ import annotations

import base64

from django.contrib import admin, messages
from django.db.models import BooleanField, Case, QuerySet, Value, When
from django.http import HttpRequest
from django.utils.html import format_html

from catalog.availability import available_controls, available_loras, available_slugs
from catalog.models import Checkpoint, CheckpointTestRun, ControlNet, Lora, Tag
from catalog.services import checkpoint_test_load, checkpoints_set_enabled


class AvailableFilter(admin.SimpleListFilter):
    title = "available (live worker)"
    parameter_name = "available"

    def lookups(self, request, model_admin):
        return [("yes", "Available"), ("no", "Unavailable")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(slug__in=available_slugs())
        if self.value() == "no":
            return queryset.exclude(slug__in=available_slugs())
        return queryset


class TestRunInline(admin.TabularInline):
    model = CheckpointTestRun
    fields = ["created_at", "status", "worker", "device", "load_seconds", "run_seconds", "error_kind", "error", "image"]
    readonly_fields = fields
    ordering = ["-created_at"]
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "test loads (newest first)"

    @admin.display(description="result")
    def image(self, run: CheckpointTestRun) -> str:
        if not run.result_png:
            return "—"
        data = base64.b64encode(bytes(run.result_png)).decode()
        return format_html('<img src="data:image/png;base64,{}" width="96" height="96" alt="test output">', data)


class AvailableAdmin(admin.ModelAdmin):
    """An entry whose "available" column comes from the live workers'
    heartbeats (`available_slugs`, read once per request and annotated, so
    the list can show and sort it)."""

    available_slugs = staticmethod(available_slugs)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        available = Case(
            When(slug__in=self.available_slugs(), then=Value(True)), default=Value(False), output_field=BooleanField()
        )
        return super().get_queryset(request).annotate(is_available=available)

    @admin.display(boolean=True, description="available", ordering="is_available")
    def available(self, entry) -> bool:
        return entry.is_available


@admin.register(ControlNet)
class ControlNetAdmin(AvailableAdmin):
    """ControlNets, managed like checkpoints: each is tied to a family and
    offered with the checkpoints of that family's architecture; "available"
    means a live worker has its weights."""

    list_display = ["name", "slug", "family", "kind", "cost_factor", "enabled", "available", "is_test", "sort_order"]
    list_editable = ["cost_factor", "enabled", "sort_order"]
    list_filter = ["family", "kind", "enabled", "is_test"]
    search_fields = ["name", "slug", "source", "description"]
    ordering = ["sort_order", "name"]

    available_slugs = staticmethod(available_controls)


@admin.register(Lora)
class LoraAdmin(AvailableAdmin):
    """LoRAs, managed like ControlNets: each is tied to a family and offered
    with the checkpoints of that family's architecture; "available" means a
    live worker has its file."""

    list_display = [
        "name",
        "slug",
        "family",
        "default_weight",
        "price_per_image",
        "enabled",
        "available",
        "is_test",
        "sort_order",
    ]
    list_editable = ["default_weight", "price_per_image", "enabled", "sort_order"]
    list_filter = ["family", "enabled", "is_test", "tags"]
    search_fields = ["name", "slug", "source", "description", "trigger_words"]
    filter_horizontal = ["tags"]
    ordering = ["sort_order", "name"]

    available_slugs = staticmethod(available_loras)


@admin.register(Checkpoint)
class CheckpointAdmin(AvailableAdmin):
    list_display = [
        "name",
        "slug",
        "family",
        "tag_list",
        "price_per_image",
        "default_strength",
        "default_steps",
        "default_guidance",
        "max_steps",
        "max_side",
        "enabled",
        "available",
        "sort_order",
    ]
    list_editable = [
        "price_per_image",
        "default_strength",
        "default_steps",
        "default_guidance",
        "max_steps",
        "max_side",
        "enabled",
        "sort_order",
    ]
    list_filter = ["family", "tags", "enabled", AvailableFilter, "is_test", "text_to_image", "inpainting"]
    search_fields = ["name", "slug", "source", "description"]
    ordering = ["sort_order", "name"]
    filter_horizontal = ["tags"]
    actions = ["enable", "disable", "test_load"]
    inlines = [TestRunInline]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "family", "tags", "enabled", "sort_order", "preview"]}),
        ("Modes", {"fields": ["text_to_image", "inpainting"]}),
        ("Weights", {"fields": ["source_kind", "source", "revision", "variant", "dtype", "is_test"]}),
        ("Defaults", {"fields": ["default_strength", "default_steps", "default_guidance", "default_scheduler"]}),
        ("Limits and price", {"fields": ["max_side", "max_steps", "allowed_sizes", "price_per_image"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tags")

    @admin.display(description="tags")
    def tag_list(self, checkpoint: Checkpoint) -> str:
        return ", ".join(tag.name for tag in checkpoint.tags.all())

    @admin.action(description="Enable selected checkpoints", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable selected checkpoints", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        self._set_enabled(request, queryset, enabled=False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Checkpoint], *, enabled: bool) -> None:
        count = checkpoints_set_enabled(checkpoints=queryset, enabled=enabled)
        verb = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{verb} {count} checkpoint(s).", messages.SUCCESS)

    @admin.action(description="Test load on a live worker", permissions=["change"])
    def test_load(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        for checkpoint in queryset:
            run = checkpoint_test_load(checkpoint=checkpoint, requested_by=request.user)
            if run.status == CheckpointTestRun.Status.FAILED:
                self.message_user(request, f"{checkpoint}: {run.error}", messages.ERROR)
            else:
                self.message_user(
                    request, f"{checkpoint}: test load queued; open the checkpoint to see the result.", messages.INFO
                )


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
