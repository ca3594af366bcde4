"""Weighted and long prompts as embeddings, through compel.

A prompt without weights that fits the text encoder (77 tokens) goes to
the pipeline as text, as before. Any other (generation.prompts: A1111's
weights, or longer than 77 tokens) is encoded here: its fragments
weighted by compel, in as many 77-token chunks as it needs, never cut.

A job's pixels must not depend on what it is batched with, and padding a
short prompt's embedding to a long one's changes what attention sees. So
each job has a prompt shape (`prompt_shape`): "text", or "embeddings" with
its number of chunks; workers.runtime.run_batch runs the jobs of one shape
together and each shape in its own call.
"""

from __future__ import annotations

import math

from catalog.families import FAMILIES
from generation.prompts import has_weights, plain_text, weighted_fragments

# Token positions of one chunk between its start and end tokens.
CHUNK = 75
# Architectures whose text encoders compel drives (CLIP); SD3 and FLUX take
# their prompts as text (their T5 reads long prompts itself).
WEIGHTED_ARCHITECTURES = ("sd1", "sd2", "sdxl")


def prompt_shape(pipe, family: str, prompt: str, negative: str) -> tuple:
    """("text",) or ("embeddings", chunks) for a job's prompts."""
    if FAMILIES[family].architecture not in WEIGHTED_ARCHITECTURES:
        return ("text",)
    texts = [prompt, negative]
    tokens = max(len(pipe.tokenizer(plain_text(text)).input_ids) - 2 for text in texts)
    chunks = max(1, math.ceil(tokens / CHUNK))
    if chunks == 1 and not any(has_weights(text) for text in texts):
        return ("text",)
    return ("embeddings", chunks)


def prompt_embeddings(pipe, family: str, prompts: list[str], negatives: list[str], *, chunks: int) -> dict:
    """The pipeline call's embedding arguments for these rows (prompt and
    negative per row; SDXL's pooled ones too), each padded with empty
    chunks to `chunks`."""
    import torch

    compel = _compel(pipe, family)
    sdxl = FAMILIES[family].architecture == "sdxl"
    cache: dict[str, tuple] = {}

    def encode(text: str):
        if text not in cache:
            from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

            fragments = [Fragment(part, weight) for part, weight in weighted_fragments(text)]
            conditioning, _ = compel.build_conditioning_tensor_for_conjunction(
                Conjunction([FlattenedPrompt(fragments)])
            )
            pooled = compel.conditioning_provider.get_pooled_embeddings([plain_text(text)]) if sdxl else None
            cache[text] = (conditioning, pooled)
        return cache[text]

    with torch.no_grad():
        rows = [encode(text) for text in prompts]
        negative_rows = [encode(text) for text in negatives]
        empty = encode("")[0]  # one chunk of nothing
        target = empty.shape[-2] * chunks
        padded = [_pad(conditioning, empty, target) for conditioning, _ in rows + negative_rows]
    arguments = {
        "prompt_embeds": torch.cat(padded[: len(rows)]),
        "negative_prompt_embeds": torch.cat(padded[len(rows) :]),
    }
    if sdxl:
        arguments["pooled_prompt_embeds"] = torch.cat([pooled for _, pooled in rows])
        arguments["negative_pooled_prompt_embeds"] = torch.cat([pooled for _, pooled in negative_rows])
    return arguments


def _pad(conditioning, empty, target: int):
    import torch

    conditioning = conditioning if conditioning.dim() == 3 else conditioning.unsqueeze(0)
    empty = empty if empty.dim() == 3 else empty.unsqueeze(0)
    while conditioning.shape[1] < target:
        conditioning = torch.cat([conditioning, empty], dim=1)
    return conditioning


def _compel(pipe, family: str):
    """compel over the pipeline's tokenizers and text encoders, made per call
    (cheap: no model work; compel caches encodings, which a LoRA set for the
    next call would make stale)."""
    from compel import Compel, ReturnedEmbeddingsType
    from compel.embeddings_provider import SplitLongTextMode

    # Chunks of exactly 75 tokens (compel's default splits at a sentence's
    # end, which makes more chunks than prompt_shape counts).
    split = SplitLongTextMode.BRUTAL

    if FAMILIES[family].architecture == "sdxl":
        return Compel(
            tokenizer=[pipe.tokenizer, pipe.tokenizer_2],
            text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
            returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
            requires_pooled=[False, True],
            truncate_long_prompts=False,
            split_long_text_mode=split,
        )
    return Compel(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        truncate_long_prompts=False,
        split_long_text_mode=split,
    )
