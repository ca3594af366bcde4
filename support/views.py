"""Support chat over plain HTTP: the widget's polling fallback, and the
staff inbox. Thin: parse, call a service or a selector, render."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods
from django_ratelimit.core import is_ratelimited

from generation.errors import JobNotFound
from generation.selectors import job_for_user
from support.models import Conversation, Message
from support.selectors import conversation_of, inbox, messages_after, person_summary
from support.services import (
    CANNED_REPLIES,
    ChatError,
    conversation_assign,
    conversation_attach_job,
    conversation_open,
    conversation_set_status,
    mark_read,
    message_out,
    message_post,
    support_refund_job,
)
from support.visitors import (
    VISITOR_COOKIE,
    VISITOR_SESSION_KEY,
    visitor_cookie_set,
    visitor_hash,
    visitor_token_new,
)


@require_http_methods(["GET", "POST"])
def widget_messages(request: HttpRequest) -> JsonResponse:
    """GET ?after=<id>: the messages after that id. POST body, client_id
    (and job): send one. The same rules as the websocket. A visitor's first
    message starts their conversation: a new cookie, bound to this browser
    session, at most CHAT_NEW_CONVERSATION_RATE_LIMIT per client address."""
    token = request.COOKIES.get(VISITOR_COOKIE)
    if request.method == "GET":
        return _catch_up(request, conversation_of(user=request.user, visitor_token=token))
    new_token = None
    if not request.user.is_authenticated and conversation_of(user=None, visitor_token=token) is None:
        if _too_many_new_conversations(request):
            return _error(
                ChatError("rate_limited", "Too many new conversations from here; try again later.", status=429)
            )
        token = new_token = visitor_token_new()
    try:
        with transaction.atomic():  # a refused first message leaves no empty conversation behind
            conversation = conversation_open(user=request.user, visitor_token=token)
            if request.POST.get("job") and request.user.is_authenticated:
                conversation_attach_job(conversation=conversation, user=request.user, job_id=request.POST["job"])
            message, _ = message_post(
                conversation=conversation,
                sender=Message.Sender.PERSON,
                body=request.POST.get("body", ""),
                client_id=request.POST.get("client_id", ""),
                author=request.user if request.user.is_authenticated else None,
                ip=request.META.get("REMOTE_ADDR", ""),
            )
    except ChatError as error:
        return _error(error)
    response = JsonResponse({"type": "ack", "client_id": message.client_id or None, "id": message.id})
    if new_token:
        request.session[VISITOR_SESSION_KEY] = visitor_hash(new_token)
        visitor_cookie_set(response, new_token, secure=request.is_secure())
    return response


def _too_many_new_conversations(request: HttpRequest) -> bool:
    rate = settings.CHAT_NEW_CONVERSATION_RATE_LIMIT
    return is_ratelimited(request, group="chat-new-conversation", key="ip", rate=rate, increment=True)


def _error(error: ChatError) -> JsonResponse:
    return JsonResponse({"error": {"code": error.code, "message": error.message}}, status=error.status)


def _catch_up(request: HttpRequest, conversation: Conversation | None) -> JsonResponse:
    if conversation is None:
        return JsonResponse({"messages": []})
    after = request.GET.get("after", "0")
    found = messages_after(conversation=conversation, after_id=int(after) if after.isdigit() else 0)
    if found:
        mark_read(conversation=conversation, side="person", up_to=found[-1].id)
    return JsonResponse({"messages": [message_out(m) for m in found]})


@staff_member_required
@require_GET
def inbox_page(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "open")
    context = {"conversations": inbox(status=status), "status": status, "statuses": Conversation.Status.values}
    return render(request, "support/inbox.html", context)


@staff_member_required
@require_http_methods(["GET", "POST"])
def conversation_page(request: HttpRequest, conversation_id) -> HttpResponse:
    conversation = get_object_or_404(
        Conversation.objects.select_related("user", "job", "assigned_to"), id=conversation_id
    )
    if request.method == "POST":
        try:
            _staff_action(request, conversation)
        except ChatError as error:
            messages.error(request, error.message)
        return redirect("support_conversation", conversation_id=conversation.id)
    thread = list(conversation.messages.all())
    if thread:
        mark_read(conversation=conversation, side="staff", up_to=thread[-1].id)
    context = {"conversation": conversation, "thread": thread, "canned": CANNED_REPLIES}
    if conversation.user is not None:
        context.update(person_summary(user=conversation.user))
    return render(request, "support/conversation.html", context)


def _staff_action(request: HttpRequest, conversation: Conversation) -> None:
    action = request.POST.get("action")
    if action == "reply":
        message_post(
            conversation=conversation,
            sender=Message.Sender.STAFF,
            author=request.user,
            body=request.POST.get("body", ""),
            client_id=request.POST.get("client_id", ""),
        )
    elif action == "status":
        conversation_set_status(conversation=conversation, status=request.POST.get("status", ""))
    elif action == "assign":
        conversation_assign(conversation=conversation, staff=request.user)
    elif action == "refund":
        try:
            job = job_for_user(user=request.user, job_id=request.POST.get("job"))
        except JobNotFound:
            raise ChatError("not_refundable", "There is no such job.") from None
        support_refund_job(conversation=conversation, job=job, actor=request.user)
