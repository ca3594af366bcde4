"""Server-rendered pages for generation. Thin: parse, call a service, render.
Live updates come from small per-page scripts polling the JSON API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from pydantic import ValidationError

from billing.errors import InsufficientCredits, SpendingBlocked
from billing.ledger import balance_of
from generation.availability import available_slugs
from generation.errors import GenerationError, JobNotFound
from generation.models import Checkpoint, Job
from generation.params import Img2ImgIn
from generation.services import job_again, job_cancel, job_for_user, job_submit, queue_position

HISTORY_PAGE_SIZE = 24
PRESETS = [("Subtle", 0.3), ("Balanced", 0.6), ("Dramatic", 0.85)]


@require_GET
def models_page(request: HttpRequest) -> HttpResponse:
    checkpoints = _catalog()
    return render(
        request,
        "generation/models.html",
        {"checkpoints": checkpoints, "has_test": any(c.is_test for c in checkpoints)},
    )


@require_GET
def model_preview(request: HttpRequest, slug: str) -> FileResponse:
    """A catalog preview picture (public, like the catalog itself)."""
    checkpoint = Checkpoint.objects.filter(slug=slug, enabled=True).exclude(preview="").first()
    if checkpoint is None:
        raise Http404
    response = FileResponse(checkpoint.preview.open("rb"))
    response["Cache-Control"] = "public, max-age=3600"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest) -> HttpResponse:
    parent = _parent(request, request.POST.get("parent_job") or request.GET.get("parent"))
    errors: dict[str, str] = {}
    message, status = "", 200
    if request.method == "POST":
        try:
            data = Img2ImgIn.model_validate({k: v for k, v in request.POST.items() if v != ""})
            job = job_submit(user=request.user, data=data, upload=request.FILES.get("image"))
            return redirect("job", job_id=job.id)
        except ValidationError as exc:
            errors = {str(e["loc"][-1]): e["msg"] for e in exc.errors()}
            message, status = "Some fields are not valid.", 400
        except GenerationError as exc:
            errors, message, status = exc.fields, exc.message, exc.status
        except InsufficientCredits as exc:
            message, status = f"This needs {exc.needed} credits; you have {exc.available}.", 402
            errors = {"credits": "insufficient"}
        except SpendingBlocked:
            message, status = "Spending is paused on this account; contact support.", 402
    checkpoints = _catalog()
    values = request.POST if request.method == "POST" else _prefill(parent)
    if not values.get("model"):
        first = next((c.slug for c in checkpoints if c.available), "")
        values = {**values, "model": first}
    context = {
        "checkpoints": checkpoints,
        "balance": balance_of(user=request.user),
        "presets": PRESETS,
        "parent": parent,
        "values": values,
        "errors": errors,
        "error_message": message,
    }
    return render(request, "generation/create.html", context, status=status)


@login_required
@require_GET
def job_page(request: HttpRequest, job_id) -> HttpResponse:
    job = _job(request, job_id)
    lineage = []
    ancestor = job.parent
    while ancestor is not None and len(lineage) < 20:
        lineage.insert(0, ancestor)
        ancestor = ancestor.parent
    return render(
        request,
        "generation/job.html",
        {
            "job": job,
            "images": list(job.images.all()),
            "lineage": lineage,
            "children": list(job.children.filter(user=job.user).order_by("created_at")),
            "queue_position": queue_position(job),
        },
    )


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, job_id) -> HttpResponse:
    try:
        job_cancel(user=request.user, job_id=job_id)
        messages.success(request, "Canceled. The held credits are back in your balance.")
    except JobNotFound:
        raise Http404 from None
    except GenerationError as exc:
        messages.warning(request, exc.message)
    return redirect("job", job_id=job_id)


@login_required
@require_POST
def job_again_view(request: HttpRequest, job_id) -> HttpResponse:
    try:
        job = job_again(user=request.user, job_id=job_id)
    except JobNotFound:
        raise Http404 from None
    except (GenerationError, InsufficientCredits, SpendingBlocked) as exc:
        messages.error(request, getattr(exc, "message", str(exc)))
        return redirect("job", job_id=job_id)
    return redirect("job", job_id=job.id)


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    jobs = Job.objects.filter(user=request.user).select_related("checkpoint").prefetch_related("images")
    model, status = request.GET.get("model", ""), request.GET.get("status", "")
    if model:
        jobs = jobs.filter(checkpoint__slug=model)
    if status in Job.Status.values:
        jobs = jobs.filter(status=status)
    page = Paginator(jobs, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "generation/history.html",
        {
            "page": page,
            "checkpoints": Checkpoint.objects.filter(jobs__user=request.user).distinct(),
            "statuses": Job.Status.values,
            "model": model,
            "status": status,
        },
    )


def _catalog() -> list[Checkpoint]:
    available = available_slugs()
    checkpoints = list(Checkpoint.objects.filter(enabled=True).prefetch_related("tags"))
    for checkpoint in checkpoints:
        checkpoint.available = checkpoint.slug in available
    return checkpoints


def _job(request: HttpRequest, job_id) -> Job:
    try:
        return job_for_user(user=request.user, job_id=job_id)
    except JobNotFound:
        raise Http404 from None


def _parent(request: HttpRequest, job_id) -> Job | None:
    if not job_id:
        return None
    try:
        return job_for_user(user=request.user, job_id=job_id)
    except (JobNotFound, ValueError, DjangoValidationError):
        raise Http404 from None


def _prefill(parent: Job | None) -> dict:
    if parent is None:
        return {}
    return {
        "model": parent.checkpoint.slug,
        "prompt": parent.prompt,
        "negative_prompt": parent.negative_prompt,
        "strength": parent.strength,
        "steps": parent.steps,
        "guidance_scale": parent.guidance_scale,
        "num_images": parent.num_images,
        "parent_job": parent.id,
    }
