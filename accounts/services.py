"""Account rules. Balances belong to billing; this module only asks it."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from datetime import timedelta

import redis
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, FreeCreditClaim, User
from billing.ledger import credits_grant
from billing.models import LedgerEntry

log = logging.getLogger(__name__)


# Providers whose several domains deliver to one mailbox, and those that
# ignore dots in the local part: one mailbox must not farm several grants.
_SAME_MAILBOX_DOMAINS = {
    "googlemail.com": "gmail.com",
    "protonmail.com": "proton.me",
    "protonmail.ch": "proton.me",
    "pm.me": "proton.me",
}
_DOTS_IGNORED = {"gmail.com"}


def email_fingerprint(email: str) -> str:
    """A stable hash of the address as a mailbox: case-insensitive; a
    '+tag' in the local part does not make a new address; nor do dots at
    Gmail, or another domain of the same provider (googlemail.com)."""
    local, _, domain = email.strip().lower().rpartition("@")
    domain = domain.rstrip(".")
    domain = _SAME_MAILBOX_DOMAINS.get(domain, domain)
    local = local.split("+", 1)[0]
    if domain in _DOTS_IGNORED:
        local = local.replace(".", "")
    return hashlib.sha256(f"{local}@{domain}".encode()).hexdigest()


def _legacy_fingerprint(email: str) -> str:
    """The fingerprint before provider aliases were folded: claims stored
    with it still count, so an address granted before is not granted again."""
    local, _, domain = email.strip().lower().rpartition("@")
    return hashlib.sha256(f"{local.split('+', 1)[0]}@{domain}".encode()).hexdigest()


def free_credits_grant(*, user, email: str) -> LedgerEntry | None:
    """Grant FREE_CREDITS once per verified email address and once per user.

    Returns the grant, or None when this address (or this user) already had
    it, or the setting is 0. Safe to call on every confirmation: the claim
    row and the ledger reference make a repeat a no-op.
    """
    amount = settings.FREE_CREDITS
    if amount <= 0:
        return None
    ref = f"free:user:{user.pk}"
    with transaction.atomic():
        if LedgerEntry.objects.filter(reference=ref).exists():
            return None
        if FreeCreditClaim.objects.filter(email_hash=_legacy_fingerprint(email)).exists():
            log.info("free credits already claimed for this address (legacy claim); user %s gets none", user.pk)
            return None
        try:
            with transaction.atomic():
                FreeCreditClaim.objects.create(email_hash=email_fingerprint(email))
        except IntegrityError:
            log.info("free credits already claimed for this address; user %s gets none", user.pk)
            return None
        return credits_grant(user=user, amount=amount, ref=ref, memo="Free starting credits")


API_KEY_PREFIX = "i2i_"


def api_key_create(*, user, name: str) -> tuple[ApiKey, str]:
    """Create a key; return it with the secret, which is never shown again."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        user=user, name=name.strip()[:60] or "API key", prefix=secret[:12], key_hash=_hash_key(secret)
    )
    return key, secret


def api_key_revoke(*, user, key_id: int) -> bool:
    revoked = bool(
        ApiKey.objects.filter(id=key_id, user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )
    api_keys_uncache(ApiKey.objects.filter(id=key_id, user=user).values_list("key_hash", flat=True))
    return revoked


# --- The keys' cache, for the status endpoint's fast path (portal.fast_status) ----
#
# A key that authenticated here is remembered in Redis for KEY_CACHE_SECONDS
# as its owner's id: KEY_CACHE_PREFIX + its hash. Revoking the key, deleting
# it, or deactivating its owner puts a marker in its place instead (here and
# in accounts.receivers), which the fast path never honours and which no
# request that read the key as active a moment before can overwrite (it
# caches only where nothing is: SET NX). Its expiry sends the key's next
# request through here, which records its use. The cache's Redis calls time
# out fast: a slow Redis costs an API request at most a quarter second, and
# a cache write that fails is skipped.

KEY_CACHE_PREFIX = "portal:apikey:"
KEY_CACHE_SECONDS = 60
KEY_GONE = "gone"  # the marker of a key no longer honoured
KEY_GONE_SECONDS = 600


@functools.cache
def _key_cache(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)


def _key_cached(key_hash: str, user_id: int) -> None:
    try:
        _key_cache(settings.REDIS_URL).set(KEY_CACHE_PREFIX + key_hash, user_id, ex=KEY_CACHE_SECONDS, nx=True)
    except redis.RedisError:
        log.warning("could not cache an API key", exc_info=True)


def api_keys_uncache(key_hashes) -> None:
    """Mark these keys (by hash) as no longer honoured in the cache, now and
    again after the commit. If Redis cannot be reached the fast path cannot
    answer either (it reads the same Redis); the failure is logged, and an
    entry that survives it lives at most KEY_CACHE_SECONDS."""
    names = [KEY_CACHE_PREFIX + key_hash for key_hash in key_hashes]

    def mark() -> None:
        try:
            with _key_cache(settings.REDIS_URL).pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.set(name, KEY_GONE, ex=KEY_GONE_SECONDS)
                pipe.execute()
        except redis.RedisError:
            log.warning("could not mark %s API key(s) as revoked in the cache", len(names), exc_info=True)

    if names:
        mark()
        transaction.on_commit(mark)


KEY_USE_RESOLUTION = timedelta(minutes=1)


def api_key_user(*, secret: str):
    """The active user a key belongs to, or None. One query, written once
    (_KEY_LOOKUP): a status poll's authentication must cost a round trip,
    not the ORM's query building, which takes longer than the query."""
    if not secret.startswith(API_KEY_PREFIX):
        return None
    now = timezone.now()
    stale = now - KEY_USE_RESOLUTION
    key_hash = _hash_key(secret)
    found = list(User.objects.raw(_KEY_LOOKUP, [connection.ops.adapt_datetimefield_value(stale), key_hash]))
    if not found or not found[0].is_active:
        return None
    user = found[0]
    # Key use is recorded at most once a minute: a client polling its job
    # reads without writing (a write per read costs more than the read).
    if user.key_use_stale:
        ApiKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), id=user.key_id).update(
            last_used_at=now
        )
    _key_cached(key_hash, user.pk)
    return user


# Literal SQL (the tables are the migrations'), the same on PostgreSQL and
# SQLite: the key's user, with the key's id and whether its last recorded use
# is older than the first parameter.
_KEY_LOOKUP = """
    SELECT u.*, k.id AS key_id, (k.last_used_at IS NULL OR k.last_used_at < %s) AS key_use_stale
    FROM accounts_apikey k
    JOIN accounts_user u ON u.id = k.user_id
    WHERE k.key_hash = %s AND k.revoked_at IS NULL
"""


def _hash_key(secret: str) -> str:
    # A fast hash is right here: keys are 256 random bits, not guessable passwords.
    return hashlib.sha256(secret.encode()).hexdigest()
