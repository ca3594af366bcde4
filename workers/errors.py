"""How a failed generation is classified. The kind decides what happens next
(retry or not) and what the person is told; see classify()."""

from __future__ import annotations

import enum


class ErrorKind(enum.StrEnum):
    BAD_INPUT = "bad_input"  # permanent: the parameters or image cannot work
    OUT_OF_MEMORY = "out_of_memory"  # the device ran out; maybe retry smaller/elsewhere
    MISSING_WEIGHTS = "missing_weights"  # this worker cannot load the checkpoint
    TRANSIENT = "transient"  # anything else: worth a bounded retry
    CANCELED = "canceled"


MESSAGES = {
    ErrorKind.BAD_INPUT: "The image or settings could not be used with this model.",
    ErrorKind.OUT_OF_MEMORY: "The GPU ran out of memory. Try a smaller size or fewer images.",
    ErrorKind.MISSING_WEIGHTS: "This model's weights are not installed on the worker.",
    ErrorKind.TRANSIENT: "The worker hit a temporary problem.",
    ErrorKind.CANCELED: "Canceled.",
}


class WorkerError(Exception):
    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def public_message(self) -> str:
        return MESSAGES[self.kind]

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.TRANSIENT, ErrorKind.OUT_OF_MEMORY)


class BadInput(WorkerError):
    def __init__(self, detail: str) -> None:
        super().__init__(ErrorKind.BAD_INPUT, detail)


class MissingWeights(WorkerError):
    def __init__(self, detail: str) -> None:
        super().__init__(ErrorKind.MISSING_WEIGHTS, detail)


class Canceled(WorkerError):
    def __init__(self, detail: str = "canceled during the run") -> None:
        super().__init__(ErrorKind.CANCELED, detail)


def classify(exc: BaseException) -> WorkerError:
    """Map any exception from loading or running a pipeline to a WorkerError."""
    if isinstance(exc, WorkerError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfMemoryError" or "out of memory" in text.lower():
        return WorkerError(ErrorKind.OUT_OF_MEMORY, text[:500])
    if isinstance(exc, FileNotFoundError) or name in {"LocalEntryNotFoundError", "EntryNotFoundError"}:
        return MissingWeights(text[:500])
    if isinstance(exc, OSError) and ("no file named" in text or "does not appear to have" in text):
        return MissingWeights(text[:500])
    if isinstance(exc, ValueError | TypeError):
        return BadInput(text[:500])
    return WorkerError(ErrorKind.TRANSIENT, f"{name}: {text[:500]}")
