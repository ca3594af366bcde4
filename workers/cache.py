"""A pipeline cache bounded by a memory budget, least recently used first out.

Components are counted once however many pipelines hold them: checkpoints of
one architecture that ship identical files (a shared VAE or text encoder)
reuse the module already in memory (see runtime.load_pipeline), and the
budget counts that module once. Networks used beside the pipelines (a
ControlNet, an annotator: network()) are held under the same budget and go
first.
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
        self._networks: OrderedDict[Any, Any] = OrderedDict()
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

    def network(self, key, load: Callable[[], Any]) -> Any:
        """A network run beside the pipelines (a ControlNet, an annotator), by `key`,
        loaded by `load()` on a miss. It counts in the budget; over it,
        networks go first (least recently used first), then pipelines, never
        the pipeline used last (the one this network runs with)."""
        with self._lock:
            if key in self._networks:
                self._networks.move_to_end(key)
                return self._networks[key]
            self._networks[key] = load()
            self._evict(keep=next(reversed(self._entries), None), keep_network=key)
            return self._networks[key]

    def loaded(self) -> list[str]:
        return [spec.slug for spec in self._entries]

    def memory_bytes(self) -> int:
        """Bytes of all distinct modules held, each counted once."""
        from workers.runtime import module_bytes

        seen: dict[int, int] = {}
        modules = [module for entry in self._entries.values() for module in _modules(entry.pipe)]
        # A network is a torch module, or wraps one as `model` (a transformers pipeline).
        networks = [getattr(network, "model", network) for network in self._networks.values()]
        for module in modules + networks:
            seen.setdefault(id(module), module_bytes(module))
        return sum(seen.values())

    def _shared_modules(self) -> dict[str, Any]:
        shared = {}
        for entry in self._entries.values():
            for name, key in entry.keys.items():
                shared.setdefault(key, getattr(entry.pipe, name))
        return shared

    def _evict(self, *, keep: CheckpointSpec | None, keep_network=None) -> None:
        while self.memory_bytes() > self.budget_bytes:
            network = next((key for key in self._networks if key != keep_network), None)
            if network is not None:
                log.info("pipeline cache over budget: evicting network %s", network)
                del self._networks[network]
                continue
            oldest = next((spec for spec in self._entries if spec != keep), None)
            if oldest is None:
                break
            log.info("pipeline cache over budget: evicting %s", oldest.slug)
            from workers.loras import forget_loras

            forget_loras(self._entries.pop(oldest).pipe)
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
