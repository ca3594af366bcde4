"""A pipeline cache bounded by a memory budget, least recently used first out.

Components are counted once however many pipelines hold them: checkpoints of
one architecture that ship identical files (a shared VAE or text encoder)
reuse the module already in memory (see runtime.load_pipeline), and the
budget counts that module once.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.spec import CheckpointSpec

log = logging.getLogger(__name__)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}


def parse_bytes(text: str) -> int:
    """'12GB', '512m', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size like 12GB or 512MB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class _Entry:
    pipe: Any
    keys: dict[str, str]  # component name -> shared key


class PipelineCache:
    def __init__(self, *, budget_bytes: int, loader: Callable, device: str) -> None:
        self.budget_bytes = budget_bytes
        self.device = device
        self._loader = loader  # (spec, device=, shared=) -> (pipe, keys)
        self._entries: OrderedDict[CheckpointSpec, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: CheckpointSpec) -> tuple[Any, bool]:
        """The spec's pipeline and whether it was loaded now (a miss)."""
        with self._lock:
            if spec in self._entries:
                self._entries.move_to_end(spec)
                return self._entries[spec].pipe, False
            pipe, keys = self._loader(spec, device=self.device, shared=self._shared_modules())
            self._entries[spec] = _Entry(pipe, keys)
            self._evict(keep=spec)
            return pipe, True

    def loaded(self) -> list[str]:
        return [spec.slug for spec in self._entries]

    def memory_bytes(self) -> int:
        """Bytes of all distinct modules held, each counted once."""
        from workers.runtime import module_bytes

        seen: dict[int, int] = {}
        for entry in self._entries.values():
            for module in _modules(entry.pipe):
                seen.setdefault(id(module), module_bytes(module))
        return sum(seen.values())

    def _shared_modules(self) -> dict[str, Any]:
        shared = {}
        for entry in self._entries.values():
            for name, key in entry.keys.items():
                shared.setdefault(key, getattr(entry.pipe, name))
        return shared

    def _evict(self, *, keep: CheckpointSpec) -> None:
        while self.memory_bytes() > self.budget_bytes and len(self._entries) > 1:
            oldest = next(spec for spec in self._entries if spec != keep)
            log.info("pipeline cache over budget: evicting %s", oldest.slug)
            del self._entries[oldest]
        gc.collect()
        _empty_device_cache(self.device)


def _modules(pipe) -> list:
    import torch

    return [value for value in pipe.components.values() if isinstance(value, torch.nn.Module)]


def _empty_device_cache(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()
