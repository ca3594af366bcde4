"""What the runtime needs to know of a checkpoint, as plain data (no ORM,
no torch), so the runtime can be driven and tested without a database.
A job's settings are generation.params.JobParams."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class CheckpointSpec:
    slug: str
    family: str
    source_kind: str  # hub | folder | single_file
    source: str
    revision: str = ""
    variant: str = ""
    dtype: str = "auto"
    # A dedicated inpainting checkpoint (9-channel UNet): it runs inpainting only.
    inpainting: bool = False

    @classmethod
    def from_checkpoint(cls, checkpoint) -> CheckpointSpec:
        return cls(
            slug=checkpoint.slug,
            family=checkpoint.family,
            source_kind=checkpoint.source_kind,
            source=checkpoint.source,
            revision=checkpoint.revision,
            variant=checkpoint.variant,
            dtype=checkpoint.dtype,
            inpainting=checkpoint.inpainting,
        )

    def local_path(self) -> Path | None:
        """Where the weights are on this machine, or None. Never downloads."""
        return _local_path(self.source_kind, self.source, self.revision, marker="model_index.json")


@dataclass(frozen=True)
class ControlNetSpec:
    """A ControlNet (catalog.models.ControlNet) as plain data."""

    slug: str
    family: str
    source_kind: str  # hub | folder
    source: str
    revision: str = ""
    variant: str = ""

    @classmethod
    def from_controlnet(cls, control) -> ControlNetSpec:
        return cls(
            slug=control.slug,
            family=control.family,
            source_kind=control.source_kind,
            source=control.source,
            revision=control.revision,
            variant=control.variant,
        )

    def local_path(self) -> Path | None:
        return _local_path(self.source_kind, self.source, self.revision, marker="config.json")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA (catalog.models.Lora) as plain data; `version` is its file's
    modification time (a file replaced under the same name loads again)."""

    slug: str
    family: str
    source: str
    version: str = ""

    @classmethod
    def from_lora(cls, lora) -> LoraSpec:
        spec = cls(slug=lora.slug, family=lora.family, source=lora.source)
        path = spec.local_path()
        return replace(spec, version=str(path.stat().st_mtime_ns)) if path is not None else spec

    def local_path(self) -> Path | None:
        return _local_path("single_file", self.source, "", marker="")


def _local_path(kind: str, source: str, revision: str, *, marker: str) -> Path | None:
    """Where a source's weights are on this machine, or None. Never downloads."""
    if kind in ("folder", "single_file"):
        path = Path(source).expanduser()
        path = path if path.is_absolute() else Path(settings.MODELS_DIR) / path
        return path if path.exists() else None
    # A hub repo: a copy under MODELS_DIR/<org>/<name>, else the HF cache.
    mirrored = Path(settings.MODELS_DIR) / source
    if (mirrored / marker).exists():
        return mirrored
    return _hub_cache_path(source, revision or None)


def _hub_cache_path(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
