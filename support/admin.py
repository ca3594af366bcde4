"""Conversations in the admin, read-only: staff answer in the inbox
(/support/inbox/), where every change goes through support.services."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from support.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["created_at", "sender", "author", "body", "emailed_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "assigned_to", "message_count", "last_message_at", "inbox_link"]
    list_filter = ["status"]
    search_fields = ["user__email", "messages__body"]
    list_select_related = ["user", "assigned_to"]
    readonly_fields = ["user", "visitor_hash", "status", "assigned_to", "job", "last_message_at", "created_at"]
    exclude = ["person_read_id", "staff_read_id"]
    inlines = [MessageInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_total=Count("messages"))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="messages", ordering="message_total")
    def message_count(self, conversation: Conversation) -> int:
        return conversation.message_total

    @admin.display(description="")
    def inbox_link(self, conversation: Conversation) -> str:
        return format_html(
            '<a href="{}">Open in the inbox</a>', reverse("support_conversation", args=[conversation.id])
        )
