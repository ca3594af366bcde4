"""The JSON API's operations, /api/v1/ (contracts: docs/design.md). Thin:
each parses, calls a service or a selector and returns what its response
schema (generation.schemas) describes. Every error a person can cause is
answered in one shape, {"error": {"code", "message", "fields"?}}, and
documented on the operations where it can happen.

portal/api.py mounts this router with the authentication (accounts) and
the error handlers below.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_ratelimit.core import is_ratelimited
from ninja import File, Form, Header, Query, Router, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.files import UploadedFile
from pydantic import Field

from billing.selectors import balance_of
from generation.errors import (
    PUBLIC_ERRORS,
    GenerationError,
    InvalidParams,
    JobNotFound,
    NotAuthenticated,
    RateLimited,
    Refused,
    public_error,
)
from generation.idempotency import idempotent_answer, request_fingerprint
from generation.media import private_file_response
from generation.models import Job
from generation.params import (
    IDEMPOTENCY_KEY,
    ControlNetIn,
    ControlPreviewIn,
    IdempotencyKeyHeader,
    Img2ImgIn,
    InpaintIn,
    Omitted,
    QuoteIn,
    Txt2ImgIn,
    invalid_params,
)
from generation.schemas import AccountOut, ErrorOut, JobOut, JobsOut, ModelsOut, QuoteOut, WebhookSecretOut, job_out
from generation.selectors import (
    checkpoints_for_catalog,
    image_for_user,
    job_for_user,
    job_status,
    jobs_of,
    jobs_shown,
)
from generation.services import NO_PICTURE, control_preview, job_cancel, job_quote, job_submit, job_viewed
from generation.webhooks import webhook_secret_get, webhook_secret_rotate

router = Router()
JOBS_PAGE_SIZE = 20


def _errors(*codes: int) -> dict[int, type[ErrorOut]]:
    """The error answers an operation can give, each in the one error shape."""
    return dict.fromkeys(codes, ErrorOut)


# Every operation needs a signed-in person or an API key (401); unsafe
# methods with a session need the CSRF token (403); a body over the upload
# limit is refused from its length alone (413, RequestSizeLimitMiddleware).
# Where Redis is read (worker heartbeats, rate-limit counters, the broker),
# its outage answers 503 (portal.outages).
READ = (401,)
WRITE = (401, 403, 413)
# Operations that create a job take an Idempotency-Key: a retry with the key
# answers 409 while the first request runs or if the request differs.
SUBMIT = (409,)
REPLAYED = "Idempotent-Replayed"
IDEMPOTENCY_KEY_HELP = (
    "Optional. 1 to 255 printable ASCII characters, a new random one (a UUID) per request; kept for "
    f"{settings.IDEMPOTENCY_KEY_HOURS} hours, per person. A retry with the same key and the same request (fields "
    f"and file) gets the first answer again (same status, same job) with `{REPLAYED}: true`; with another "
    "request: 409 `idempotency_key_reused`; while the first still runs: 409 `idempotency_key_in_progress`."
)
PNG = {
    200: {
        "description": "The image (PNG)",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    },
    302: {
        "description": "With MEDIA_SIGNED_URL_SECONDS set: a redirect (Location) to a presigned URL of the image "
        "in the media store, valid that many seconds",
        "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
    },
}


class PageIn(Schema):
    page: int = Field(1, description="1 for the newest; out of range: the nearest page")


@router.get("/account", response={200: AccountOut, **_errors(*READ)}, summary="Your email and credit balance")
def account(request: HttpRequest):
    return {"email": request.user.email, "credits": balance_of(user=request.user)}


@router.get(
    "/models",
    response={200: ModelsOut, **_errors(503, *READ)},
    summary="The model catalog, with live availability",
)
def models(request: HttpRequest):
    return {"models": checkpoints_for_catalog()}


@router.post(
    "/quote",
    response={200: QuoteOut, **_errors(400, 404, 429, 503, *WRITE)},
    summary="What a job with these settings would cost (nothing is held)",
    description="`mode` is the submit's: img2img (the default; with its picture, or its size), txt2img (no "
    "picture: one sent is ignored; every step runs, so `strength` is ignored), inpaint (with its picture; "
    "`strength` 1 by default; with expand_* the price is the grown canvas's; the other modes ignore expand_*) or "
    "controlnet (with `control` and its guidance span; with `image` or `strength` the image to image variant). "
    "The size is `width` x `height`, else the picture's (`image`; for controlnet else `control_image`), else "
    "`parent_job`'s first result's (404 for a job that is not yours).",
)
def quote(
    request: HttpRequest,
    data: Form[QuoteIn],
    image: UploadedFile | Omitted = File(None),
    control_image: UploadedFile | Omitted = File(None),
):
    # With a picture, a quote decodes and re-encodes it like a submit: limited
    # per person (per client address without one), QUOTE_RATE_LIMIT.
    decoded = (image is not None and data.mode != "txt2img") or (
        control_image is not None and data.mode == "controlnet"
    )
    if decoded and is_ratelimited(
        request, group="quote", key="user_or_ip", rate=settings.QUOTE_RATE_LIMIT, increment=True
    ):
        raise RateLimited("Too many quotes with a picture; wait a minute, or quote without the picture.")
    return {"credits": job_quote(data=data, upload=image, control_upload=control_image, user=request.user)}


@router.post(
    "/img2img",
    response={202: JobOut, **_errors(400, 402, 404, 429, 503, *SUBMIT, *WRITE)},
    summary="Submit a job (multipart); its credits are held until it ends",
    description="A prompt or negative prompt that the content rules refuse answers 400 `moderated`, naming the "
    "field, and costs nothing. A job whose picture the worker's content check flags ends `failed` with "
    "`error_code` `moderated`: the picture is not kept and the held credits are returned.",
)
def img2img(
    request: HttpRequest,
    data: Form[Img2ImgIn],
    image: UploadedFile | Omitted = File(None),
    idempotency_key: IdempotencyKeyHeader | Omitted = Header(
        None, alias=IDEMPOTENCY_KEY, description=IDEMPOTENCY_KEY_HELP
    ),
):
    return _submitted(request, idempotency_key, data=data, fingerprinted=image, upload=image)


@router.post(
    "/txt2img",
    response={202: JobOut, **_errors(400, 402, 404, 429, 503, *SUBMIT, *WRITE)},
    summary="Submit a text to image job (form fields, no picture); its credits are held until it ends",
    description="Makes pictures from the prompt alone, at `width` x `height` (default: the model's native size; "
    "multiples of 8 within its max side) and runs every step (no strength). A model that cannot do text to image "
    "(see `modes` in GET /api/v1/models) answers 400 naming `model`. A picture sent along (any file) is refused: "
    "400 naming the file's field; use POST /api/v1/img2img to start from a picture. Prompts are moderated as for "
    "img2img.",
)
def txt2img(
    request: HttpRequest,
    data: Form[Txt2ImgIn],
    idempotency_key: IdempotencyKeyHeader | Omitted = Header(
        None, alias=IDEMPOTENCY_KEY, description=IDEMPOTENCY_KEY_HELP
    ),
):
    if request.FILES:
        raise InvalidParams(dict.fromkeys(request.FILES, NO_PICTURE))

    return _submitted(request, idempotency_key, data=data, fingerprinted=None)


@router.post(
    "/inpaint",
    response={202: JobOut, **_errors(400, 402, 404, 429, 503, *SUBMIT, *WRITE)},
    summary="Submit an inpainting or outpainting job (multipart); its credits are held until it ends",
    description="Inpainting: `image` (or `parent_job`'s first result) and `mask`, a picture of the same size: "
    "white (at least half brightness) = change, black = keep; transparency counts as black. A mask of another "
    "size, an all-black mask or a file that is not a picture answers 400 naming `mask`. Outpainting: instead of "
    "`mask`, `expand_left/right/top/bottom` (multiples of 8, at least one above 0): the picture is placed on a "
    "canvas grown by those pixels, which is the job's input, and the new area is the mask; a canvas beyond the "
    "model's max side answers 400 naming the expand fields. Both a mask and expand_*, or neither: 400. "
    "`mask_blur` softens the mask's edge (pixels); every pixel the blurred mask leaves black comes back exactly "
    "as it was. The output is the picture's (or canvas's) size fitted to the model, or `width` x `height` "
    "(picture and mask are then resized together). `strength` defaults to 1. A model without inpainting "
    "(see `modes` in GET /api/v1/models) answers 400 naming `model`. Prompts are moderated as for img2img.",
)
def inpaint(
    request: HttpRequest,
    data: Form[InpaintIn],
    image: UploadedFile | Omitted = File(None),
    mask: UploadedFile | Omitted = File(None),
    idempotency_key: IdempotencyKeyHeader | Omitted = Header(
        None, alias=IDEMPOTENCY_KEY, description=IDEMPOTENCY_KEY_HELP
    ),
):
    # The fingerprint covers the picture and the mask.
    return _submitted(request, idempotency_key, data=data, fingerprinted=[image, mask], upload=image, mask_upload=mask)


@router.post(
    "/controlnet",
    response={202: JobOut, **_errors(400, 402, 404, 429, 503, *SUBMIT, *WRITE)},
    summary="Submit a ControlNet job (multipart); its credits are held until it ends",
    description="Keeps the structure of `control_image` (or `parent_job`'s first result) and makes the rest from "
    "the prompt (`image` alone is both: it guides and seeds). `control` is a ControlNet that fits the model "
    "(`controlnets` in GET /api/v1/models); one of another family answers 400 naming `control`, one that no live "
    "worker serving the model has 503. `preprocess` turns the control "
    "picture into the ControlNet's map on the worker (default: the ControlNet's kind): none, canny (edges), "
    "scribble (a drawing, dark on light or light on dark), or depth, openpose and lineart, which need annotator "
    "weights: where no live worker has them, 400 naming `preprocess` (send a ready map with preprocess=none). "
    "`conditioning_scale` (0-2) and `control_start`/`control_end` (fractions of the steps) set how strongly and "
    "when it guides. With `image`, the image to image variant: the picture seeds the colours and `strength` "
    "applies; without it every step runs and a `strength` is refused (400). The output is the picture's size "
    "(else the control picture's) fitted "
    "to the model, or `width` x `height`. The price is the model's times the ControlNet's `cost_factor` over the "
    "steps it guides. Prompts are moderated as for img2img.",
)
def controlnet(
    request: HttpRequest,
    data: Form[ControlNetIn],
    control_image: UploadedFile | Omitted = File(None),
    image: UploadedFile | Omitted = File(None),
    idempotency_key: IdempotencyKeyHeader | Omitted = Header(
        None, alias=IDEMPOTENCY_KEY, description=IDEMPOTENCY_KEY_HELP
    ),
):
    return _submitted(
        request,
        idempotency_key,
        data=data,
        fingerprinted=[control_image, image],
        upload=image,
        control_upload=control_image,
    )


@router.post(
    "/controlnet/preview",
    response={**_errors(400, 429, 503, *WRITE)},
    openapi_extra={"responses": {200: PNG[200]}},
    summary="The control map a weight-free preprocess makes of a picture (PNG); nothing is stored or charged",
    description="What a worker makes of `control_image` with `preprocess` (none, canny or scribble), at "
    "`width` x `height` when given (the job's output size; else within the largest side an output can have), "
    "so the map can be checked before submitting. "
    f"Limited per person: {settings.QUOTE_RATE_LIMIT}.",
)
def controlnet_preview(request: HttpRequest, data: Form[ControlPreviewIn], control_image: File[UploadedFile]):
    if is_ratelimited(request, group="preview", key="user_or_ip", rate=settings.QUOTE_RATE_LIMIT, increment=True):
        raise RateLimited("Too many previews; wait a minute.")
    return HttpResponse(control_preview(data=data, upload=control_image), content_type="image/png")


@router.get("/jobs", response={200: JobsOut, **_errors(400, *READ)}, summary="Your jobs, newest first")
def jobs(request: HttpRequest, query: Query[PageIn]):
    paginator = Paginator(jobs_shown(jobs_of(user=request.user)), JOBS_PAGE_SIZE)
    current = paginator.get_page(query.page)
    return {"jobs": list(current.object_list), "page": current.number, "pages": paginator.num_pages}


@router.get(
    "/jobs/{job_id}", response={200: JobOut, **_errors(404, *READ)}, summary="One job: status, progress, results"
)
def job(request: HttpRequest, job_id: str):
    found = job_status(user=request.user, job_id=job_id)
    job_viewed(user=request.user, job=found, what="the JSON")
    return found


@router.post(
    "/jobs/{job_id}/cancel",
    response={200: JobOut, **_errors(404, 409, *WRITE)},
    summary="Cancel a queued or running job; its held credits are released",
)
def cancel(request: HttpRequest, job_id: str):
    return job_cancel(user=request.user, job_id=job_id)


@router.get(
    "/images/{image_id}",
    url_name="image",
    response={**_errors(404, *READ)},
    openapi_extra={"responses": PNG},
    summary="A result image (PNG); yours only",
)
def image(request: HttpRequest, image_id: str):
    row = image_for_user(user=request.user, image_id=image_id)
    job_viewed(user=request.user, job=row.job, what=f"result image {row.index + 1}")
    return private_file_response(row.file, content_type="image/png", filename=f"{row.job_id}-{row.index + 1}.png")


@router.get(
    "/jobs/{job_id}/mask",
    url_name="job-mask",
    response={**_errors(404, *READ)},
    openapi_extra={"responses": PNG},
    summary="An inpainting job's mask (PNG, white = changed); yours only",
)
def job_mask(request: HttpRequest, job_id: str):
    return _job_file(request, job_id, "mask", name="mask", what="mask", mode="inpainting")


@router.get(
    "/jobs/{job_id}/control",
    url_name="job-control",
    response={**_errors(404, *READ)},
    openapi_extra={"responses": PNG},
    summary="A ControlNet job's control picture (PNG, as sent); yours only",
)
def job_control(request: HttpRequest, job_id: str):
    return _job_file(request, job_id, "control_image", name="control", what="control picture", mode="ControlNet")


@router.get(
    "/jobs/{job_id}/input",
    url_name="job-input",
    response={**_errors(404, *READ)},
    openapi_extra={"responses": PNG},
    summary="The picture a job started from (PNG: image to image's, or an outpainting's canvas); yours only",
)
def job_input(request: HttpRequest, job_id: str):
    return _job_file(request, job_id, "input_image", name="input", what="input picture", mode="made from a picture")


def _job_file(request: HttpRequest, job_id: str, field: str, *, name: str, what: str, mode: str):
    """A job's own file (`field`), served to its owner (staff: logged) like
    its results; 404 for a job without one."""
    found = job_for_user(user=request.user, job_id=job_id)
    stored = getattr(found, field)
    if not stored:
        raise JobNotFound(f"That job has no {what} (not {mode}, or deleted by retention).")
    job_viewed(user=request.user, job=found, what=f"the {what}")
    try:
        return private_file_response(stored, content_type="image/png", filename=f"{found.id}-{name}.png")
    except FileNotFoundError:  # retention deleted it since the read
        raise JobNotFound(f"That job's {what} was deleted by retention.") from None


def _submitted(request: HttpRequest, key: str | None, *, data: Schema, fingerprinted, **uploads):
    """Every submit operation: job_submit with `data` and `uploads`, once
    per Idempotency-Key when one is sent (`fingerprinted`: the files its
    fingerprint covers)."""

    def submit() -> Job:
        return job_submit(user=request.user, data=data, **uploads)

    if key is None:
        return 202, submit()
    return _submit_once(request, key, fields=data, upload=fingerprinted, submit=submit)


def _submit_once(request: HttpRequest, key: str, *, fields: Schema, upload, submit: Callable[[], Job]) -> HttpResponse:
    """A job-creating operation under an Idempotency-Key: its first final
    answer, 202 or an error, is stored and replayed (generation.idempotency).
    Refusals before the operation runs (authentication, the schema) are not
    stored: they depend on the request alone, and a retry gets them again."""

    def answer() -> tuple[int, dict]:
        try:
            return 202, job_out(submit())
        except PUBLIC_ERRORS as exc:
            error = public_error(exc)
            return error.status, _error_body(error)

    fingerprint = request_fingerprint(
        operation=f"{request.method} {request.path}", fields=fields.model_dump(mode="json"), upload=upload
    )
    first = idempotent_answer(user=request.user, key=key, fingerprint=fingerprint, answer=answer)
    response = JsonResponse(first.body, status=first.status)
    if first.replayed:
        response[REPLAYED] = "true"
    return response


@router.get(
    "/webhooks/secret",
    response={200: WebhookSecretOut, **_errors(*READ)},
    summary="Your webhook signing secret (created on first use)",
)
def webhook_secret(request: HttpRequest):
    return {"key": webhook_secret_get(user=request.user).key}


@router.post(
    "/webhooks/secret/rotate",
    response={200: WebhookSecretOut, **_errors(*WRITE)},
    summary="Replace your webhook signing secret; webhooks from now on are signed with the new one",
)
def rotate_webhook_secret(request: HttpRequest):
    return {"key": webhook_secret_rotate(user=request.user).key}


# --- Error answers (registered on the API by portal/api.py) -----------------------------


def _error_body(error: GenerationError) -> dict:
    body = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    return {"error": body}


def error_response(error: GenerationError) -> JsonResponse:
    return JsonResponse(_error_body(error), status=error.status)


def _on_public_error(request, exc):
    return error_response(public_error(exc))


def _on_invalid(request, exc: ValidationError):
    return error_response(invalid_params(exc.errors))


def _on_unauthenticated(request, exc):
    return error_response(NotAuthenticated("Sign in or send `Authorization: Bearer <api key>`."))


def _on_http_error(request, exc: HttpError):
    """ninja's own refusals, e.g. a session POST without its CSRF token (403)."""
    codes = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "error")
    return error_response(Refused(str(exc) or "Refused.", status=exc.status_code, code=code))


EXCEPTION_HANDLERS = {
    **dict.fromkeys(PUBLIC_ERRORS, _on_public_error),
    ValidationError: _on_invalid,
    AuthenticationError: _on_unauthenticated,
    HttpError: _on_http_error,
}
