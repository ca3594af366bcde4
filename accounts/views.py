from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from billing.selectors import debts_of, entries_of, standing_of

LEDGER_PAGE_SIZE = 25


@require_GET
@login_required
def account(request: HttpRequest) -> HttpResponse:
    return _account_page(request)


@require_POST
@login_required
def api_key_new(request: HttpRequest) -> HttpResponse:
    _, secret = api_key_create(user=request.user, name=request.POST.get("name", ""))
    # Rendered, not redirected: the key is shown this once and never stored.
    return _account_page(request, new_key=secret)


@require_POST
@login_required
def api_key_delete(request: HttpRequest, key_id: int) -> HttpResponse:
    if api_key_revoke(user=request.user, key_id=key_id):
        messages.success(request, "The key was revoked; requests with it now get 401.")
    return redirect("account")


def _account_page(request: HttpRequest, *, new_key: str | None = None) -> HttpResponse:
    page = Paginator(entries_of(user=request.user), LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
    keys = ApiKey.objects.filter(user=request.user, revoked_at__isnull=True)
    standing = standing_of(user=request.user)
    context = {
        "balance": standing.balance,
        "standing": standing,
        "debts": debts_of(user=request.user) if standing.debt else [],
        "page": page,
        "api_keys": keys,
        "new_key": new_key,
    }
    return render(request, "accounts/account.html", context)
