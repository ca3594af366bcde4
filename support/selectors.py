"""Reads of the support chat. Each is one query (or a fixed few), with
unread counts annotated rather than counted per conversation."""

from __future__ import annotations

from django.db.models import Count, F, Q, QuerySet

from billing.selectors import balance_of, orders_of, refunds_of
from generation.selectors import jobs_of
from support.models import Conversation, Message
from support.visitors import visitor_hash

INBOX_SIZE = 100
CATCH_UP_LIMIT = 500
RECENT_ORDERS = 5
RECENT_JOBS = 10


def _of(*, user, visitor_token: str | None) -> QuerySet[Conversation] | None:
    if user is not None and user.is_authenticated:
        return Conversation.objects.filter(user=user)
    digest = visitor_hash(visitor_token)
    if digest is None:
        return None
    return Conversation.objects.filter(visitor_hash=digest, user__isnull=True)


def conversation_of(*, user, visitor_token: str | None) -> Conversation | None:
    """The person's (or visitor's) one conversation, if they have started it."""
    conversations = _of(user=user, visitor_token=visitor_token)
    return None if conversations is None else conversations.first()


def unread_for_person(*, user, visitor_token: str | None) -> int:
    """Staff and system messages the person has not read yet (the widget's
    badge): one query, none for a visitor without a cookie."""
    conversations = _of(user=user, visitor_token=visitor_token)
    if conversations is None:
        return 0
    not_theirs = [Message.Sender.STAFF, Message.Sender.SYSTEM]
    unread = Count("messages", filter=Q(messages__id__gt=F("person_read_id"), messages__sender__in=not_theirs))
    return conversations.annotate(unread=unread).values_list("unread", flat=True).first() or 0


def messages_after(*, conversation: Conversation, after_id: int = 0) -> list[Message]:
    return list(conversation.messages.filter(id__gt=max(0, after_id)).order_by("id")[:CATCH_UP_LIMIT])


def inbox(*, status: str) -> list[Conversation]:
    """Conversations for the staff inbox, newest activity first, each with
    `unread` (the person's messages staff have not read)."""
    unread = Count("messages", filter=Q(messages__id__gt=F("staff_read_id"), messages__sender=Message.Sender.PERSON))
    conversations = (
        Conversation.objects.select_related("user", "assigned_to").exclude(last_message_at=None).annotate(unread=unread)
    )
    if status in Conversation.Status.values:
        conversations = conversations.filter(status=status)
    return list(conversations.order_by("-last_message_at")[:INBOX_SIZE])


def person_summary(*, user) -> dict:
    """What staff see beside a conversation: the person's balance, recent
    purchases, recent jobs (with errors) and previous refunds."""
    return {
        "balance": balance_of(user=user),
        "orders": list(orders_of(user=user)[:RECENT_ORDERS]),
        "jobs": list(jobs_of(user=user)[:RECENT_JOBS]),
        "refunds": refunds_of(user=user),
    }
