"""Site pages: home and pricing, and the liveness check."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors import packs_for_sale
from billing.stripe_api import payments_enabled
from generation.selectors import checkpoints_priced


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/home.html")


@require_GET
def pricing(request: HttpRequest) -> HttpResponse:
    """Credit packs, and what a picture costs on each model."""
    context = {"packs": packs_for_sale(), "payments_enabled": payments_enabled(), "checkpoints": checkpoints_priced()}
    return render(request, "portal/pricing.html", context)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: the process answers and the database too."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
