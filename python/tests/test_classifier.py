"""Classifier: trained from Python as `skyscribe train classifier` trains it, read by the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import skyscribe
from conftest import cli_jsonl, eurosat_images, run_cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """EuroSAT's classes, 8 images each, as class folders (links to the shared images)."""
    root = tmp_path_factory.mktemp("eurosat-small")
    for p in eurosat_images(8):
        d = root / p.parent.name
        d.mkdir(exist_ok=True)
        (d / p.name).symlink_to(p)
    return root


def test_a_classifier_trained_in_python_is_the_clis(clip, folder, tmp_path):
    paths = skyscribe.list_images(folder)
    labels = [Path(p).parent.name for p in paths]
    x = clip.embed_images(paths)
    ours = skyscribe.Classifier.train(x, labels, clip, method="linear", seed=3)
    assert ours.classes == sorted(set(labels)) and len(ours.classes) == 10
    assert ours.info["method"] == "linear"
    assert ours.info["training"]["examples"] == 80

    cli_file = tmp_path / "cli.safetensors"
    run_cli(
        "train", "classifier", "--data", f"folder:{folder}", "--method", "linear",
        "--seed", "3", "--out", cli_file,
    )
    theirs = skyscribe.Classifier.load(cli_file)
    assert theirs.classes == ours.classes
    assert theirs.info["regularisation"]["c"] == ours.info["regularisation"]["c"]

    test = eurosat_images(2, start=100)
    e = clip.embed_images(test)
    p_ours, p_theirs = ours.predict_proba(e), theirs.predict_proba(e)
    assert p_ours.dtype == np.float32 and p_ours.shape == (20, 10)
    np.testing.assert_allclose(p_ours, p_theirs, rtol=0, atol=1e-6)
    assert ours.predict(e) == theirs.predict(e)
    np.testing.assert_allclose(p_ours.sum(axis=1), 1.0, atol=1e-5)

    # Saved from Python, read by `skyscribe labels --classifier`: the same ranking and scores.
    saved = tmp_path / "ours.safetensors"
    ours.save(saved)
    want = cli_jsonl("labels", "--classifier", saved, *test)
    got = clip.labels(test, classifier=skyscribe.Classifier.load(saved), top_k=None)
    for g, w in zip(got, want):
        assert [label for label, _ in g] == [x["label"] for x in w["labels"]]
        np.testing.assert_array_equal(
            np.float32([s for _, s in g]), np.float32([x["score"] for x in w["labels"]])
        )
    # Better than chance on images it never saw.
    truth = [Path(p).parent.name for p in test]
    assert np.mean([a == b for a, b in zip(ours.predict(e), truth)]) > 0.3


def test_shots_and_the_text_prior(clip, folder):
    paths = skyscribe.list_images(folder)
    labels = [Path(p).parent.name for p in paths]
    x = clip.embed_images(paths)
    one = skyscribe.Classifier.train(
        x, labels, clip, shots=1, prior_labels="eurosat-folders", seed=1
    )
    assert one.info["method"] == "zero-shot-prior"
    assert one.info["training"]["per_class"] == [1] * 10


def test_bad_training_input_is_refused(clip):
    x = np.zeros((4, clip.dim), dtype=np.float32) + 0.1
    with pytest.raises(ValueError, match="4 embeddings but 3 labels"):
        skyscribe.Classifier.train(x, ["a", "b", "a"], clip)
    with pytest.raises(ValueError, match="two classes or more"):
        skyscribe.Classifier.train(x, ["a"] * 4, clip)
    with pytest.raises(ValueError, match="--c must be a positive number"):
        skyscribe.Classifier.train(x, ["a", "b", "a", "b"], clip, c=-1.0)
    with pytest.raises(ValueError, match="prototype has none"):
        skyscribe.Classifier.train(x, ["a", "b", "a", "b"], clip, method="prototype", c=1.0)
    with pytest.raises(ValueError, match="dimension 3"):
        skyscribe.Classifier.train(np.ones((2, 3), np.float32), ["a", "b"], clip)


def test_a_file_that_is_not_a_classifier_is_an_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a classifier")
    with pytest.raises(skyscribe.Error, match="not a skyscribe classifier"):
        skyscribe.Classifier.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        skyscribe.Classifier.load(tmp_path / "missing.safetensors")
