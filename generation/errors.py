"""Errors of the generation rules, each with the HTTP status and code the API
and the pages answer with. No input ever costs credits: these are raised
before the hold, or roll it back."""

from __future__ import annotations


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


class UploadTooLarge(GenerationError):
    status = 413
    code = "upload_too_large"


class UnknownModel(GenerationError):
    code = "unknown_model"


class ModelUnavailable(GenerationError):
    status = 503
    code = "model_unavailable"


class RateLimited(GenerationError):
    status = 429
    code = "rate_limited"


class TooManyJobs(GenerationError):
    status = 429
    code = "too_many_jobs"


class JobNotFound(GenerationError):
    status = 404
    code = "not_found"


class JobFinished(GenerationError):
    status = 409
    code = "job_finished"
