"""GET /api/v1/jobs/<id> for a running job, polled with an API key, answered
on the event loop from Redis: the key's owner from the keys' cache
(accounts.services.KEY_CACHE_PREFIX), the job's JSON from its status copy
(generation.status_cache). Two Redis reads, no Django request, no database,
no thread: a polling client costs the web tier a few hundred microseconds.

Anything else, or anything this path is not sure of, goes to Django as
before, which answers it in full: another path or method, a session
instead of a key, a key or a job not in Redis (Django's read puts the key
there), a job that is not running or not the key owner's (staff reading
someone else's job are logged there), a Host that ALLOWED_HOSTS refuses,
plain HTTP where HTTPS_ONLY redirects it, Redis unreachable.

The answer carries the headers Django's would (its security middleware's,
X-Request-ID); tests/test_fast_status.py holds both equal. Requests it
answers are not in the per-request log line nor in django_prometheus's
request counts: they are counted in portal_status_fast_answers_total.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import redis.asyncio as aioredis
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from prometheus_client import Counter

from accounts.services import API_KEY_PREFIX, KEY_CACHE_PREFIX
from generation.status_cache import STATUS_FIELDS, status_body, status_key

_PATH = re.compile(r"/api/v1/jobs/([0-9a-fA-F-]{32,36})")  # fullmatch: no trailing newline slips through
# Headers that, sent twice, Django would read joined (and refuse) where a
# dict here would keep one: such a request goes to Django.
_SINGLE = {b"authorization", b"host", b"x-forwarded-proto"}
FAST_ANSWERS = Counter(
    "portal_status_fast_answers_total", "Status reads of running jobs answered from Redis (portal.fast_status)."
)


class StatusFastPath:
    def __init__(self, app) -> None:
        self.app = app
        self._redis: aioredis.Redis | None = None
        self._headers = _security_headers()
        self._allowed_hosts = _allowed_hosts()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("query_string"):
            match = _PATH.fullmatch(scope["path"])
            if match and (answer := await self._answer(scope, match.group(1))) is not None:
                await _send(send, answer, self._headers, secure=_is_secure(scope))
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope, job_id: str) -> bytes | None:
        names = [name for name, _ in scope["headers"]]
        if any(b"_" in name for name in names) or any(names.count(name) > 1 for name in _SINGLE):
            return None  # a2wsgi would read these differently than a dict does
        headers = dict(scope["headers"])
        token = _bearer(headers.get(b"authorization", b""))
        if token is None or not token.startswith(API_KEY_PREFIX):
            return None
        host = headers.get(b"host", b"").decode("latin-1")
        domain, _port = split_domain_port(host)
        if not domain or not validate_host(domain, self._allowed_hosts):
            return None
        if settings.SECURE_SSL_REDIRECT and not _is_secure(scope):
            return None
        try:
            job = str(uuid.UUID(job_id))
        except ValueError:
            return None
        try:
            client = self._client()
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(KEY_CACHE_PREFIX + hashlib.sha256(token.encode()).hexdigest())
                pipe.hmget(status_key(job), STATUS_FIELDS)
                owner, fields = await pipe.execute()
        except (aioredis.RedisError, OSError):
            return None
        if owner is None or not owner.isdigit():  # not cached, or marked as no longer honoured
            return None
        found = status_body(fields)
        if found is None or found[0] != owner.decode():
            return None
        FAST_ANSWERS.inc()
        return found[1]

    def _client(self) -> aioredis.Redis:
        # One per process, made in its event loop on first use.
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        return self._redis


def _bearer(value: bytes) -> str | None:
    """The token as django-ninja's HttpBearer reads it (split on single
    spaces, nothing stripped), or None."""
    parts = value.decode("latin-1").split(" ")
    if parts[0].lower() != "bearer":
        return None
    return " ".join(parts[1:]) or None


def _is_secure(scope) -> bool:
    """request.is_secure()'s rule: SECURE_PROXY_SSL_HEADER when the request
    has it, else the scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        name, value = settings.SECURE_PROXY_SSL_HEADER
        wanted = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        for key, found in scope["headers"]:
            if key == wanted:
                return found.decode("latin-1").split(",", 1)[0].strip() == value
    return scope.get("scheme") == "https"


def _allowed_hosts() -> list[str]:
    """ALLOWED_HOSTS as Django reads it (with DEBUG, localhost too)."""
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def _security_headers() -> list[tuple[bytes, bytes]]:
    """The headers Django's middleware puts on this JSON answer."""
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"x-frame-options", settings.X_FRAME_OPTIONS.encode()),
    ]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        policy = policy if isinstance(policy, str) else ",".join(policy)
        headers.append((b"referrer-policy", policy.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    return headers


def _hsts() -> bytes:
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value.encode()


async def _send(send, body: bytes, headers: list, *, secure: bool) -> None:
    extra = [(b"content-length", str(len(body)).encode()), (b"x-request-id", str(uuid.uuid4()).encode())]
    if secure and settings.SECURE_HSTS_SECONDS:
        extra.append((b"strict-transport-security", _hsts()))
    await send({"type": "http.response.start", "status": 200, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})
