"""Prompt weights in AUTOMATIC1111's syntax, read into weighted fragments.

`(words:1.3)` weights words by 1.3, `(words)` by 1.1 and `[words]` by
1/1.1 (nesting multiplies; a bracket left open weights the rest), `\\(`,
`\\)`, `\\[`, `\\]` and `\\\\` are the characters themselves. The worker
turns the fragments into embeddings with compel (workers.prompts), which
also encodes prompts longer than the text encoder's 77 tokens in chunks
instead of cutting them. compel reads its own syntax (`(words)1.3`,
`words++`), not A1111's, which people bring from every other tool: this
is A1111's parser (modules/prompt_parser.py, parse_prompt_attention),
without BREAK.
"""

from __future__ import annotations

import re

ROUND = 1.1
SQUARE = 1 / 1.1

_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes
    \(|\[|                        # openers
    :\s*([+-]?[.\d]+)\s*\)|       # (words:1.3)'s end
    \)|]|                         # closers
    [^\\()\[\]:]+|:               # text
    """,
    re.X,
)
# A bracket that is not escaped: the prompt has weights.
_UNESCAPED_BRACKET = re.compile(r"(?<!\\)(?:\\\\)*[()\[\]]")


def has_weights(text: str) -> bool:
    """Whether `text` uses the weight syntax (an unescaped bracket)."""
    return bool(_UNESCAPED_BRACKET.search(text))


def weighted_fragments(text: str) -> list[tuple[str, float]]:
    """`text` as (fragment, weight) pairs in order, neighbours of equal
    weight merged; [("", 1.0)] for an empty text."""
    fragments: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= factor

    for match in _ATTENTION.finditer(text):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\"):
            fragments.append([piece[1:] or "\\", 1.0])
        elif piece == "(":
            round_open.append(len(fragments))
        elif piece == "[":
            square_open.append(len(fragments))
        elif weight is not None and round_open:
            try:
                multiply(round_open.pop(), float(weight))
            except ValueError:  # "1.2.3": not a number, A1111 keeps the text
                fragments.append([piece, 1.0])
        elif piece == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            fragments.append([piece, 1.0])
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    merged: list[list] = []
    for fragment in fragments:
        if merged and merged[-1][1] == fragment[1]:
            merged[-1][0] += fragment[0]
        else:
            merged.append(fragment)
    return [(text, weight) for text, weight in merged] or [("", 1.0)]


def plain_text(text: str) -> str:
    """`text` without its weight syntax (what a pooled embedding reads)."""
    return "".join(fragment for fragment, _ in weighted_fragments(text))
