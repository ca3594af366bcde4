"""Webhook rules: the per-person signing secret, the check of a job's
webhook_url at submit, and the delivery of a finished job's JSON to it,
signed per the Standard Webhooks spec (the `standardwebhooks` package).

A delivery's life (generation.models.WebhookDelivery):
webhook_schedule, in the transaction that ends the job: the row (one
webhook id, the body fixed) and, after commit, a message for attempt 1 ->
webhook_deliver(attempt=n): claims attempt n by a conditional update
(attempts n-1 -> n), posts, and records delivered, or the next attempt's
time (WEBHOOK_RETRY_DELAYS), or failed when the delays are used up or the
address is refused -> webhooks_send_due (Celery beat, every
WEBHOOK_SWEEP_INTERVAL s): sends a message for every pending delivery whose
time has come, each reserved first by a conditional update.

At least once, never twice the same attempt: a lost message or a sender that
died is followed, after CLAIM_SECONDS (a minute), by the next attempt; two
messages for one attempt claim it once. Long waits live in `next_attempt_at`, not in
Celery countdowns (the Redis transport redelivers ETA tasks that wait past
its visibility timeout).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, QuerySet
from django.db.models.functions import Now
from django.utils import timezone
from standardwebhooks import Webhook

from generation import outbound
from generation.dispatch import webhook_dispatch
from generation.errors import InvalidParams
from generation.metrics import webhook_observed
from generation.models import Job, WebhookDelivery, WebhookSecret
from generation.schemas import job_out
from generation.selectors import job_snapshot

log = logging.getLogger(__name__)
Status = WebhookDelivery.Status
SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
# How long an attempt (or the message that will make it) owns a delivery:
# longer than a request may take (WEBHOOK_TIMEOUT) plus a queue's usual wait
# (see _claim_seconds).
CLAIM_SECONDS = 60
DUE_BATCH = 500
USER_AGENT = "img2img-portal-webhooks/1"


# --- The signing secret -------------------------------------------------------------


def webhook_secret_get(*, user) -> WebhookSecret:
    """The person's signing secret, created on first use."""
    found = WebhookSecret.objects.filter(user=user).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return WebhookSecret.objects.create(user=user, key=_new_key())
    except IntegrityError:  # created at the same moment by another request
        return WebhookSecret.objects.get(user=user)


def webhook_secret_rotate(*, user) -> WebhookSecret:
    """A new secret replaces the old one at once: attempts from now on are
    signed with it, the old one verifies nothing new."""
    secret, created = WebhookSecret.objects.get_or_create(user=user, defaults={"key": _new_key()})
    if not created:
        WebhookSecret.objects.filter(id=secret.id).update(key=_new_key(), rotated_at=timezone.now())
        secret.refresh_from_db()
    return secret


def _new_key() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


# --- At submit ----------------------------------------------------------------------


def webhook_url_check(url: str, *, user=None) -> str:
    """The URL a job may call when it ends, or InvalidParams naming the
    field: http or https, a host that resolves now, and only to public
    addresses (unless WEBHOOK_ALLOW_PRIVATE); given `user`, only while
    fewer than WEBHOOK_MAX_PENDING of their deliveries are pending."""
    if user is not None:
        pending = WebhookDelivery.objects.filter(job__user=user, status=Status.PENDING).count()
        if pending >= settings.WEBHOOK_MAX_PENDING:
            raise InvalidParams(
                {
                    "webhook_url": f"{pending} of your webhook deliveries are still being retried; "
                    "submit without a webhook_url, or wait until they are delivered or given up."
                }
            )
    try:
        target = outbound.target_of(url)
        outbound.checked_address(target, allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
    except (outbound.UrlRefused, outbound.HostUnresolved) as exc:
        raise InvalidParams({"webhook_url": str(exc)}) from None
    return url


# --- Delivery -----------------------------------------------------------------------


def webhook_schedule(*, job: Job) -> WebhookDelivery | None:
    """Inside the transaction that ended `job`: its delivery, with the body
    as the job's JSON is now, and attempt 1 sent after the commit. None for
    a job without a webhook_url. Once per job: a job ends once."""
    if not job.webhook_url:
        return None
    snapshot = job_snapshot(job.id)
    delivery = WebhookDelivery.objects.create(
        job_id=job.id,
        url=job.webhook_url,
        webhook_id=f"msg_{uuid.uuid4().hex}",
        payload=json.dumps(job_out(snapshot), separators=(",", ":")),
        # Reserved for the message sent after commit; the sweep takes over if
        # that message is lost.
        next_attempt_at=_in(_claim_seconds()),
    )
    transaction.on_commit(lambda: webhook_dispatch(delivery_id=delivery.id, attempt=1), robust=True)
    return delivery


def webhook_deliver(*, delivery_id: int, attempt: int) -> str:
    """Make attempt number `attempt` of a delivery, once: a message for an
    attempt already made, or for a delivery that ended, does nothing.
    Returns what happened: delivered, retry, failed, refused or not claimed."""
    claimed = WebhookDelivery.objects.filter(id=delivery_id, status=Status.PENDING, attempts=attempt - 1).update(
        attempts=attempt, next_attempt_at=_in(_claim_seconds()), updated_at=timezone.now()
    )
    if not claimed:
        return "not claimed"
    delivery = WebhookDelivery.objects.select_related("job__user").get(id=delivery_id)
    try:
        answer, permanent = _send(delivery)
    except Exception as exc:  # a bug must cost an attempt, not retry every minute forever
        log.exception("webhook %s attempt %s", delivery.webhook_id, attempt)
        answer, permanent = outbound.Answer(error=f"Internal error: {type(exc).__name__}"), False
    fields = {
        "last_attempt_at": timezone.now(),
        "last_status_code": answer.status,
        "last_response": answer.body_prefix,
        "last_error": answer.error[:500],
        "updated_at": timezone.now(),
    }
    delays = settings.WEBHOOK_RETRY_DELAYS
    if answer.ok:
        fields.update(status=Status.DELIVERED, next_attempt_at=None, delivered_at=timezone.now())
        outcome = "delivered"
    elif permanent or attempt > len(delays):
        fields.update(status=Status.FAILED, next_attempt_at=None)
        outcome = "refused" if permanent else "failed"
    else:
        fields.update(next_attempt_at=_in(delays[attempt - 1]))
        outcome = "retry"
    # Only while this attempt is still the latest (a resend in between keeps it).
    WebhookDelivery.objects.filter(id=delivery_id, attempts=attempt, status=Status.PENDING).update(**fields)
    if outcome != "delivered":
        log.info("webhook %s attempt %s: %s (%s)", delivery.webhook_id, attempt, outcome, answer.error or answer.status)
    webhook_observed(outcome)
    return outcome


def webhooks_send_due() -> int:
    """Periodic (Celery beat): send a message for the next attempt of every
    pending delivery whose time has come. Each is reserved by a conditional
    update first, so concurrent sweeps send one message per attempt.
    Returns how many were sent."""
    due = (
        WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=Now())
        .order_by("next_attempt_at")
        .values_list("id", "attempts")[:DUE_BATCH]
    )
    sent = 0
    for delivery_id, attempts in due:
        reserved = WebhookDelivery.objects.filter(
            id=delivery_id, status=Status.PENDING, attempts=attempts, next_attempt_at__lte=Now()
        ).update(next_attempt_at=_in(_claim_seconds()))
        if reserved:
            try:
                webhook_dispatch(delivery_id=delivery_id, attempt=attempts + 1)
            except Exception:  # the broker is down: the reservation expires, the next sweep tries again
                log.warning("could not send webhook delivery %s", delivery_id, exc_info=True)
                continue
            sent += 1
    return sent


def webhooks_resend(*, deliveries: QuerySet[WebhookDelivery]) -> int:
    """Staff: send these deliveries again now, the same message (webhook id
    and body), as the next attempt of each. If it fails, the retry schedule
    goes on from that attempt: a delivery that had used it up is failed
    again at once. Returns how many."""
    rows = list(deliveries.values_list("id", "attempts"))
    with transaction.atomic():
        for delivery_id, attempts in rows:
            WebhookDelivery.objects.filter(id=delivery_id, attempts=attempts).update(
                status=Status.PENDING, next_attempt_at=_in(_claim_seconds()), updated_at=timezone.now()
            )
            transaction.on_commit(
                lambda delivery_id=delivery_id, attempts=attempts: webhook_dispatch(
                    delivery_id=delivery_id, attempt=attempts + 1
                ),
                robust=True,
            )
    return len(rows)


def _send(delivery: WebhookDelivery) -> tuple[outbound.Answer, bool]:
    """Check where the URL points now (DNS may have changed since the
    submit), sign with the owner's current secret, post. The flag: the
    refusal is permanent."""
    try:
        target = outbound.target_of(delivery.url)
        address = outbound.checked_address(target, allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
    except outbound.UrlRefused as exc:
        return outbound.Answer(error=f"Refused: {exc}"), True
    except outbound.HostUnresolved as exc:
        return outbound.Answer(error=str(exc)), False
    secret = webhook_secret_get(user=delivery.job.user)
    now = datetime.now(tz=UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret.key).sign(delivery.webhook_id, now, delivery.payload),
    }
    body = delivery.payload.encode()
    return outbound.post(target, address, body=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT), False


def _claim_seconds() -> int:
    return max(CLAIM_SECONDS, 4 * settings.WEBHOOK_TIMEOUT)


def _in(seconds: float):
    """`seconds` from now by the database's clock, which the sweep compares
    against too."""
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())
