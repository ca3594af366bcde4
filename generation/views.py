from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from generation.availability import available_slugs
from generation.models import Checkpoint


@require_GET
def models_page(request: HttpRequest) -> HttpResponse:
    available = available_slugs()
    checkpoints = list(Checkpoint.objects.filter(enabled=True).prefetch_related("tags"))
    for checkpoint in checkpoints:
        checkpoint.available = checkpoint.slug in available
    return render(
        request,
        "generation/models.html",
        {"checkpoints": checkpoints, "has_test": any(c.is_test for c in checkpoints)},
    )
