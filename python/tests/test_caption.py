"""Captioner: captions as `skyscribe caption --jsonl` writes them, for each decoding."""

from __future__ import annotations

import pytest

import skyscribe
from conftest import SAMPLES, cli_jsonl, eurosat_images


@pytest.fixture(scope="module")
def captioner():
    return skyscribe.Captioner()


@pytest.mark.parametrize(
    "options,flags",
    [
        ({}, []),
        ({"decode": "beam", "beam_size": 3}, ["--decode", "beam", "--beam-size", "3"]),
        (
            {"decode": "sample", "top_p": 0.8, "seed": 7, "temperature": 0.9},
            ["--decode", "sample", "--top-p", "0.8", "--seed", "7", "--temperature", "0.9"],
        ),
    ],
)
def test_captions_are_the_clis(captioner, options, flags):
    paths = eurosat_images(1)[:4] + [SAMPLES / "eurosat-river.jpg"]
    got = captioner.caption(paths, batch_size=2, **options)
    want = cli_jsonl("caption", "--batch-size", "2", *flags, *paths)
    assert got == [w["caption"] for w in want]
    assert all(isinstance(c, str) and c.strip() for c in got)


def test_captions_of_embeddings_are_the_greedy_captions(captioner):
    paths = eurosat_images(1)[:3]
    e = captioner.clip.embed_images(paths)
    assert captioner.caption_embeddings(e) == captioner.caption(paths)


def test_options_of_another_decoding_are_refused_as_the_cli_refuses_them(captioner):
    path = SAMPLES / "eurosat-river.jpg"
    with pytest.raises(ValueError, match="--top-p is for --decode sample"):
        captioner.caption([path], top_p=0.5)
    with pytest.raises(ValueError, match="--beam-size is for --decode beam"):
        captioner.caption([path], decode="sample", beam_size=2)
    with pytest.raises(ValueError, match="expected greedy, beam or sample"):
        captioner.caption([path], decode="nucleus")
