"""Request guards at the edge, before any view: the client's real address
behind trusted proxies, bodies too large for any upload (413), and text the
database cannot store (400)."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from portal.clientip import request_client_ip

# Room for the form fields and multipart framing around the largest upload.
_MARGIN = 256 * 1024


def body_limit() -> int:
    """The largest request body accepted anywhere (here and in portal.asgi_guards)."""
    return settings.UPLOAD_MAX_BYTES + _MARGIN


def too_large(path: str) -> HttpResponse:
    """The 413 answer: the API's error shape under /api/, plain text elsewhere."""
    message = f"The upload is larger than {settings.UPLOAD_MAX_BYTES // (1024 * 1024)} MB."
    if path.startswith("/api/"):
        return JsonResponse({"error": {"code": "upload_too_large", "message": message}}, status=413)
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


def length_required(path: str) -> HttpResponse:
    """The 411 answer to a body sent without its length (chunked): Django
    reads bodies by their Content-Length."""
    message = "Send the body with a Content-Length header (chunked uploads are not accepted)."
    if path.startswith("/api/"):
        return JsonResponse({"error": {"code": "length_required", "message": message}}, status=411)
    return HttpResponse(message, status=411, content_type="text/plain; charset=utf-8")


class ClientIpMiddleware:
    """REMOTE_ADDR becomes the client's address behind TRUSTED_PROXIES
    (portal.clientip), before anything reads it: allauth's rate limits,
    django-ratelimit's "ip" key and the chat's per-address limit."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.TRUSTED_PROXIES:
            request.META["REMOTE_ADDR"] = request_client_ip(request.META)
        return self.get_response(request)


class RequestSizeLimitMiddleware:
    """A body larger than the upload limit gets 413 from its Content-Length
    alone, so a huge upload is not spooled to disk first (under WSGI; under
    ASGI portal.asgi_guards refuses it before Django reads the body)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > body_limit():
            return too_large(request.path)
        return self.get_response(request)


class UnstorableTextMiddleware:
    """400 for a NUL character (or a lone surrogate) in any query or form
    field, or any string of a JSON body: PostgreSQL cannot store them in a
    text column, so they would otherwise end as a 500 wherever they reach
    the database. Checked up front, once, for every view."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = _unstorable_field(request)
        if field is None:
            return self.get_response(request)
        message = f"The field “{field}” contains a NUL character (or another that cannot be stored)."
        if request.path.startswith("/api/") or "text/html" not in request.headers.get("Accept", ""):
            body = {"code": "invalid_params", "message": message, "fields": {field: "contains a NUL character"}}
            return JsonResponse({"error": body}, status=400)
        return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def _unstorable_field(request: HttpRequest) -> str | None:
    """The name of the first field whose name or value cannot be stored."""
    sources = [request.GET]
    if request.method == "POST" and request.content_type in (
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ):
        sources.append(request.POST)
    for source in sources:
        for name, values in source.lists():
            if _unstorable(name) or any(_unstorable(value) for value in values):
                return name
    if request.content_type == "application/json" and request.body:
        try:
            return _unstorable_json(json.loads(request.body))
        except (ValueError, RecursionError):
            return None  # not JSON we can read: the view refuses it as it always did
    return None


def _unstorable_json(document) -> str | None:
    """The path ("body.items.0.name") of the first unstorable key or string."""
    pending = [("body", document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if _unstorable(value):
                return path
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and _unstorable(key):
                return path
            pending.append((f"{path}.{key}", item))
    return None


def _unstorable(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" in JSON
        return True
    return False
