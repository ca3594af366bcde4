"""Support chat rules. Persist first, then broadcast: a message is a row
(server id; the client's id unique per conversation, so a resend is not a
duplicate); the channel layer only rings the bell and clients catch up by
the last id they have (support.selectors.messages_after)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.admin.models import ADDITION, LogEntry
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_ratelimit.core import is_ratelimited

from billing.ledger import credits_grant
from billing.models import LedgerEntry
from generation.selectors import jobs_of
from support.models import Conversation, Message
from support.selectors import conversation_of
from support.visitors import visitor_hash

log = logging.getLogger(__name__)
MAX_CHARS = 2000
CANNED_REPLIES = [
    "Thanks for writing! Let me look into this for you.",
    "A failed or canceled job never costs credits: the hold is released automatically.",
    "Could you send the job link (or its id) so I can check what happened?",
    "I've refunded that job; you'll see the credits in your balance now.",
]


# How recent an anonymous thread must be to follow its visitor into an account.
VISITOR_CLAIM_WINDOW = timedelta(hours=1)


class ChatError(Exception):
    """A message or action that cannot be taken, with what to tell the person."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def conversation_group(conversation_id) -> str:
    return f"support.{conversation_id}"


# --- Conversations ---------------------------------------------------------------------


def conversation_open(*, user, visitor_token: str | None) -> Conversation | None:
    """The person's (or visitor's) one conversation, created on first use.
    None for a visitor without a valid token."""
    existing = conversation_of(user=user, visitor_token=visitor_token)
    if existing is not None:
        return existing
    if user is not None and user.is_authenticated:
        return Conversation.objects.create(user=user)
    digest = visitor_hash(visitor_token)
    return None if digest is None else Conversation.objects.create(visitor_hash=digest)


def conversation_claim(*, user, visitor_token: str | None, session_hash: str | None) -> None:
    """On sign-in: the visitor's conversation moves to the account (merged
    into the account's own conversation if it has one), but only when this
    browser session started it (`session_hash`, kept in the session beside
    the cookie) and its last message is recent (VISITOR_CLAIM_WINDOW): a
    cookie left behind by someone else is not enough, nor an old thread on a
    shared browser whose session was never closed."""
    digest = visitor_hash(visitor_token)
    if digest is None or digest != session_hash:
        return
    with transaction.atomic():
        anonymous = Conversation.objects.select_for_update().filter(visitor_hash=digest, user__isnull=True).first()
        if anonymous is None:
            return
        last = anonymous.messages.order_by("-created_at").values_list("created_at", flat=True).first()
        if last is not None and last < timezone.now() - VISITOR_CLAIM_WINDOW:
            return
        own = Conversation.objects.filter(user=user).first()
        if own is None:
            anonymous.user, anonymous.visitor_hash = user, ""
            anonymous.save(update_fields=["user", "visitor_hash"])
        else:
            Message.objects.filter(conversation=anonymous).update(conversation=own)
            anonymous.delete()


def conversation_attach_job(*, conversation: Conversation, user, job_id: str) -> None:
    """ "Ask about this job": link the person's own job to the conversation."""
    try:
        job_uuid = uuid.UUID(str(job_id))
    except ValueError:
        return
    job = jobs_of(user=user).filter(id=job_uuid).first()
    if job is not None:
        Conversation.objects.filter(id=conversation.id).update(job=job)


def conversation_set_status(*, conversation: Conversation, status: str) -> None:
    if status not in Conversation.Status.values:
        raise ChatError("bad_status", "Unknown status.")
    Conversation.objects.filter(id=conversation.id).update(status=status)


def conversation_assign(*, conversation: Conversation, staff) -> None:
    Conversation.objects.filter(id=conversation.id).update(assigned_to=staff)


# --- Messages --------------------------------------------------------------------------


def message_post(
    *, conversation: Conversation, sender: str, body: str, client_id: str = "", author=None, ip: str = ""
) -> tuple[Message, bool]:
    """Store a message (once per client id) and then ring the bell. Returns
    the message and whether it is new."""
    body = (body or "").strip()
    if not body:
        raise ChatError("empty", "Write a message first.")
    if _unstorable(body) or _unstorable(client_id or ""):
        raise ChatError("invalid_text", "Messages cannot contain NUL characters.")
    if len(body) > MAX_CHARS:
        raise ChatError("too_long", f"Messages are at most {MAX_CHARS} characters.")
    client_id = (client_id or "")[:64]
    if client_id:
        existing = Message.objects.filter(conversation=conversation, client_id=client_id).first()
        if existing is not None:
            return existing, False
    if sender == Message.Sender.PERSON and _too_fast(conversation, ip):
        raise ChatError("rate_limited", "You are sending messages too fast; wait a moment.", status=429)
    try:
        with transaction.atomic():
            message = Message.objects.create(
                conversation=conversation, sender=sender, author=author, body=body, client_id=client_id
            )
            updates: dict = {"last_message_at": message.created_at}
            if sender == Message.Sender.PERSON:
                updates.update(status=Conversation.Status.OPEN, person_read_id=message.id)  # snoozed reopens
            elif sender == Message.Sender.STAFF:
                updates["staff_read_id"] = message.id
            Conversation.objects.filter(id=conversation.id).update(**updates)
            transaction.on_commit(lambda: _ring(conversation.id, message))
    except IntegrityError:  # the same client id, sent twice at once
        return Message.objects.get(conversation=conversation, client_id=client_id), False
    return message, True


def mark_read(*, conversation: Conversation, side: str, up_to: int) -> None:
    field = "person_read_id" if side == "person" else "staff_read_id"
    Conversation.objects.filter(id=conversation.id, **{f"{field}__lt": up_to}).update(**{field: up_to})


def message_out(message: Message) -> dict:
    """A message as the widget, the inbox and the websocket see it."""
    return {
        "id": message.id,
        "sender": message.sender,
        "body": message.body,
        "client_id": message.client_id or None,
        "created_at": message.created_at.isoformat(),
    }


def _unstorable(text: str) -> bool:
    """A NUL or a lone surrogate: PostgreSQL cannot store it (the websocket
    gets here without the HTTP middleware that refuses it up front)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in text


def _too_fast(conversation: Conversation, ip: str) -> bool:
    """Counts one message against the person's limit and their address's."""
    who = f"user:{conversation.user_id}" if conversation.user_id else f"conv:{conversation.id}"
    if _limited("chat", who, settings.CHAT_RATE_LIMIT):
        return True
    return bool(ip) and _limited("chat-ip", ip, settings.CHAT_IP_RATE_LIMIT)


def _limited(group: str, value: str, rate: str) -> bool:
    return is_ratelimited(None, group=group, key=lambda _group, _request: value, rate=rate, increment=True)


def _ring(conversation_id, message: Message) -> None:
    payload = {
        "type": "support.event",
        "message": {"type": "message", "message": message_out(message), "conversation": str(conversation_id)},
    }
    try:
        async_to_sync(get_channel_layer().group_send)(conversation_group(conversation_id), payload)
    except Exception:
        log.warning("support broadcast failed; clients catch up on reconnect", exc_info=True)


# --- Staff -----------------------------------------------------------------------------


def support_refund_job(*, conversation: Conversation, job, actor) -> Message:
    """Give back what a job cost: one ledger entry however often it is
    clicked, a system message in the thread and a line in the admin log.
    Giving credits needs billing's permission, not staff status alone."""
    if not actor.has_perm("billing.adjust_credits"):
        raise ChatError("forbidden", "Refunding needs the permission to grant credits.", status=403)
    if job.user_id != conversation.user_id or not job.credits_charged:
        raise ChatError("not_refundable", "Only a charged job of this person can be refunded.")
    with transaction.atomic():
        entry = credits_grant(
            user=job.user,
            amount=job.credits_charged,
            ref=f"support-refund:job:{job.id}",
            kind=LedgerEntry.Kind.REFUND,
            actor=actor,
            memo=f"Support refund of job {job.id}",
        )
        message, posted = message_post(
            conversation=conversation,
            sender=Message.Sender.SYSTEM,
            client_id=f"refund:{job.id}",
            body=f"{job.credits_charged} credits for job {job.id} were refunded.",
        )
        if posted:  # the first click; a repeat changes nothing and logs nothing
            LogEntry.objects.log_actions(
                user_id=actor.pk,
                queryset=[entry],
                action_flag=ADDITION,
                change_message=f"Support refund of {job.credits_charged} credits for job {job.id}.",
                single_object=True,
            )
    return message


def remind_unread() -> int:
    """Email people about staff replies they have not read for a while.
    Each reply is emailed at most once (a conditional update claims it)."""
    cutoff = timezone.now() - timedelta(seconds=settings.CHAT_EMAIL_AFTER)
    sent = 0
    pending = Message.objects.filter(
        sender=Message.Sender.STAFF, emailed_at__isnull=True, created_at__lt=cutoff, conversation__user__isnull=False
    ).select_related("conversation__user")
    for message in pending:
        conversation = message.conversation
        if message.id <= conversation.person_read_id:
            Message.objects.filter(id=message.id).update(emailed_at=timezone.now())
            continue
        if Message.objects.filter(id=message.id, emailed_at__isnull=True).update(emailed_at=timezone.now()):
            send_mail(
                "You have a reply from support",
                f"{message.body}\n\nReply on the site: it keeps the thread.",
                None,
                [conversation.user.email],
            )
            sent += 1
    return sent
