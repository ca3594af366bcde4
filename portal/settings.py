"""The one settings module: every value comes from the environment, with an
embedded default that works on a fresh machine. A bad value fails loudly at
start (ImproperlyConfigured), never silently falls back.

Contract names (docs/design.md): DATABASE_URL, REDIS_URL, SECRET_KEY,
DEBUG, ALLOWED_HOSTS, MEDIA_ROOT, MODELS_DIR, FREE_CREDITS,
ACCOUNT_EMAIL_VERIFICATION, STRIPE_*. docs/operator/configuration.md
lists every variable.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from urllib.parse import urlparse

import environ
from django.core.exceptions import ImproperlyConfigured
from django_ratelimit.core import rate_re

from portal import logs

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Local state of the embedded defaults (SQLite, media, models, the private
# Redis's data): var/ in the checkout unless VAR_DIR says otherwise.
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var"))).expanduser().resolve()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    """Strict boolean: 'maybe' is an error, not False."""
    raw = env.str(name, default=None)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.str(name, default=None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.str(name, default=default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def env_path(name: str, default: Path) -> Path:
    return Path(env.str(name, default=str(default))).expanduser().resolve()


def env_networks(name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or networks (CIDR), normalised."""
    networks = []
    for item in env.list(name, default=[]):
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or network") from None
    return tuple(networks)


def env_rate(name: str, default: str) -> str:
    """A django-ratelimit rate ("count/period": "20/m", "5/10m"; period s, m,
    h or d, seconds when left out), checked at start rather than at the first
    request. The library's own pattern, matched whole: the library reads only
    a prefix and would take "20/mbanana" as "20/m"."""
    value = env.str(name, default=default).strip()
    match = rate_re.fullmatch(value)
    if match is None:
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate like '20/m' (count/period; period s, m, h or d)")
    count, multiplier, _unit = match.groups()
    if int(count) < 1 or (multiplier and int(multiplier) < 1):
        raise ImproperlyConfigured(f"{name}={value!r}: the count and the period must be at least 1")
    return value


# --- Core -------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off. The README's run command "
            "generates one under var/; in production set it in the environment."
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"  # noqa: S105 (DEBUG only)
# .env.example's placeholders must never reach production unchanged.
PLACEHOLDER = "change-me"
if PLACEHOLDER in SECRET_KEY.lower():
    raise ImproperlyConfigured("SECRET_KEY is still .env.example's placeholder: set a long random value")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Served over HTTPS (default whenever DEBUG is off): redirect, HSTS, secure
# cookies. Turn off only for plain-HTTP test servers on loopback.
HTTPS_ONLY = env_bool("HTTPS_ONLY", not DEBUG)

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",  # django.contrib.admin, its index the staff dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_prometheus",
    "allauth",
    "allauth.account",
    "django_structlog",
    "portal",
    "accounts",
    "billing",
    "catalog",
    "generation",
    "support",
    "workers",
]

MIDDLEWARE = [
    # Request counts and latency by route, for /metrics: outermost, so the
    # time includes every other middleware.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "portal.middleware.ClientIpMiddleware",  # first: everything after sees the client's address
    "django_structlog.middlewares.RequestMiddleware",  # the request id and the one log line per request
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.RequestSizeLimitMiddleware",
    "portal.middleware.UnstorableTextMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "support.middleware.VisitorCookieMiddleware",  # drops the chat's visitor cookie at sign-in and sign-out
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # Last, so its process_exception sees a view's exception first.
    "portal.outages.BrokerOutageMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"
# Threads per web process that run Django's views (portal.asgi); each keeps
# one database connection.
WEB_THREADS = env_int("WEB_THREADS", 8, minimum=1)

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.site",
                "support.context_processors.widget",
            ],
        },
    },
]

# --- Data -------------------------------------------------------------------

try:
    DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
except Exception as exc:  # django-environ raises several kinds for a bad URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from exc
if DATABASES["default"]["ENGINE"] not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
    raise ImproperlyConfigured("DATABASE_URL must be a postgres:// or sqlite:/// URL")
# Connections are kept (the web tier's threads are a fixed pool, portal.asgi)
# and checked before reuse, so a restarted database costs one failed check,
# not an error. CONN_MAX_AGE=0 opens one per request again.
DATABASES["default"].setdefault("CONN_MAX_AGE", env_int("CONN_MAX_AGE", 60))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database host that vanishes without closing connections must not
    # hang a worker's heartbeat for minutes: time out connects, probe idle
    # connections.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        connect_timeout=5, keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for the writer lock instead of failing at once: the worker and the
    # web server share the file on the embedded default.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # Tests start real worker processes, which cannot reach an in-memory
    # database: the test database is a file too, beside the real one.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(DATABASES["default"]["NAME"]).with_suffix(".test.sqlite3"))}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
if urlparse(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must be a redis://, rediss:// or unix:// URL")

CACHES = {
    "default": {
        # A real cache: allauth's rate limits need one (DummyCache disables them).
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="portal"),
    }
}

MEDIA_ROOT = env_path("MEDIA_ROOT", VAR_DIR / "media")
# Media is private: never served by URL prefix. Each file is served by a view
# that checks its owner (/api/v1/images/<id>).
MEDIA_URL = "/media/"
# Where uploads and results live (the "private" storage; catalog previews use
# "default", the same store): `local` under MEDIA_ROOT, or `s3`, any
# S3-compatible store shared by every web and worker machine.
MEDIA_STORAGE = env_choice("MEDIA_STORAGE", "local", ("local", "s3"))
# 0: the owner-checked image view streams the picture; N > 0: it answers a
# redirect to a presigned URL of the store that works for N seconds.
MEDIA_SIGNED_URL_SECONDS = env_int("MEDIA_SIGNED_URL_SECONDS", 0)
# An S3 bucket name (3-63 lowercase letters, digits, dots and hyphens).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PRESIGN_MAX_SECONDS = 7 * 24 * 3600  # SigV4's limit


def media_storage(kind: str, signed_url_seconds: int) -> dict:
    """The STORAGES entry of the media store `kind`. For s3 the standard
    django-storages variables name the bucket and how to reach it; objects
    get no ACL (they stay as private as the bucket) and every URL of one is
    presigned. A missing or malformed value raises ImproperlyConfigured."""
    if kind == "local":
        if signed_url_seconds:
            raise ImproperlyConfigured("MEDIA_SIGNED_URL_SECONDS needs MEDIA_STORAGE=s3 (a local folder signs nothing)")
        # No location: it follows MEDIA_ROOT.
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    if signed_url_seconds > _PRESIGN_MAX_SECONDS:
        raise ImproperlyConfigured(
            f"MEDIA_SIGNED_URL_SECONDS={signed_url_seconds} must be at most {_PRESIGN_MAX_SECONDS}"
        )
    bucket = env.str("AWS_STORAGE_BUCKET_NAME", default="").strip()
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise ImproperlyConfigured(
            f"MEDIA_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME, a valid bucket name (got {bucket!r})"
        )
    endpoint = env.str("AWS_S3_ENDPOINT_URL", default="").strip()
    if endpoint and (urlparse(endpoint).scheme not in {"http", "https"} or not urlparse(endpoint).hostname):
        raise ImproperlyConfigured(f"AWS_S3_ENDPOINT_URL={endpoint!r} must be an http:// or https:// URL")
    key, secret = env.str("AWS_ACCESS_KEY_ID", default=""), env.str("AWS_SECRET_ACCESS_KEY", default="")
    if bool(key) != bool(secret):
        raise ImproperlyConfigured("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (an IAM role)")
    options = {
        "bucket_name": bucket,
        "endpoint_url": endpoint or None,
        "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
        # None: boto3's own chain (instance role, ~/.aws).
        "access_key": key or None,
        "secret_key": secret or None,
        "default_acl": None,
        "querystring_auth": True,
        "querystring_expire": signed_url_seconds or 60,
        "signature_version": "s3v4",
        # Never overwrite: a name in use gets a suffix, as on the local disk.
        "file_overwrite": False,
    }
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


_MEDIA = media_storage(MEDIA_STORAGE, MEDIA_SIGNED_URL_SECONDS)

MODELS_DIR = env_path("MODELS_DIR", VAR_DIR / "models")
# ControlNet's annotators with learned weights (workers/annotators.py): one
# folder per preprocess, e.g. ANNOTATORS_DIR/depth (a transformers
# depth-estimation model such as Intel/dpt-hybrid-midas).
ANNOTATORS_DIR = env_path("ANNOTATORS_DIR", MODELS_DIR / "annotators")

STATIC_URL = "/static/"
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]
# Hashed, compressed files in production; tests and development read the
# source folders and need no collectstatic.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": _MEDIA,
    "private": _MEDIA,
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Auth and allauth -------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "account"
LOGOUT_REDIRECT_URL = "home"

ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env_choice("ACCOUNT_EMAIL_VERIFICATION", "mandatory", ("mandatory", "optional", "none"))
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[img2img portal] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if HTTPS_ONLY else "http"
# Rate limits need a real cache (CACHES is Redis). allauth's defaults apply
# to the rest (signup 20/m/ip, password reset 20/m/ip,5/m/key, ...). The
# admin login goes through allauth (portal/urls.py), so this covers it too.
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}

# Reverse proxies in front of the app (comma-separated IPs or CIDRs; default:
# none). A request's client address is its peer's, unless the peer is one of
# these; then the right-most X-Forwarded-For entry that is not one of them.
# portal.middleware.ClientIpMiddleware (HTTP) and portal.asgi (websockets)
# put that address in REMOTE_ADDR / scope["client"], so allauth's and
# django-ratelimit's "ip" keys and the chat's limits all count real clients.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")
if env_int("TRUSTED_PROXY_COUNT", 0):
    raise ImproperlyConfigured(
        "TRUSTED_PROXY_COUNT was replaced by TRUSTED_PROXIES (the proxies' addresses or networks): "
        "a count trusts X-Forwarded-For from any client that connects directly."
    )

FREE_CREDITS = env_int("FREE_CREDITS", 10)

# --- Mail -------------------------------------------------------------------

EMAIL_FILE_PATH = env_path("EMAIL_FILE_PATH", VAR_DIR / "mail")
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))  # smtp+tls://user:pass@host:587
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="img2img portal <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Stripe (used by billing; empty keys mean payments are not set up) -------

STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")

# Generation limits: uploads, per-person rate and queue, retries and leases.
# Rates are django-ratelimit's "count/period" ("20/m"), counted in the cache.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 4096 * 4096, minimum=64 * 64)
PROMPT_MAX_CHARS = env_int("PROMPT_MAX_CHARS", 1000, minimum=1)
SUBMIT_RATE_LIMIT = env_rate("SUBMIT_RATE_LIMIT", "20/m")
# A quote with an image decodes and re-encodes it like a submit: limited per
# person (per client IP without one). The create page quotes without the image.
QUOTE_RATE_LIMIT = env_rate("QUOTE_RATE_LIMIT", SUBMIT_RATE_LIMIT)
MAX_ACTIVE_JOBS = env_int("MAX_ACTIVE_JOBS", 5, minimum=1)
# An Idempotency-Key and the first answer to it are kept this long (hours);
# older keys are ignored and purged (Celery beat, "purge-idempotency-keys").
IDEMPOTENCY_KEY_HOURS = env_int("IDEMPOTENCY_KEY_HOURS", 24, minimum=1)
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1)
# A running job's lease names its worker process and is renewed by that
# process's heartbeat thread every third of it: a dead worker's job is taken
# back within about LEASE + REAPER_INTERVAL seconds anywhere (once its lease
# and its heartbeat have both run out), and at once on the dead process's own
# host (its pid is gone).
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 8, minimum=3)
# A running job's row gets its progress at most this often (seconds), and at
# each lease renewal; every step reaches its websocket through the channel
# layer at once, so a step costs no database write.
JOB_PROGRESS_WRITE_SECONDS = env_int("JOB_PROGRESS_WRITE_SECONDS", 2, minimum=0)
JOB_QUEUE_TIMEOUT = env_int("JOB_QUEUE_TIMEOUT", 3600, minimum=10)
# Every worker process runs the reaper from a thread of its own, at most
# once per interval across the fleet (a Redis lock); beat runs it too.
REAPER_INTERVAL = env_int("REAPER_INTERVAL", 2, minimum=1)
# A queued job with no message in the broker for this long is sent again.
JOB_RESEND_AFTER = env_int("JOB_RESEND_AFTER", 10, minimum=1)

# The public status page (/status/, /status.json): its figures are computed
# at most once per STATUS_CACHE_SECONDS, and each client address may ask
# STATUS_RATE_LIMIT times (429 beyond). The staff dashboard calls a job slow
# past JOB_SLOW_FACTOR times its model's typical run (or expected wait when
# queued), and never before JOB_SLOW_MIN_SECONDS.
STATUS_CACHE_SECONDS = env_int("STATUS_CACHE_SECONDS", 5, minimum=0)
STATUS_RATE_LIMIT = env_rate("STATUS_RATE_LIMIT", "120/m")
JOB_SLOW_FACTOR = env_int("JOB_SLOW_FACTOR", 3, minimum=1)
JOB_SLOW_MIN_SECONDS = env_int("JOB_SLOW_MIN_SECONDS", 300, minimum=1)

# Support chat: per-person rate, when an unread staff reply is emailed, and
# what the widget promises.
CHAT_RATE_LIMIT = env_rate("CHAT_RATE_LIMIT", "10/m")
CHAT_IP_RATE_LIMIT = env_rate("CHAT_IP_RATE_LIMIT", "60/m")
# New anonymous conversations per client IP: a post without the visitor
# cookie starts one, so without this cap a script could start any number.
CHAT_NEW_CONVERSATION_RATE_LIMIT = env_rate("CHAT_NEW_CONVERSATION_RATE_LIMIT", "5/h")
CHAT_EMAIL_AFTER = env_int("CHAT_EMAIL_AFTER", 15 * 60, minimum=1)
SUPPORT_HOURS = env.str("SUPPORT_HOURS", default="Monday to Friday, 9:00-18:00 UTC")
SUPPORT_REPLY_TIME = env.str("SUPPORT_REPLY_TIME", default="within a few hours")

# --- Channels (websockets) --------------------------------------------------

# The channel layer only rings the bell (at-most-once); state lives in the
# database and clients catch up from it on every (re)connect. Redis pub/sub:
# a group message is one PUBLISH that each process fans out to its own
# sockets; with 1,000 sockets on a job the list-based core layer ran out of
# Redis connections and lost sockets (bench/ws_progress.py).
CHANNELS_PREFIX = env.str("CHANNELS_PREFIX", default="portal:ws")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": CHANNELS_PREFIX},
    }
}
# Job pages' events skip the channel layer: one Redis channel per job
# (CHANNELS_PREFIX + ":job:" + its id), fanned out by each server process to
# its own sockets of the job (generation.fanout).

# --- Celery -----------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
# Requeue a task whose worker process died (SIGKILL, OOM); the task itself
# counts attempts so this cannot loop forever.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("JOB_SOFT_TIME_LIMIT", 600, minimum=1)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 60
# Above the hard time limit, or a long job would be delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT * 2}
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Every task not sent to a checkpoint's queue (webhook deliveries, the
# periodic work below, support e-mails) goes to this queue, which only the
# housekeeping worker consumes: a worker that serves checkpoints drops it at
# start (workers.boot), so nothing but model work waits for a GPU worker and
# a webhook that never answers holds no GPU. "celery", the queue's name
# before, is consumed by the housekeeping worker too, for messages sent
# before an upgrade.
HOUSEKEEPING_QUEUE = "housekeeping"
CELERY_TASK_DEFAULT_QUEUE = HOUSEKEEPING_QUEUE
# Periodic work, on the housekeeping queue: jobs whose worker died (lease expired)
# are retried or failed and refunded; unread support replies are emailed;
# expired idempotency keys are deleted.
CELERY_BEAT_SCHEDULE = {
    "reap-expired-jobs": {
        "task": "generation.reap_jobs",
        "schedule": float(REAPER_INTERVAL),
        # A run nobody picked up in time is dropped, not piled up.
        "options": {"expires": float(REAPER_INTERVAL)},
    },
    "email-unread-support-replies": {"task": "support.remind_unread", "schedule": 300.0},
    # Uploads and results past RESULT_RETENTION_DAYS (a batch per run).
    "expire-results": {"task": "generation.expire_results", "schedule": 600.0, "options": {"expires": 600.0}},
    "purge-idempotency-keys": {"task": "generation.purge_idempotency_keys", "schedule": 3600.0},
}

# Workers: which checkpoints a worker serves ("all" it can load, or a comma
# list of slugs), how long its heartbeat lives, and its pipeline memory budget.
WORKER_CHECKPOINTS = env.str("WORKER_CHECKPOINTS", default="all")
# Its ControlNets likewise ("all" with local weights, a comma list, or "none"),
# held in the pipeline cache (its budget counts them).
WORKER_CONTROLNETS = env.str("WORKER_CONTROLNETS", default="all")
# The LoRAs a worker offers, like WORKER_CONTROLNETS: all (every enabled one
# whose file it has), comma-separated slugs, or none.
WORKER_LORAS = env.str("WORKER_LORAS", default="all")
WORKER_HEARTBEAT_TTL = env_int("WORKER_HEARTBEAT_TTL", 8, minimum=2)
# A drill: milliseconds a worker waits after each denoising step, a stand-in
# for a slow device, so a job stays running long enough to kill its worker or
# restart a server under it (the fault tests; a demo of live progress). 0 in
# production.
WORKER_STEP_DELAY_MS = env_int("WORKER_STEP_DELAY_MS", 0)
# A drill too: milliseconds the record stage waits before it stores a
# finished job's pictures (workers.services.Recorder), so a worker can be
# killed between the pipeline and the record. 0 in production.
WORKER_RECORD_DELAY_MS = env_int("WORKER_RECORD_DELAY_MS", 0)
PIPELINE_CACHE_BYTES = env.str("PIPELINE_CACHE_BYTES", default="auto")
# Speed-ups a worker applies to its pipelines (workers/accel.py): "auto" (all
# of them on CUDA, none elsewhere), "none", or a comma list of
# sdpa,channels_last,fused_qkv,compile,compile_vae.
WORKER_SPEEDUPS = env.str("WORKER_SPEEDUPS", default="auto")
# Checkpoints a worker loads and compiles before its first job (compiled
# code runs only at the shapes warmed up then; a job never compiles): a comma
# list of slugs, "none", or "auto" (on CUDA, the WORKER_CHECKPOINTS named).
WORKER_WARM_CHECKPOINTS = env.str("WORKER_WARM_CHECKPOINTS", default="auto")
# A pool process that warms up reports ready only after it (minutes at the
# first compilation on a machine); Celery's default would kill it after 4 s.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 4.0 if WORKER_WARM_CHECKPOINTS.strip() in ("", "none") else 1800.0
# Batching across people: a worker that takes a job also takes queued jobs
# that can share its pipeline call (same checkpoint, size, steps, strength
# and guidance), up to JOB_BATCH_MAX images in one call (1: no batching; 0:
# "auto", 8 on CUDA and 1 on the CPU), waiting at most JOB_BATCH_WAIT_MS for
# company (0: only what already waits).
JOB_BATCH_MAX = env_int("JOB_BATCH_MAX", 0, minimum=0)
JOB_BATCH_WAIT_MS = env_int("JOB_BATCH_WAIT_MS", 0, minimum=0)
# Model affinity (generation/affinity.py): a turn of a checkpoint goes to an
# idle worker that holds its pipeline already, and a worker that takes a turn
# of a checkpoint it does not hold serves a warm one first (the turn goes back
# once). Off: whichever worker takes the message runs it.
JOB_AFFINITY = env_bool("JOB_AFFINITY", True)
# Uploads and results of finished jobs are deleted after this many days (the
# job rows and the ledger stay); 0 keeps them forever.
RESULT_RETENTION_DAYS = env_int("RESULT_RETENTION_DAYS", 30, minimum=0)

# --- Moderation (generation.moderation, workers.moderation) ----------------

# Prompt checks run at submit, before anything is held or stored: dotted
# paths of callables check(*, field, text) -> label | None (a label refuses
# the text: 400 "moderated"); empty: none. The default applies the blocked
# terms staff keep in the admin.
MODERATION_PROMPT_CHECKS = [
    path.strip()
    for path in env.str("MODERATION_PROMPT_CHECKS", default="generation.moderation.blocked_terms_check").split(",")
    if path.strip()
]
# The image check on the worker: a local transformers image-classification
# model (a folder; relative: under MODELS_DIR) run on every result before it
# is stored. A picture whose score for one of MODERATION_IMAGE_LABELS is at
# least MODERATION_THRESHOLD is flagged: never stored, the job fails
# "moderated", nothing charged. Empty, or no weights there: no image check.
MODERATION_IMAGE_MODEL = env.str("MODERATION_IMAGE_MODEL", default="").strip()
MODERATION_IMAGE_LABELS = [label.strip() for label in env.list("MODERATION_IMAGE_LABELS", default=["nsfw"])]
if not all(MODERATION_IMAGE_LABELS):
    raise ImproperlyConfigured("MODERATION_IMAGE_LABELS: give one or more labels, comma-separated")


def _env_threshold(name: str, default: float) -> float:
    """A score from 0 (flags every picture) up; above 1 flags none."""
    raw = env.str(name, default=str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= 2:
        raise ImproperlyConfigured(f"{name}={raw!r} must be between 0 and 2 (above 1: flag nothing)")
    return value


MODERATION_THRESHOLD = _env_threshold("MODERATION_THRESHOLD", 0.5)

# --- Webhooks (generation.webhooks) ----------------------------------------

# Let webhook URLs point at private, loopback or link-local addresses (a
# receiver on your own network, tests). Off: only public addresses, checked
# at submit and again before every attempt.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)


def _env_delays(name: str, default: str) -> tuple[int, ...]:
    """Comma-separated whole seconds, at least one."""
    raw = env.str(name, default=default)
    try:
        delays = tuple(int(item) for item in raw.split(","))
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a comma-separated list of seconds") from None
    if not delays or min(delays) < 0:
        raise ImproperlyConfigured(f"{name}={raw!r}: give one or more delays, each >= 0 seconds")
    return delays


# Seconds to wait after each failed attempt (timeout, no connection, an
# answer that is not 2xx); after the last one the delivery is failed. The
# default (Standard Webhooks' and Svix's schedule) tries 8 times over ~28 h.
WEBHOOK_RETRY_DELAYS = _env_delays("WEBHOOK_RETRY_DELAYS", "5,300,1800,7200,18000,36000,36000")
# How often beat sends the attempts that are due (seconds), and how long one
# attempt may take in all.
WEBHOOK_SWEEP_INTERVAL = env_int("WEBHOOK_SWEEP_INTERVAL", 10, minimum=1)
WEBHOOK_TIMEOUT = env_int("WEBHOOK_TIMEOUT", 5, minimum=1)
# A person whose deliveries still pending (being retried) reach this many
# cannot submit another job with a webhook_url until some end: an address
# that never answers costs the housekeeping worker up to WEBHOOK_TIMEOUT per
# attempt, 8 attempts each.
WEBHOOK_MAX_PENDING = env_int("WEBHOOK_MAX_PENDING", 20, minimum=1)
CELERY_BEAT_SCHEDULE["send-due-webhooks"] = {
    "task": "generation.send_due_webhooks",
    "schedule": float(WEBHOOK_SWEEP_INTERVAL),
    "options": {"expires": float(WEBHOOK_SWEEP_INTERVAL)},
}

# --- Operations: metrics and health (portal.metrics, portal.views.readyz) ---

# GET /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, it
# is refused (404).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if METRICS_TOKEN and (PLACEHOLDER in METRICS_TOKEN.lower() or len(METRICS_TOKEN) < 16):
    raise ImproperlyConfigured("METRICS_TOKEN must be a random value of 16 characters or more (not the placeholder)")
# Processes that fork (uvicorn --workers N, Celery's prefork pool) share their
# counts through files in this folder (prometheus_client's multiprocess mode;
# one folder per web tier or per worker, emptied when it starts: the run
# command and compose set it). Unset: each process counts alone.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# A worker's main process serves its pool's metrics (jobs run, queue wait and
# run time per model, reaper actions, webhook attempts) on this port (0: off;
# it needs PROMETHEUS_MULTIPROC_DIR, or the pool's counts would be lost).
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
WORKER_METRICS_ADDRESS = env.str("WORKER_METRICS_ADDRESS", default="127.0.0.1")
if WORKER_METRICS_PORT and not PROMETHEUS_MULTIPROC_DIR:
    raise ImproperlyConfigured(
        "WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR (a folder for the pool processes' counts)"
    )

# --- Security ---------------------------------------------------------------

SECURE_SSL_REDIRECT = HTTPS_ONLY
SESSION_COOKIE_SECURE = HTTPS_ONLY
CSRF_COOKIE_SECURE = HTTPS_ONLY
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS_ONLY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS_ONLY
SECURE_HSTS_PRELOAD = HTTPS_ONLY
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # non-file form data
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # larger files spool to a temporary file

# --- Locale and logging -----------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Structured logs (portal.logs): one JSON object per line in production, a
# readable line under scripts/run (DEBUG on). A request id follows each
# request into the tasks it sends (django-structlog; portal.celery).
LOG_FORMAT = env_choice("LOG_FORMAT", "console" if DEBUG else "json", ("json", "console"))
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
# Keep an incoming X-Request-ID (one your reverse proxy sets) instead of a fresh id.
LOG_TRUST_REQUEST_ID = env_bool("LOG_TRUST_REQUEST_ID", False)
LOGGING = logs.logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL)
logs.structlog_configure()
DJANGO_STRUCTLOG_CELERY_ENABLED = True
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = LOG_TRUST_REQUEST_ID
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False  # portal.logs binds the address ClientIpMiddleware resolved
# One line per request (request_finished); the job's own events
# (generation.observe) tell a task's story, Celery's lines say the rest.
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = logging.DEBUG
DJANGO_STRUCTLOG_CELERY_DEFAULT_LOG_LEVEL = logging.DEBUG

SITE_NAME = "img2img portal"
