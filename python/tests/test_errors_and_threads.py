"""Bad input becomes the Python exception of its kind with the CLI's message; the GIL is
released while models run, and threads may share a model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import skyscribe
from conftest import SAMPLES, eurosat_images, run_cli


def cli_error(*args) -> str:
    p = run_cli(*args, ok=False)
    assert p.returncode != 0
    return p.stderr


def test_a_missing_image_is_file_not_found(clip, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError) as e:
        clip.embed_images([missing])
    assert f"{missing}: no such file or directory" in str(e.value)
    assert str(e.value) in cli_error("embed", missing)


def test_an_unreadable_image_is_an_error_naming_it(clip, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is not a JPEG")
    with pytest.raises(skyscribe.Error) as e:
        clip.embed_images([SAMPLES / "eurosat-river.jpg", bad])
    assert str(bad) in str(e.value)
    assert str(e.value) in cli_error("embed", bad)


def test_argument_errors_are_value_errors_with_the_clis_messages(clip):
    image = SAMPLES / "eurosat-river.jpg"
    with pytest.raises(ValueError) as e:
        clip.labels([image], "eurosatt")
    assert str(e.value) in cli_error("labels", "--labels", "eurosatt", image)
    with pytest.raises(ValueError) as e:
        clip.labels([image], "eurosat", templates="no placeholder")
    assert str(e.value) in cli_error(
        "labels", "--labels", "eurosat", "--template", "no placeholder", image
    )
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        clip.embed_images([image], batch_size=0)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        clip.labels([image], "eurosat", top_k=0)
    with pytest.raises(ValueError, match="one band .* or three"):
        clip.embed_images([image], bands=[1, 2])
    with pytest.raises(ValueError, match="a folder"):
        clip.embed_images([SAMPLES])
    with pytest.raises(ValueError, match='device "gpu"'):
        skyscribe.Clip(device="gpu")


def test_bad_arrays_are_value_errors(clip):
    with pytest.raises(ValueError, match="dtype"):
        clip.embed_images(np.zeros((1, 8, 8, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match="13 channel"):
        clip.embed_images(np.zeros((2, 13, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clip.embed_images(np.full((1, 8, 8, 3), 255.0, dtype=np.float32))
    with pytest.raises(ValueError, match="dimensions"):
        clip.embed_images(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(TypeError, match="expected a path"):
        clip.embed_images(42)


def test_a_missing_model_is_an_error_naming_it(tmp_path):
    with pytest.raises((skyscribe.Error, FileNotFoundError)) as e:
        skyscribe.Clip(str(tmp_path / "no-model"))
    assert "no-model" in str(e.value)


def test_the_gil_is_released_while_the_model_runs(clip):
    """While one thread embeds, Python code runs in another. The worker notes when it enters
    and leaves the model; the main thread notes the time of every step of a Python loop. With
    the GIL held, the main thread could run only in the moment before the call takes it (one
    5 ms switch interval at most), never in the middle of the call."""
    import time

    batch = np.random.default_rng(0).integers(0, 256, (256, 64, 64, 3), dtype=np.uint8)
    clip.embed_images(batch[:4])  # warm up
    span = {}

    def work():
        span["in"] = time.perf_counter()
        clip.embed_images(batch)
        span["out"] = time.perf_counter()

    t = threading.Thread(target=work)
    stamps = []
    t.start()
    while t.is_alive():
        stamps.append(time.perf_counter())
    t.join()
    d = span["out"] - span["in"]
    assert d > 0.05, f"the call took {d:.3f} s: too short to tell"
    middle = [s for s in stamps if span["in"] + 0.4 * d < s < span["in"] + 0.6 * d]
    assert len(middle) > 100, "no Python ran in the middle of the model call: GIL held?"


def test_threads_share_a_model(clip):
    paths = eurosat_images(2)
    # Batches of 5 in both runs: the same batches give the same numbers.
    alone = clip.embed_images(paths, batch_size=5)
    chunks = [paths[i : i + 5] for i in range(0, len(paths), 5)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parts = list(pool.map(clip.embed_images, chunks))
    np.testing.assert_array_equal(np.concatenate(parts), alone)
    with ThreadPoolExecutor(max_workers=2) as pool:
        labels = list(pool.map(lambda p: clip.labels(p, "eurosat"), chunks))
    assert sum(labels, []) == clip.labels(paths, "eurosat", batch_size=5)
