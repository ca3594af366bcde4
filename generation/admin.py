from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from generation.models import BlockedTerm, ModerationFlag, WebhookDelivery
from generation.moderation import moderation_flags_review
from generation.webhooks import webhooks_resend


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Read-only: deliveries change through generation.webhooks; staff can
    only send one again."""

    list_display = [
        "webhook_id",
        "job",
        "url",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "updated_at",
    ]
    list_filter = ["status"]
    search_fields = ["webhook_id", "url", "job__id", "job__user__email"]
    list_select_related = ["job"]
    ordering = ["-created_at"]
    actions = ["resend"]
    readonly_fields = [
        "job",
        "url",
        "webhook_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "last_response",
        "last_error",
        "created_at",
        "updated_at",
        "delivered_at",
    ]
    # Not the payload: it is the job's JSON (its prompt), which staff see only
    # with generation.view_others_jobs, logged (the job page).
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Resend (same webhook id and body, one more attempt)", permissions=["change"])
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = webhooks_resend(deliveries=queryset)
        for delivery in queryset:
            self.log_change(request, delivery, "Resent the webhook.")
        self.message_user(request, f"Sending {count} webhook(s) again.", messages.SUCCESS)


@admin.register(BlockedTerm)
class BlockedTermAdmin(admin.ModelAdmin):
    """The prompt rules of the default check (generation.moderation): a
    change applies to the next submit."""

    list_display = ["term", "enabled", "note", "created_by", "created_at", "updated_at"]
    list_editable = ["enabled"]
    list_filter = ["enabled"]
    search_fields = ["term", "note"]
    fields = ["term", "enabled", "note", "created_by", "created_at", "updated_at"]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    def save_model(self, request: HttpRequest, obj: BlockedTerm, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class ReviewedFilter(admin.SimpleListFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def lookups(self, request, model_admin):
        return [("no", "To review"), ("yes", "Reviewed")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(reviewed_at=None)
        if self.value() == "yes":
            return queryset.exclude(reviewed_at=None)
        return queryset


@admin.register(ModerationFlag)
class ModerationFlagAdmin(admin.ModelAdmin):
    """The review list: refused prompts and flagged pictures (never stored).
    Read-only; staff can only mark flags reviewed."""

    list_display = ["created_at", "stage", "label", "score", "user", "job_link", "field", "reviewed_at"]
    list_filter = ["stage", ReviewedFilter, "label"]
    search_fields = ["label", "text", "user__email", "job__id", "job__prompt"]
    list_select_related = ["user", "job"]
    ordering = ["-created_at"]
    actions = ["mark_reviewed"]
    readonly_fields = [
        "created_at",
        "stage",
        "user",
        "job_link",
        "job_prompt",
        "field",
        "text",
        "label",
        "score",
        "image_index",
        "reviewed_at",
        "reviewed_by",
    ]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="job")
    def job_link(self, flag: ModerationFlag) -> str:
        # The job's page checks generation.view_others_jobs and logs the look.
        if flag.job_id is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("job", args=[flag.job_id]), flag.job_id)

    @admin.display(description="job's prompt")
    def job_prompt(self, flag: ModerationFlag) -> str:
        return flag.job.prompt if flag.job_id else "—"

    @admin.action(description="Mark selected flags reviewed", permissions=["change"])
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[ModerationFlag]) -> None:
        flags = list(queryset.filter(reviewed_at=None))
        count = moderation_flags_review(flags=queryset, by=request.user)
        for flag in flags:
            self.log_change(request, flag, "Marked reviewed.")
        self.message_user(request, f"Marked {count} flag(s) reviewed.", messages.SUCCESS)
