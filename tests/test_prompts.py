"""Prompt weights (A1111's syntax) and long prompts: parsed into weighted
fragments (generation.prompts), encoded by compel in 77-token chunks
(workers.prompts); a job's pixels do not depend on what it is batched with."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from generation.params import JobParams
from generation.prompts import ROUND, SQUARE, has_weights, plain_text, weighted_fragments
from tests.helpers import job_params
from workers.prompts import prompt_shape
from workers.runtime import BatchItem, run_batch

SOURCE = Image.new("RGB", (96, 80), (200, 120, 40))
# The test tokenizer reads one token per character: this is past 77 tokens.
LONG = "a red fox in the snow, " * 5


params = functools.partial(job_params, steps=3, prompt="a red fox")


def made(pipe, spec, *many: JobParams) -> list[np.ndarray]:
    results = run_batch(pipe, spec, [BatchItem(SOURCE, p) for p in many])
    return [np.asarray(images[0], dtype=np.int16) for images in results]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("a (red:1.3) fox", [("a ", 1.0), ("red", 1.3), (" fox", 1.0)]),
        ("a (red) fox", [("a ", 1.0), ("red", ROUND), (" fox", 1.0)]),
        ("a [red] fox", [("a ", 1.0), ("red", SQUARE), (" fox", 1.0)]),
        ("((red))", [("red", ROUND * ROUND)]),
        ("(red [fox])", [("red ", ROUND), ("fox", ROUND * SQUARE)]),
        (r"a \(red\) fox", [("a (red) fox", 1.0)]),
        ("(red:0.5) (fox:0.5)", [("red", 0.5), (" ", 1.0), ("fox", 0.5)]),
        ("(open red", [("open red", ROUND)]),  # left open: weights the rest
        ("close) red", [("close) red", 1.0)]),
        ("time 12:30", [("time 12:30", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_a1111_weights_become_weighted_fragments(text, fragments):
    got = weighted_fragments(text)
    assert [part for part, _ in got] == [part for part, _ in fragments]
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in fragments])


def test_only_an_unescaped_bracket_means_weights():
    assert has_weights("a (red) fox") and has_weights("[x]") and has_weights("\\\\(x)")
    assert not has_weights(r"a \(red\) fox") and not has_weights("a red fox: 1.3")
    assert plain_text("a (red:1.3) [fox]") == "a red fox"


def test_shapes_are_text_for_a_plain_short_prompt_and_embeddings_otherwise(pipes):
    pipe, spec = pipes("test-sd1")
    assert prompt_shape(pipe, spec.family, "a red fox", "") == ("text",)
    assert prompt_shape(pipe, spec.family, "a (red) fox", "") == ("embeddings", 1)
    assert prompt_shape(pipe, spec.family, "a fox", "(blurry:1.2)") == ("embeddings", 1)
    assert prompt_shape(pipe, spec.family, LONG, "") == ("embeddings", 2)


def test_a_weight_changes_the_picture_and_the_same_weight_gives_the_same_pixels(pipes):
    pipe, spec = pipes("test-sd1")
    plain, up, down = made(pipe, spec, params(), params(prompt="a (red:1.6) fox"), params(prompt="a (red:0.4) fox"))
    assert np.abs(up - plain).mean() > 0.5 and np.abs(up - down).mean() > 0.5
    alone = made(pipe, spec, params(prompt="a (red:1.6) fox"))[0]
    assert np.array_equal(made(pipe, spec, params(prompt="a (red:1.6) fox"))[0], alone)
    assert np.abs(alone - up).max() <= 2  # batched beside another weighted job: up to float rounding


@pytest.mark.parametrize("checkpoint", ["test-sd1", "test-sdxl"])
def test_a_long_prompt_is_not_cut_at_77_tokens(pipes, checkpoint):
    pipe, spec = pipes(checkpoint)
    ending_a, ending_b = made(pipe, spec, params(prompt=LONG + "at dawn"), params(prompt=LONG + "by night"))
    assert np.abs(ending_a - ending_b).mean() > 0.5


@pytest.mark.parametrize("checkpoint", ["test-sd1", "test-sdxl"])
def test_a_job_has_the_same_pixels_alone_and_beside_jobs_of_other_prompt_shapes(pipes, checkpoint):
    pipe, spec = pipes(checkpoint)
    long, weighted, plain = (
        params(prompt=LONG + "at dawn", negative_prompt="(blurry)"),
        params(prompt="a [red] fox", seed=7),
        params(prompt="a fox", seed=8),
    )
    together = made(pipe, spec, long, weighted, plain)
    for alone, batched in zip([made(pipe, spec, p)[0] for p in (long, weighted, plain)], together, strict=True):
        # Up to the float rounding that differs between batched and single kernels.
        assert np.abs(alone - batched).max() <= 2


def test_a_long_prompt_with_sentences_makes_the_chunks_its_shape_says(pipes):
    pipe, spec = pipes("test-sd1")
    sentences = "a. " + "bb " * 50  # 102 tokens; compel's default would cut after "a."
    assert prompt_shape(pipe, spec.family, sentences, "") == ("embeddings", 2)
    assert len(made(pipe, spec, params(prompt=sentences))) == 1
