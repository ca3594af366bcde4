from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.ledger import balance_of, entries_of

LEDGER_PAGE_SIZE = 25


@require_GET
@login_required
def account(request: HttpRequest) -> HttpResponse:
    page = Paginator(entries_of(user=request.user), LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "accounts/account.html",
        {"balance": balance_of(user=request.user), "page": page},
    )
