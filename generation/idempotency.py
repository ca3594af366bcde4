"""Idempotent submits: the `Idempotency-Key` header of the IETF httpapi
draft. A retry with the same key and the same request gets the first answer
(same status, same body, the same job); no second hold, no second job.

The protocol, per (person, key), backed by generation.models.IdempotencyKey:

1. Create the key's row in its own transaction; the unique constraint on
   (person, key) lets one row in. A retry finds the row: another request
   with that key is refused (409), an answered one is replayed.
2. Lock the row (FOR UPDATE SKIP LOCKED) in the transaction that does the
   work and stores the answer with it. A row locked by another request is a
   request in progress (409). Whoever holds the lock and finds no answer
   runs the request, so a row left by a request that died (its transaction
   rolled back, its lock released) is taken over by the next retry.
3. A final answer (2xx, or a 4xx that retrying cannot change) is stored;
   for a retry-later answer (409, 429, ...), a 5xx or an exception the row is
   deleted, so the key can run again.

Keys older than IDEMPOTENCY_KEY_HOURS are ignored and purged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from generation.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from generation.models import IdempotencyKey

log = logging.getLogger(__name__)

# 4xx answers that say "not now" rather than "not this": a retry may succeed.
RETRY_LATER = frozenset({408, 409, 423, 425, 429})
CLAIM_ATTEMPTS = 3


class Answer(NamedTuple):
    status: int
    body: dict
    replayed: bool


def request_fingerprint(*, operation: str, fields: dict, upload=None) -> str:
    """What makes two requests "the same": the operation (method and path),
    the validated form fields and the uploaded files' bytes (hashed here,
    never stored)."""
    payload = {"operation": operation, "fields": fields, "upload": _file_sha256(upload)}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent_answer(*, user, key: str, fingerprint: str, answer: Callable[[], tuple[int, dict]]) -> Answer:
    """The first final answer to (user, key): computed by `answer()` once,
    in the transaction that stores it, then replayed. IdempotencyKeyReused if
    the key came with another request; IdempotencyKeyInProgress while the
    request with that key runs."""
    row = _key_claim(user=user, key=key, fingerprint=fingerprint)
    if row.status_code is not None:
        return Answer(row.status_code, row.body, replayed=True)
    started = False
    try:
        with transaction.atomic():
            locked = IdempotencyKey.objects.select_for_update(skip_locked=True).filter(pk=row.pk).first()
            if locked is None:  # another request holds it (or just gave it up)
                raise _in_progress()
            if locked.status_code is not None:
                return Answer(locked.status_code, locked.body, replayed=True)
            started = True
            status, body = answer()
            if _is_final(status):
                IdempotencyKey.objects.filter(pk=row.pk).update(status_code=status, body=body)
            else:
                IdempotencyKey.objects.filter(pk=row.pk).delete()
            return Answer(status, body, replayed=False)
    except Exception:
        if started:  # a server error: nothing is kept, a retry runs again
            _key_forget(row.pk)
        raise


def idempotency_keys_purge() -> int:
    """Delete the keys older than IDEMPOTENCY_KEY_HOURS (Celery beat)."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=_oldest_kept()).delete()
    return deleted


# --- Internals ----------------------------------------------------------------------


def _key_claim(*, user, key: str, fingerprint: str) -> IdempotencyKey:
    """The key's row: created now (its own transaction, committed before the
    work starts) or found. An expired row is deleted and the key starts over."""
    for _ in range(CLAIM_ATTEMPTS):
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint)
        except IntegrityError:
            row = IdempotencyKey.objects.filter(user=user, key=key).first()
        if row is None:  # deleted meanwhile (its request failed): try again
            continue
        if row.created_at < _oldest_kept():
            IdempotencyKey.objects.filter(pk=row.pk, created_at__lt=_oldest_kept()).delete()
            continue
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with another request; send a new key for a new request.",
                fields={"Idempotency-Key": "used with another request"},
            )
        return row
    raise _in_progress()


def _key_forget(pk: int) -> None:
    """Best effort: the row stays only unanswered and unlocked, which the
    next retry takes over anyway."""
    try:
        IdempotencyKey.objects.filter(pk=pk, status_code=None).delete()
    except DatabaseError:
        log.warning("idempotency key %s: could not delete it after a failed request", pk, exc_info=True)


def _in_progress() -> IdempotencyKeyInProgress:
    return IdempotencyKeyInProgress("A request with this Idempotency-Key is still in progress; retry in a moment.")


def _is_final(status: int) -> bool:
    return 200 <= status < 300 or (400 <= status < 500 and status not in RETRY_LATER)


def _oldest_kept():
    return timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS)


def _file_sha256(upload) -> str | list | None:
    """The upload's hash; of a list of uploads (inpainting's picture and
    mask), each one's, in order."""
    if isinstance(upload, list):
        return [_file_sha256(each) for each in upload]
    if upload is None:
        return None
    digest = hashlib.sha256()
    for chunk in upload.chunks():  # from the start, whatever was read before
        digest.update(chunk)
    upload.seek(0)  # the operation reads it next
    return digest.hexdigest()
