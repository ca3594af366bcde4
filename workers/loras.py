"""LoRAs on a loaded pipeline: named adapters through diffusers' PEFT
integration, loaded once and kept on the pipeline (its memory counts in the
cache's budget, since the adapters' weights are parameters of its modules),
switched per call.

Each call sets the adapters of every LoRA-loadable module (the UNet and the
text encoders) to exactly its job's: the named ones at their weights, or
none at all (adapters disabled: the base weights alone, the same pixels as
a pipeline that never loaded one). So one job's LoRA never leaks into the
next. Adapter names are unique in the process: checkpoints that share a
text encoder (workers.cache) each load their own adapters into it, and a
call activates only its own.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict

from workers.errors import MissingWeights, classify
from workers.spec import LoraSpec

log = logging.getLogger(__name__)

# LoRAs kept loaded on one pipeline; the least recently used goes first.
LORAS_KEPT = 8
_names = itertools.count(1)
# The modules a LoRA may change (diffusers' _lora_loadable_modules of the SD
# and SDXL pipelines).
LORA_MODULES = ("unet", "text_encoder", "text_encoder_2")


def use_loras(pipe, loras: list[tuple[LoraSpec, float]]) -> None:
    """Load what `loras` needs on `pipe` (the cached pipeline; the mode's
    runner shares its modules) and make exactly these active, at these
    weights."""
    kept: OrderedDict[LoraSpec, str] = pipe.__dict__.setdefault("_portal_loras", OrderedDict())
    names, weights = [], []
    for spec, weight in loras:
        if spec not in kept:
            kept[spec] = _load(pipe, spec)
            _forget_oldest(pipe, kept, wanted={lora for lora, _ in loras})
        kept.move_to_end(spec)
        names.append(kept[spec])
        weights.append(weight)
    # Always: a module this pipeline shares with another (workers.cache) may
    # hold that one's adapters, active from its last call.
    _activate(pipe, names, weights)


def forget_loras(pipe) -> None:
    """Delete the adapters `pipe` loaded (the cache evicts it): its shared
    modules must not keep them."""
    kept = pipe.__dict__.pop("_portal_loras", None)
    if kept:
        pipe.delete_adapters(list(kept.values()))


def holds_loras(pipe) -> bool:
    """Whether LoRA layers were added to this pipeline's modules: a compiled
    UNet then runs eagerly (its graph was traced without them)."""
    return bool(pipe.__dict__.get("_portal_loras"))


def _load(pipe, spec: LoraSpec) -> str:
    path = spec.local_path()
    if path is None:
        raise MissingWeights(f"no local file for LoRA {spec.slug} ({spec.source!r})")
    name = f"portal_{next(_names)}"
    _unfuse(pipe)
    try:
        from safetensors.torch import load_file

        # diffusers reads either layout (its own, kohya's) from the state dict.
        pipe.load_lora_weights(load_file(str(path)), adapter_name=name)
    except Exception as exc:
        raise classify(exc) from exc
    log.info("LoRA %s loaded as adapter %s", spec.slug, name)
    return name


def _unfuse(pipe) -> None:
    """Fused query/key/value projections (workers.accel's fused_qkv) would
    bypass a LoRA's adapters on to_q, to_k and to_v: the UNet goes back to
    separate projections before the first LoRA loads."""
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    unet = getattr(pipe, "unet", None)
    if unet is not None and any(isinstance(p, FusedAttnProcessor2_0) for p in unet.attn_processors.values()):
        unet.unfuse_qkv_projections()
        pipe.fusing_unet = False
        log.warning("unfused the UNet's attention projections: LoRAs need them apart")


def _forget_oldest(pipe, kept: OrderedDict, *, wanted: set) -> None:
    while len(kept) > LORAS_KEPT:
        oldest = next((spec for spec in kept if spec not in wanted), None)
        if oldest is None:
            return
        pipe.delete_adapters(kept.pop(oldest))


def _activate(pipe, names: list[str], weights: list[float]) -> None:
    from diffusers.utils.peft_utils import set_adapter_layers, set_weights_and_activate_adapters

    for component in LORA_MODULES:
        module = getattr(pipe, component, None)
        present = getattr(module, "peft_config", None) or {}
        if not present:
            continue
        mine = [(name, weight) for name, weight in zip(names, weights, strict=True) if name in present]
        if mine:
            set_adapter_layers(module, enabled=True)
            set_weights_and_activate_adapters(module, [n for n, _ in mine], [w for _, w in mine])
        else:
            set_adapter_layers(module, enabled=False)


def active_loras(pipe) -> dict[str, list[str]]:
    """{module: the adapters active in it} ([] where adapters are off)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    active = {}
    for component in LORA_MODULES:
        module = getattr(pipe, component, None)
        if module is None or not getattr(module, "peft_config", None):
            continue
        layer = next(m for m in module.modules() if isinstance(m, BaseTunerLayer))
        active[component] = [] if layer.disable_adapters else list(layer.active_adapters)
    return active
