"""Moderation rules on the generation side (the worker's image check is
workers.moderation).

Before a job is accepted, each prompt text runs through the checks named in
MODERATION_PROMPT_CHECKS (dotted paths). A check is a callable

    check(*, field: str, text: str) -> str | None

given a field name ("prompt", "negative_prompt") and its text; it returns
None to let the text through, or a short label of what matched (shown to
staff in the review list, never to the person) to refuse it. The default,
blocked_terms_check, applies the BlockedTerm rules staff edit in the admin.

A refusal is recorded (ModerationFlag, stage "prompt") and raised as
Moderated, before anything is held or stored: a refused submit costs nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from generation.errors import Moderated
from generation.models import BlockedTerm, ModerationFlag

PromptCheck = Callable[..., "str | None"]
REFUSED_FIELD = "Contains words this service does not accept; change them and try again."
REFUSED_PROMPT = "Your request was refused by the content rules: {fields}. Nothing was charged."
FLAGGED_IMAGE = "A picture of this job was flagged by the content check and was not kept. Nothing was charged."
FIELD_NAMES = {"prompt": "the prompt", "negative_prompt": "the negative prompt"}
# A letter in any script: a word character that is neither a digit nor "_".
LETTER = r"[^\W\d_]"


def prompt_checks() -> list[PromptCheck]:
    """The configured checks, imported once per list of paths. A path that
    does not import to a callable is ImproperlyConfigured (the app's ready()
    asks at start, so a typo stops the process there)."""
    return list(_import_checks(tuple(settings.MODERATION_PROMPT_CHECKS)))


@lru_cache(maxsize=4)
def _import_checks(paths: tuple[str, ...]) -> tuple[PromptCheck, ...]:
    checks = []
    for path in paths:
        try:
            check = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"MODERATION_PROMPT_CHECKS: cannot import {path!r}: {exc}") from None
        if not callable(check):
            raise ImproperlyConfigured(f"MODERATION_PROMPT_CHECKS: {path!r} is not callable")
        checks.append(check)
    return tuple(checks)


def prompt_moderate(*, user, texts: dict[str, str]) -> None:
    """Run every prompt check on every non-empty text. The first text a
    check refuses is recorded for staff and raised as Moderated (400,
    naming the field); the remaining checks of that text are not run."""
    for field, text in texts.items():
        if not text:
            continue
        for check in prompt_checks():
            label = check(field=field, text=text)
            if label:
                ModerationFlag.objects.create(
                    stage=ModerationFlag.Stage.PROMPT, user=user, field=field, text=text, label=str(label)[:200]
                )
                raise Moderated(
                    REFUSED_PROMPT.format(fields=FIELD_NAMES.get(field, field)), fields={field: REFUSED_FIELD}
                )


def blocked_terms_check(*, field: str, text: str) -> str | None:
    """The default prompt check: the enabled BlockedTerm rules, as whole
    words in any case ("cat" blocks "a Cat.", "cat2" and "_cat_" but not
    "concatenate" or "cats"), on the text as a tokenizer reads it: NFKC
    (fullwidth letters are letters) without format characters (zero-width
    spaces and joiners, soft hyphens). One query per text; the pattern is
    compiled once per rule set."""
    terms = tuple(BlockedTerm.objects.filter(enabled=True).order_by("id").values_list("term", flat=True))
    if not terms:
        return None
    match = _terms_pattern(terms).search(_readable(text))
    if match is None:
        return None
    found = _normal(match.group(0))
    term = next((term for term in terms if _normal(term) == found), match.group(0))
    return f"blocked term: {term}"


@lru_cache(maxsize=8)
def _terms_pattern(terms: tuple[str, ...]) -> re.Pattern:
    """One alternation of every term, longest first, each bounded by
    anything but a letter (digits and underscores included: CLIP's
    tokenizer splits them off a word; a lookaround, so terms that begin or
    end with punctuation still work) and with any run of spaces between its
    words."""
    alternatives = sorted({_term_regex(_readable(term)) for term in terms if term.split()}, key=len, reverse=True)
    return re.compile(rf"(?<!{LETTER})(?:" + "|".join(alternatives) + rf")(?!{LETTER})", re.IGNORECASE)


def _readable(text: str) -> str:
    """NFKC without format characters (Unicode category Cf)."""
    return "".join(char for char in unicodedata.normalize("NFKC", text) if unicodedata.category(char) != "Cf")


def _term_regex(term: str) -> str:
    return r"\s+".join(re.escape(word) for word in term.split())


def _normal(text: str) -> str:
    return " ".join(_readable(text).casefold().split())


def image_flags_record(*, job, flags: Iterable[tuple[int, str, float]]) -> list[ModerationFlag]:
    """Record the worker's image check flags on `job`'s pictures, as
    (image index, label, score); the pictures themselves are not kept."""
    return ModerationFlag.objects.bulk_create(
        ModerationFlag(
            stage=ModerationFlag.Stage.IMAGE,
            user_id=job.user_id,
            job=job,
            label=label[:200],
            score=score,
            image_index=index,
        )
        for index, label, score in flags
    )


def moderation_flags_review(*, flags, by) -> int:
    """Staff mark flags as reviewed (those not reviewed yet)."""
    return flags.filter(reviewed_at=None).update(reviewed_at=timezone.now(), reviewed_by=by)
