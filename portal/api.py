"""The JSON API at /api/v1/: generation's operations behind the account's
authentication (`Authorization: Bearer <api key>` or the browser session),
with its OpenAPI schema at /api/v1/openapi.json and docs at /api/v1/docs."""

from __future__ import annotations

from ninja import NinjaAPI

from accounts.auth import API_AUTH
from generation.api import EXCEPTION_HANDLERS
from generation.api import router as generation_router
from generation.examples import add_examples
from portal.outages import BROKER_ERRORS, outage_response


class PortalAPI(NinjaAPI):
    """The API, its schema carrying an example for every operation
    (generation.examples)."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        return add_examples(schema) if path_prefix in (None, "/api/v1/") else schema


api = PortalAPI(
    title="img2img portal API",
    version="1",
    description="Turn a picture and a prompt into new pictures. Authenticate with `Authorization: Bearer <key>` "
    "(create keys on your account page) or a browser session. Every error is "
    '`{"error": {"code", "message", "fields"?}}`.',
    auth=API_AUTH,
    urls_namespace="api",
    docs_url="/docs",
)
api.add_router("", generation_router)
for exception, handler in EXCEPTION_HANDLERS.items():
    api.add_exception_handler(exception, handler)
# Redis unreachable: 503 in the error shape (ninja would otherwise answer a
# DEBUG traceback or let it become a 500).
for exception in BROKER_ERRORS:
    api.add_exception_handler(exception, outage_response)
