"""The JSON API, /api/v1/ (contract: ../shared/DESIGN.md). Thin: each
endpoint parses, calls a service and shapes the answer."""

from __future__ import annotations

import uuid

from django.core.paginator import Paginator
from django.http import FileResponse, HttpRequest
from ninja import File, Form, NinjaAPI
from ninja.errors import AuthenticationError, ValidationError
from ninja.files import UploadedFile

from accounts.auth import API_AUTH
from billing.errors import InsufficientCredits, SpendingBlocked
from billing.ledger import balance_of
from generation.availability import available_slugs
from generation.errors import GenerationError, JobNotFound
from generation.models import Checkpoint, Job
from generation.params import Img2ImgIn
from generation.presenters import job_out
from generation.services import (
    image_for_user,
    job_cancel,
    job_for_user,
    job_quote,
    job_submit,
)

api = NinjaAPI(
    title="img2img portal API",
    version="1",
    description="Turn a picture and a prompt into new pictures. Authenticate with `Authorization: Bearer <key>` "
    "(create keys on your account page) or a browser session.",
    auth=API_AUTH,
    urls_namespace="api",
    docs_url="/docs",
)
JOBS_PAGE_SIZE = 20


def error(request: HttpRequest, status: int, code: str, message: str, fields: dict | None = None):
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return api.create_response(request, {"error": body}, status=status)


@api.exception_handler(GenerationError)
def _generation_error(request, exc: GenerationError):
    return error(request, exc.status, exc.code, exc.message, exc.fields)


@api.exception_handler(InsufficientCredits)
def _insufficient(request, exc: InsufficientCredits):
    message = f"This needs {exc.needed} credits; you have {exc.available}. Buy more credits to continue."
    return error(request, 402, "insufficient_credits", message)


@api.exception_handler(SpendingBlocked)
def _blocked(request, exc: SpendingBlocked):
    return error(request, 402, "account_blocked", "Spending is paused on this account; contact support.")


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    fields = {}
    for item in exc.errors:
        name = str(item.get("loc", ["", "?"])[-1])
        fields[name] = item.get("msg", "invalid")
    return error(request, 400, "invalid_params", "Some fields are not valid.", fields)


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return error(request, 401, "unauthorized", "Sign in or send `Authorization: Bearer <api key>`.")


# --- Endpoints -----------------------------------------------------------------------


@api.get("/account", summary="Your email and credit balance")
def account(request):
    return {"email": request.user.email, "credits": balance_of(user=request.user)}


@api.get("/models", summary="The model catalog, with live availability")
def models(request):
    available = available_slugs()
    return {
        "models": [
            {
                "slug": c.slug,
                "name": c.name,
                "family": c.family,
                "tags": [t.slug for t in c.tags.all()],
                "cost_per_image": c.price_per_image,
                "defaults": {
                    "strength": c.default_strength,
                    "steps": c.default_steps,
                    "guidance_scale": c.default_guidance,
                },
                "limits": {"max_side": c.max_side, "max_steps": c.max_steps, "allowed_sizes": c.allowed_sizes},
                "is_test": c.is_test,
                "available": c.slug in available,
            }
            for c in Checkpoint.objects.filter(enabled=True).prefetch_related("tags")
        ]
    }


@api.post("/quote", summary="What a job with these settings would cost")
def quote(request, data: Form[Img2ImgIn], image: UploadedFile | None = File(None)):
    return {"credits": job_quote(data=data, upload=image)}


@api.post("/img2img", response={202: dict}, summary="Submit a job (multipart)")
def img2img(request, data: Form[Img2ImgIn], image: UploadedFile | None = File(None)):
    job = job_submit(user=request.user, data=data, upload=image)
    return 202, job_out(job)


@api.get("/jobs", summary="Your jobs, newest first")
def jobs(request, page: int = 1):
    paginator = Paginator(Job.objects.filter(user=request.user).select_related("checkpoint"), JOBS_PAGE_SIZE)
    current = paginator.get_page(page)
    items = list(current.object_list.prefetch_related("images"))
    return {"jobs": [job_out(j) for j in items], "page": current.number, "pages": paginator.num_pages}


@api.get("/jobs/{job_id}", summary="One job: status, progress, results")
def job(request, job_id: str):
    return job_out(job_for_user(user=request.user, job_id=_uuid(job_id)))


@api.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job; its credits are released")
def cancel(request, job_id: str):
    return job_out(job_cancel(user=request.user, job_id=_uuid(job_id)))


@api.get("/images/{image_id}", url_name="image", summary="A result image (PNG); yours only")
def image(request, image_id: str):
    row = image_for_user(user=request.user, image_id=_uuid(image_id))
    response = FileResponse(row.file.open("rb"), content_type="image/png")
    response["Content-Disposition"] = f'inline; filename="{row.job_id}-{row.index + 1}.png"'
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise JobNotFound("No such job.") from None
