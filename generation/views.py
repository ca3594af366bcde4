"""Server-rendered pages for generation. Thin: parse, call a service or a
selector, render. The job page updates itself over its websocket
(generation.consumers) and falls back to polling the JSON API."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.selectors import balance_of
from catalog.limits import MIN_SIDE, SIZE_MULTIPLE
from catalog.models import Checkpoint
from catalog.modes import OFFERED, Mode
from catalog.samplers import SAMPLERS
from generation.errors import PUBLIC_ERRORS, InvalidParams, JobNotFound, public_error
from generation.estimates import status_snapshot, wait_label
from generation.limits import WEBHOOK_URL_MAX
from generation.models import Job
from generation.params import FULL_STRENGTH, LORAS_MAX_CHARS, MODE_RULES, SUBMIT_FORMS, JobParams, size_presets
from generation.schemas import JobOut, job_out
from generation.selectors import (
    checkpoints_for_catalog,
    checkpoints_used_by,
    job_children,
    job_for_user,
    job_history,
    job_lineage,
    job_owned_by,
    jobs_shown,
    preprocess_choices,
    queue_position,
)
from generation.services import job_again, job_cancel, job_submit, job_viewed
from generation.webhooks import webhook_secret_rotate

HISTORY_PAGE_SIZE = 24
PRESETS = [("Subtle", 0.3), ("Balanced", 0.6), ("Dramatic", 0.85)]


@require_GET
def models_page(request: HttpRequest) -> HttpResponse:
    checkpoints = checkpoints_for_catalog()
    context = {"checkpoints": checkpoints, "has_test": any(c.is_test for c in checkpoints)}
    return render(request, "generation/models.html", context)


@require_GET
def model_preview(request: HttpRequest, slug: str) -> FileResponse:
    """A catalog preview picture (public, like the catalog itself)."""
    checkpoint = Checkpoint.objects.filter(slug=slug, enabled=True).exclude(preview="").first()
    if checkpoint is None:
        raise Http404
    response = FileResponse(checkpoint.preview.open("rb"))
    response["Cache-Control"] = "public, max-age=3600"
    return response


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


@login_required
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest) -> HttpResponse:
    parent = _job_or_404(request, request.POST.get("parent_job") or request.GET.get("parent"), owned=True)
    errors: dict[str, str] = {}
    message, status = "", 200
    mode = request.POST.get("mode") or request.GET.get("mode") or Mode.IMG2IMG
    if mode not in OFFERED:
        mode = Mode.IMG2IMG
    if request.method == "POST":
        try:
            # Text to image: the picture field is hidden and its file, if
            # one was chosen before switching, not used. Inpainting: the
            # mask is the editor's export (static/js/mask-editor.js).
            # ControlNet: the picture only when asked for (its image to
            # image variant), and the control picture.
            rules = MODE_RULES[mode]
            picture = rules.picture == "required" or (rules.picture == "optional" and request.POST.get("use_picture"))
            upload = request.FILES.get("image") if picture else None
            if rules.picture == "optional" and picture and upload is None:
                raise InvalidParams({"image": "Choose your picture, or untick “Also start from a picture of mine”."})
            mask_upload = request.FILES.get("mask") if "mask" in rules.files else None
            control_upload = request.FILES.get("control_image") if "control_image" in rules.files else None
            fields = request.POST.dict()
            if rules.picture == "optional" and not picture:
                # The strength slider applies to a picture; a page without scripts sends it anyway.
                fields.pop("strength", None)
            data = SUBMIT_FORMS[mode].from_form(fields)
            job = job_submit(
                user=request.user, data=data, upload=upload, mask_upload=mask_upload, control_upload=control_upload
            )
            if _wants_json(request):
                # The studio's script follows the job in place (static/js/results.js).
                return JsonResponse(job_out(job), status=202)
            return redirect("job", job_id=job.id)
        except PUBLIC_ERRORS as exc:
            error = public_error(exc)
            errors, message, status = error.fields, error.message, error.status
            if _wants_json(request):
                body = {"code": error.code, "message": error.message, "fields": error.fields or None}
                return JsonResponse({"error": body}, status=error.status)
    # A model that offers none of the page's modes is the API's only.
    checkpoints = [c for c in checkpoints_for_catalog() if set(c.modes) & set(OFFERED)]
    waits = {model["slug"]: model["expected_wait_seconds"] for model in status_snapshot()["models"]}
    for checkpoint in checkpoints:
        checkpoint.wait_label = wait_label(waits.get(checkpoint.slug))
        checkpoint.size_presets = size_presets(checkpoint)
        # The ControlNets a worker serving it has now (the page offers those).
        checkpoint.controls_offered = " ".join(c.slug for c in checkpoint.controlnets if c.available)
        checkpoint.loras_offered = " ".join(lora.slug for lora in checkpoint.loras if lora.available)
    if request.method == "POST":
        values = request.POST.dict()  # one value per field, as the form shows them
    elif parent is not None:
        values = JobParams.of(parent).prefill(model=parent.checkpoint.slug, parent_job=parent.id)
    else:
        values = {}
    if request.method == "GET" and mode == Mode.INPAINT:
        # Inpainting repaints the masked area from noise unless told otherwise (InpaintIn).
        values = {**values, "strength": FULL_STRENGTH}
    if not values.get("model"):
        values = {**values, "model": next((c.slug for c in checkpoints if c.available and mode in c.modes), "")}
    context = {
        "checkpoints": checkpoints,
        # Models that can run now first; the others folded away below them.
        "served": [c for c in checkpoints if c.available],
        "unserved": [c for c in checkpoints if not c.available],
        "model_tags": sorted({tag for c in checkpoints for tag in c.tags.all()}, key=lambda tag: tag.name),
        # Every ControlNet that fits a model on the page (the page offers
        # those of the chosen model), and the ways to make a map.
        "controlnets": list({c.slug: c for checkpoint in checkpoints for c in checkpoint.controlnets}.values()),
        "preprocesses": preprocess_choices(),
        # Every LoRA that fits a model on the page (the picker shows those of
        # the chosen model that a worker has).
        "loras": list({lora.slug: lora for checkpoint in checkpoints for lora in checkpoint.loras}.values()),
        "balance": balance_of(user=request.user),
        "presets": PRESETS,
        "samplers": [(sampler.name, sampler.label) for sampler in SAMPLERS.values()],
        # The form's limits, as the API checks them (its scripts read them from here).
        "limits": {
            "min_side": MIN_SIDE,
            "size_multiple": SIZE_MULTIPLE,
            "prompt_max": settings.PROMPT_MAX_CHARS,
            "webhook_url_max": WEBHOOK_URL_MAX,
            "loras_max": LORAS_MAX_CHARS,
        },
        "mode": mode,
        "modes": [(m.value, m.label) for m in OFFERED],
        "parent": parent,
        "values": values,
        "errors": errors,
        "error_message": message,
    }
    return render(request, "generation/create.html", context, status=status)


@login_required
@require_GET
def job_page(request: HttpRequest, job_id) -> HttpResponse:
    # The page shows everything: its images and queue position in the one read.
    job = _job_or_404(request, job_id, rows=jobs_shown(Job.objects.all()))
    job_viewed(user=request.user, job=job, what="the page")
    owner = job.user_id == request.user.pk
    context = {
        "job": job,
        "images": list(job.images.all()),
        "retention_days": settings.RESULT_RETENTION_DAYS,
        "lineage": job_lineage(job=job),
        "children": job_children(job=job),
        "queue_position": queue_position(job),
        # Only the owner acts on a job (cancel, again, use as input); staff who
        # may see it only look.
        "owner": owner,
        # What an image to image job changed: its picture beside the results.
        "before": job.mode == Mode.IMG2IMG and bool(job.input_image) and job.expired_at is None,
    }
    if owner:  # its owner sees how the webhook went (staff: the admin)
        context.update(webhook=JobOut.resolve_webhook(job), webhook_delivery=getattr(job, "webhook_delivery", None))
    return render(request, "generation/job.html", context)


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, job_id) -> HttpResponse:
    try:
        job_cancel(user=request.user, job_id=job_id)
        messages.success(request, "Canceled. The held credits are back in your balance.")
    except JobNotFound:
        raise Http404 from None
    except PUBLIC_ERRORS as exc:
        messages.warning(request, public_error(exc).message)
    return redirect("job", job_id=job_id)


@login_required
@require_POST
def job_again_view(request: HttpRequest, job_id) -> HttpResponse:
    try:
        job = job_again(user=request.user, job_id=job_id)
    except JobNotFound:
        raise Http404 from None
    except PUBLIC_ERRORS as exc:
        messages.error(request, public_error(exc).message)
        return redirect("job", job_id=job_id)
    return redirect("job", job_id=job.id)


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    model, status = request.GET.get("model", ""), request.GET.get("status", "")
    jobs = job_history(user=request.user, model=model, status=status)
    context = {
        "page": Paginator(jobs, HISTORY_PAGE_SIZE).get_page(request.GET.get("page")),
        "checkpoints": checkpoints_used_by(user=request.user),
        "statuses": Job.Status.values,
        "model": model,
        "status": status,
    }
    return render(request, "generation/history.html", context)


@login_required
@require_POST
def webhook_secret_rotate_view(request: HttpRequest) -> HttpResponse:
    """The account page's button: creates the secret the first time."""
    webhook_secret_rotate(user=request.user)
    messages.success(request, "Your webhook signing secret was replaced; webhooks from now on are signed with it.")
    return redirect(reverse("account") + "#webhooks")


def _job_or_404(request: HttpRequest, job_id, rows=None, *, owned: bool = False) -> Job | None:
    """The job to show (an owner's, or anyone's for staff who may see them),
    or with `owned` the job to act on (the owner's only); 404 otherwise."""
    if not job_id:
        return None
    try:
        if owned:
            return job_owned_by(user=request.user, job_id=job_id)
        return job_for_user(user=request.user, job_id=job_id, rows=rows)
    except JobNotFound:
        raise Http404 from None
