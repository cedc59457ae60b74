"""Index and build_index: the same folders and results as `skyscribe index build` and
`skyscribe search --jsonl`."""

from __future__ import annotations

import pytest

import skyscribe
from conftest import cli_jsonl, eurosat_images, run_cli


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    for p in eurosat_images(3):
        (root / p.name).symlink_to(p)
    return root


def test_an_index_built_in_python_searches_as_the_cli_searches(images, tmp_path):
    ours = tmp_path / "ours"
    report = skyscribe.build_index(ours, [images])
    assert report["encoded"] == 30 and report["count"] == 30 and report["failed"] == []
    theirs = tmp_path / "theirs"
    run_cli("index", "build", "--index", theirs, images)

    index = skyscribe.Index(ours)
    assert len(index) == 30
    for query, flags in [
        ({"text": "a river"}, ["--text", "a river"]),
        (
            {"text": ["2:a lake", "a beach"], "negative_text": "a forest", "top_k": 5},
            ["--text", "2:a lake", "--text", "a beach", "--negative-text", "a forest",
             "--top-k", "5"],
        ),
        (
            {"image": str(images / "River_1.jpg"), "engine": "exact"},
            ["--image", images / "River_1.jpg", "--engine", "exact"],
        ),
    ]:
        got = index.search(**query)
        for folder in (ours, theirs):
            want = cli_jsonl("search", "--index", folder, *flags)
            assert got == want
    assert got[0]["path"].endswith("River_1.jpg") and got[0]["rank"] == 1

    # Building again changes nothing; the CLI's index opens in Python too.
    again = skyscribe.build_index(ours, [images])
    assert again["encoded"] == 0 and again["reused"] == 30
    assert skyscribe.Index(theirs).search(text="a river") == index.search(text="a river")


def test_search_refuses_what_the_cli_refuses(images, tmp_path):
    folder = tmp_path / "idx"
    skyscribe.build_index(folder, [images])
    index = skyscribe.Index(folder)
    with pytest.raises(ValueError, match="empty query"):
        index.search()
    with pytest.raises(ValueError, match="expected auto, exact or ann"):
        index.search(text="x", engine="fast")
    with pytest.raises(skyscribe.Error, match="no HNSW graph"):
        index.search(text="x", engine="ann")
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        index.search(text="x", top_k=0)
    with pytest.raises(skyscribe.Error, match="index.json"):
        skyscribe.Index(tmp_path)


def test_a_half_precision_index_matches_the_clis(images, tmp_path):
    ours = tmp_path / "ours16"
    skyscribe.build_index(ours, [images], dtype="f16")
    theirs = tmp_path / "theirs16"
    run_cli("index", "build", "--index", theirs, "--dtype", "f16", images)
    assert (ours / "parts" / "_part-0-of-1.f16").stat().st_size == 30 * 192 * 2
    got = skyscribe.Index(ours).search(text="a river", engine="exact")
    assert got == cli_jsonl("search", "--index", theirs, "--text", "a river", "--engine", "exact")
    with pytest.raises(skyscribe.Error, match="stores its vectors as f16, not f32"):
        skyscribe.build_index(ours, [images], dtype="f32")
    with pytest.raises(ValueError, match="f32 or f16"):
        skyscribe.build_index(tmp_path / "bad", [images], dtype="bf16")
