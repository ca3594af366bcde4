"""Errors of the generation rules, and the one mapping from any error a
person can cause to what they are told: an HTTP status, a code and a
message (public_error). The JSON API and the pages both answer with it.

No input ever costs credits: these are raised before the hold, or roll it back.
"""

from __future__ import annotations

from billing.errors import InsufficientCredits, SpendingBlocked


class GenerationError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class InvalidParams(GenerationError):
    code = "invalid_params"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(
            "Some settings are not valid: " + "; ".join(f"{k}: {v}" for k, v in fields.items()), fields=fields
        )


class InvalidImage(GenerationError):
    code = "invalid_image"


class Moderated(GenerationError):
    """A prompt a moderation check refuses (generation.moderation): nothing
    is held or stored. A job whose picture the worker's image check flags
    fails with the same code."""

    code = "moderated"


class UploadTooLarge(GenerationError):
    status = 413
    code = "upload_too_large"


class UnknownModel(GenerationError):
    code = "unknown_model"


class NotEnoughCredits(GenerationError):
    status = 402
    code = "insufficient_credits"


class AccountBlocked(GenerationError):
    status = 402
    code = "account_blocked"


class ModelUnavailable(GenerationError):
    status = 503
    code = "model_unavailable"


class RateLimited(GenerationError):
    status = 429
    code = "rate_limited"


class TooManyJobs(GenerationError):
    status = 429
    code = "too_many_jobs"


class NotAuthenticated(GenerationError):
    status = 401
    code = "unauthorized"


class JobNotFound(GenerationError):
    status = 404
    code = "not_found"


class JobFinished(GenerationError):
    status = 409
    code = "job_finished"


class IdempotencyKeyReused(GenerationError):
    """The Idempotency-Key was sent before with another request (409, the
    contract in DESIGN.md; the IETF draft suggests 422)."""

    status = 409
    code = "idempotency_key_reused"


class IdempotencyKeyInProgress(GenerationError):
    """A request with this Idempotency-Key is still running: retry later."""

    status = 409
    code = "idempotency_key_in_progress"


class Refused(GenerationError):
    """A refusal of the API framework itself (e.g. a session POST without
    its CSRF token), in the same shape as ours."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


PUBLIC_ERRORS = (GenerationError, InsufficientCredits, SpendingBlocked)


def public_error(exc: Exception) -> GenerationError:
    """What to tell a person about `exc` (one of PUBLIC_ERRORS)."""
    if isinstance(exc, GenerationError):
        return exc
    if isinstance(exc, InsufficientCredits):
        return NotEnoughCredits(
            f"This needs {exc.needed} credits; you have {exc.available}. Buy more credits to continue.",
            fields={"credits": "insufficient"},
        )
    if isinstance(exc, SpendingBlocked):
        return AccountBlocked("Spending is paused on this account; contact support.")
    raise TypeError(f"{type(exc).__name__} is not an error a person is told about") from exc
