"""The image check on the worker: a transformers image-classification model
(MODERATION_IMAGE_MODEL, a local folder) scores every picture a job made
before anything is stored; a picture whose score for one of
MODERATION_IMAGE_LABELS reaches MODERATION_THRESHOLD is flagged, and its job
fails "moderated" (workers.services). No model configured or no weights
there: the check is off, said once in the log.

The model is loaded through transformers' own image-classification pipeline
(its image processor, softmax or sigmoid as the model's config says), once
per process, never from the network. transformers and torch are imported
only inside functions, as everywhere in workers/.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from workers.errors import ErrorKind, WorkerError

log = logging.getLogger(__name__)
Key = TypeVar("Key")
_said_off: set[str] = set()


@dataclass(frozen=True)
class ImageFlag:
    """A picture the check flagged: its index in the job, the flagged label
    that scored highest, and that score."""

    index: int
    label: str
    score: float


def model_path() -> Path | None:
    """The classifier's folder when one is configured and its weights are
    here (a config.json), else None, said once per process in the log."""
    configured = settings.MODERATION_IMAGE_MODEL
    if not configured:
        _say_off("no MODERATION_IMAGE_MODEL configured")
        return None
    path = Path(configured).expanduser()
    path = path if path.is_absolute() else Path(settings.MODELS_DIR) / path
    if not (path / "config.json").is_file():
        _say_off(f"no classifier weights at {path}")
        return None
    return path


def is_on() -> bool:
    """Whether the image check runs on this worker."""
    return model_path() is not None


def _say_off(reason: str) -> None:
    if reason not in _said_off:
        _said_off.add(reason)
        log.warning("image moderation is off: %s; results are stored unchecked", reason)


def check_setup() -> None:
    """At worker start: say whether the check is on, and refuse to start
    with a model that has none of the flagged labels (it would flag
    nothing, silently). Reads the model's config only, no weights."""
    path = model_path()
    if path is None:
        return
    labels = _model_labels(path)
    flagged = {label.casefold() for label in settings.MODERATION_IMAGE_LABELS}
    if not flagged & {label.casefold() for label in labels}:
        raise ImproperlyConfigured(
            f"MODERATION_IMAGE_LABELS={','.join(settings.MODERATION_IMAGE_LABELS)!r}: the model at {path} "
            f"has the labels {', '.join(labels)}; name at least one of them"
        )
    log.warning(
        "image moderation is on: %s flags %s at a score of %s or more",
        path,
        ", ".join(settings.MODERATION_IMAGE_LABELS),
        settings.MODERATION_THRESHOLD,
    )


def _model_labels(path: Path) -> list[str]:
    config = json.loads((path / "config.json").read_text())
    return [str(label) for label in (config.get("id2label") or {}).values()]


def preload() -> None:
    """Import the classification pipeline's code in the worker's main
    process before it forks its pool (as workers.runtime.preload does for
    diffusers), when the check is on. The model itself is loaded by the
    first job of each pool process: a pool process must report ready within
    seconds, and the model is small next to a checkpoint."""
    if model_path() is not None:
        from transformers import ImageClassificationPipeline  # noqa: F401


def screen(results: dict[Key, list]) -> dict[Key, list[ImageFlag]]:
    """The flagged pictures of each job's results ({key: PIL images}), in
    one classifier call for all of them. Every key is in the answer (an
    empty list: nothing flagged, or the check is off). The check failing
    (its model cannot load or run) raises a retryable WorkerError: a picture
    is never stored unchecked while the check is configured."""
    flags: dict[Key, list[ImageFlag]] = {key: [] for key in results}
    path = model_path()
    pictures = [(key, index, image) for key, images in results.items() for index, image in enumerate(images)]
    if path is None or not pictures:
        return flags
    try:
        classifier = _classifier(str(path), _device())
        rankings = classifier([image for _, _, image in pictures], batch_size=len(pictures))
    except Exception as exc:
        raise WorkerError(ErrorKind.TRANSIENT, f"image moderation failed: {type(exc).__name__}: {exc}") from exc
    flagged = {label.casefold() for label in settings.MODERATION_IMAGE_LABELS}
    for (key, index, _), ranking in zip(pictures, rankings, strict=True):
        hits = [
            (entry["score"], entry["label"])
            for entry in ranking
            if entry["label"].casefold() in flagged and entry["score"] >= settings.MODERATION_THRESHOLD
        ]
        if hits:
            score, label = max(hits)
            flags[key].append(ImageFlag(index=index, label=label, score=float(score)))
    return flags


def _device() -> str:
    from workers.runtime import pick_device

    return pick_device()


@cache
def _classifier(path: str, device: str) -> Any:
    from transformers import pipeline

    # A local folder, never a hub id, so nothing is fetched (workers.runtime
    # also sets HF_HUB_OFFLINE). top_k=None: every label's score, so a
    # flagged label that is not the top one still counts.
    return pipeline("image-classification", model=path, device=device, top_k=None)
