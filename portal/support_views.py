"""Support chat over plain HTTP: the widget's polling fallback, and the
staff inbox."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from billing.ledger import balance_of
from billing.models import LedgerEntry, Order
from generation.models import Job
from portal.models import Conversation, Message
from portal.support import (
    CANNED_REPLIES,
    VISITOR_COOKIE,
    ChatError,
    conversation_assign,
    conversation_attach_job,
    conversation_for,
    conversation_set_status,
    mark_read,
    message_out,
    message_post,
    messages_after,
    support_refund_job,
    visitor_token_new,
)

INBOX_SIZE = 100


@require_http_methods(["GET", "POST"])
def widget_messages(request: HttpRequest) -> JsonResponse:
    """GET ?after=<id>: the messages after that id. POST body, client_id
    (and job): send one. The same rules as the websocket."""
    token = request.COOKIES.get(VISITOR_COOKIE)
    new_token = None
    if not request.user.is_authenticated and conversation_for(user=None, visitor_token=token) is None:
        if request.method == "GET":
            return JsonResponse({"messages": []})
        token = new_token = visitor_token_new()
    conversation = conversation_for(user=request.user, visitor_token=token, create=request.method == "POST")
    if request.method == "POST":
        if request.POST.get("job") and request.user.is_authenticated:
            conversation_attach_job(conversation=conversation, user=request.user, job_id=request.POST["job"])
        try:
            message, _ = message_post(
                conversation=conversation,
                sender=Message.Sender.PERSON,
                body=request.POST.get("body", ""),
                client_id=request.POST.get("client_id", ""),
                author=request.user if request.user.is_authenticated else None,
                ip=request.META.get("REMOTE_ADDR", ""),
            )
        except ChatError as error:
            return JsonResponse(
                {"error": {"code": error.code, "message": error.message}},
                status=429 if error.code == "rate_limited" else 400,
            )
        response = JsonResponse({"type": "ack", "client_id": message.client_id or None, "id": message.id})
    else:
        after_text = request.GET.get("after", "0")
        after = int(after_text) if after_text.isdigit() else 0
        found = messages_after(conversation=conversation, after_id=after) if conversation else []
        if found and conversation is not None:
            mark_read(conversation=conversation, side="person", up_to=found[-1].id)
        response = JsonResponse({"messages": [message_out(m) for m in found]})
    if new_token:
        response.set_cookie(
            VISITOR_COOKIE, new_token, max_age=180 * 86400, httponly=True, samesite="Lax", secure=request.is_secure()
        )
    return response


@staff_member_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "open")
    conversations = Conversation.objects.select_related("user", "assigned_to").exclude(last_message_at=None)
    if status in Conversation.Status.values:
        conversations = conversations.filter(status=status)
    rows = list(conversations.order_by("-last_message_at")[:INBOX_SIZE])
    for row in rows:
        row.unread = row.messages.filter(id__gt=row.staff_read_id, sender="person").count()
    return render(
        request, "support/inbox.html", {"conversations": rows, "status": status, "statuses": Conversation.Status.values}
    )


@staff_member_required
@require_http_methods(["GET", "POST"])
def inbox_conversation(request: HttpRequest, conversation_id) -> HttpResponse:
    conversation = get_object_or_404(Conversation.objects.select_related("user", "job"), id=conversation_id)
    if request.method == "POST":
        action = request.POST.get("action")
        try:
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
                job = get_object_or_404(Job, id=request.POST.get("job"))
                support_refund_job(conversation=conversation, job=job, actor=request.user)
        except ChatError as error:
            messages.error(request, error.message)
        return redirect("support_conversation", conversation_id=conversation.id)
    thread = list(conversation.messages.all())
    if thread:
        mark_read(conversation=conversation, side="staff", up_to=thread[-1].id)
    user = conversation.user
    context = {"conversation": conversation, "thread": thread, "canned": CANNED_REPLIES}
    if user is not None:
        context.update(
            balance=balance_of(user=user),
            orders=Order.objects.filter(user=user).select_related("pack")[:5],
            jobs=Job.objects.filter(user=user).select_related("checkpoint")[:10],
            refunds=LedgerEntry.objects.filter(account__user=user, kind__in=["refund", "reversal"])[:10],
        )
    return render(request, "support/conversation.html", context)
