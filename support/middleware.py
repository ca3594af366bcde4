"""Drops the visitor cookie on the response of a sign-in or sign-out
(support.receivers marks the request; signals cannot touch the response)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from support.visitors import FORGET_VISITOR, VISITOR_COOKIE, visitor_cookie_clear


class VisitorCookieMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if getattr(request, FORGET_VISITOR, False) and VISITOR_COOKIE in request.COOKIES:
            visitor_cookie_clear(response)
        return response
