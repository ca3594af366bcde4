"""Request guards at the edge: the client's real address, and bodies too
large for any upload refused before Django reads them."""

from __future__ import annotations

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
