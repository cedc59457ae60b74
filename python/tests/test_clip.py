"""Clip: embeddings, labels and preprocessing, number for number against the CLI."""

from __future__ import annotations

import numpy as np
import pytest

import skyscribe
from conftest import SAMPLES, cli_jsonl, eurosat_images


def cli_embeddings(*args) -> np.ndarray:
    return np.array([line["embedding"] for line in cli_jsonl("embed", *args)], dtype=np.float32)


def test_embed_images_from_paths_are_the_clis(clip):
    paths = eurosat_images(2) + [SAMPLES / "eurosat-river.jpg"]
    got = clip.embed_images(paths)
    assert got.dtype == np.float32
    assert got.shape == (len(paths), clip.dim) == (21, 192)
    want = cli_embeddings(*paths)
    np.testing.assert_array_equal(got, want)
    # One path on its own, as str: the CLI's numbers for that image alone (a batch's matrix
    # products are blocked by its size, so a row can differ from the batched one in the 7th
    # digit).
    np.testing.assert_array_equal(clip.embed_images(str(paths[3])), cli_embeddings(paths[3]))
    np.testing.assert_allclose(clip.embed_images(str(paths[3])), got[3:4], atol=1e-5)


def test_embed_images_from_arrays_are_the_files(clip):
    paths = eurosat_images(1)
    from_files = clip.embed_images(paths)
    arrays = [skyscribe.read_image(p) for p in paths]
    assert arrays[0].dtype == np.uint8 and arrays[0].shape == (64, 64, 3)
    np.testing.assert_array_equal(clip.embed_images(arrays), from_files)
    nhwc = np.stack(arrays)
    np.testing.assert_array_equal(clip.embed_images(nhwc), from_files)
    # torch/torchgeo layout, floats in [0, 1]: the same pixels, the same numbers.
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)).astype(np.float32) / 255
    np.testing.assert_array_equal(clip.embed_images(nchw), from_files)
    # A strided view (no copy made by the caller) and float64.
    np.testing.assert_array_equal(
        clip.embed_images(nhwc.astype(np.float64)[:, :, :, :] / 255.0), from_files
    )
    # One H×W×3 array is one image.
    np.testing.assert_array_equal(clip.embed_images(arrays[4]), clip.embed_images(paths[4]))


def test_embed_texts_are_the_clis(clip):
    texts = ["a river", "an industrial area with warehouses", "sea"]
    got = clip.embed_texts(texts)
    assert got.dtype == np.float32 and got.shape == (3, clip.dim)
    want = cli_embeddings(*[a for t in texts for a in ("--text", t)])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(clip.embed_texts("sea"), got[2:3], atol=1e-5)


def test_labels_are_the_clis(clip):
    paths = eurosat_images(1, start=7)
    got = clip.labels(paths, "eurosat", top_k=3)
    want = cli_jsonl("labels", "--labels", "eurosat", "--top-k", "3", *paths)
    assert len(got) == len(want) == 10
    for g, w in zip(got, want):
        assert [label for label, _ in g] == [x["label"] for x in w["labels"]]
        np.testing.assert_array_equal(
            np.float32([s for _, s in g]), np.float32([x["score"] for x in w["labels"]])
        )
    # A template, and every label (top_k=None), as `labels --template … --jsonl`.
    got = clip.labels(paths[:2], "eurosat", templates="an aerial photo of {}.", top_k=None)
    want = cli_jsonl(
        "labels", "--labels", "eurosat", "--template", "an aerial photo of {}.", *paths[:2]
    )
    assert [[label for label, _ in g] for g in got] == [
        [x["label"] for x in w["labels"]] for w in want
    ]
    assert len(got[0]) == 10


def test_labels_from_a_list_are_the_inline_set(clip):
    paths = eurosat_images(1)[:3]
    got = clip.labels(paths, ["river", "forest", "city"], top_k=None)
    want = clip.labels(paths, "river,forest,city", top_k=None)
    assert got == want
    assert {label for label, _ in got[0]} == {"river", "forest", "city"}
    assert abs(sum(s for _, s in got[0]) - 1.0) < 1e-5


def test_preprocess_is_the_models_input(clip):
    paths = eurosat_images(1)[:2]
    x = clip.preprocess(paths)
    assert x.dtype == np.float32 and x.shape == (2, 3, clip.image_size, clip.image_size)
    # The same tensor from the decoded pixels; CLIP's normalisation puts values around 0.
    arrays = np.stack([skyscribe.read_image(p) for p in paths])
    np.testing.assert_array_equal(clip.preprocess(arrays), x)
    assert -2.0 < x.mean() < 2.0 and x.std() > 0.1


def test_an_empty_list_gives_no_rows(clip):
    e = clip.embed_images([])
    assert e.shape == (0, clip.dim) and e.dtype == np.float32


def test_list_images_finds_what_embed_finds():
    found = skyscribe.list_images(SAMPLES)
    assert [p.name for p in map(__import__("pathlib").Path, found)] == [
        "eurosat-mosaic.tif",
        "eurosat-river.jpg",
    ]


@pytest.mark.parametrize("precision", ["f16"])
def test_a_precision_this_cpu_cannot_run_is_refused(precision):
    with pytest.raises(ValueError, match="f16"):
        skyscribe.Clip(precision=precision)


def test_label_sets_are_kept_apart_by_the_cache_of_recent_sets(clip):
    paths = eurosat_images(1)[:2]
    a = clip.labels(paths, ["river", "forest"], top_k=None)
    b = clip.labels(paths, ["river", "city"], top_k=None)
    assert {label for label, _ in b[0]} == {"river", "city"}
    assert clip.labels(paths, ["river", "forest"], top_k=None) == a
    # Another template is another classifier, not the kept one.
    other = clip.labels(paths, ["river", "forest"], templates="{}", top_k=None)
    assert dict(other[0])["river"] != dict(a[0])["river"]
    # A fresh model (no kept sets) gives the same numbers.
    assert skyscribe.Clip().labels(paths, ["river", "forest"], top_k=None) == a
    # More sets than are kept: each still labels with its own names.
    for n in range(10):
        names = [f"class {n}", "river"]
        assert {label for label, _ in clip.labels(paths[:1], names)[0]} == set(names)


def test_int8_runs_close_to_f32_or_is_refused_with_the_reason():
    paths = eurosat_images(1)[:4]
    try:
        int8 = skyscribe.Clip(precision="int8")
    except ValueError as e:
        assert "AVX512-VNNI" in str(e) or "AVX-512 code" in str(e)
        return
    a = skyscribe.Clip().embed_images(paths)
    b = int8.embed_images(paths)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.998 and not np.array_equal(a, b)
