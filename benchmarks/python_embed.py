"""The Python package's embedding rate beside the CLI's, on the same machine, back to back.

    python benchmarks/python_embed.py --cli target/release/skyscribe [--images 1000] [--repeat 3]

Run it with the package installed from a release build (`pip install ./python`, or
`maturin develop --release` in python/) and the CLI built with `cargo build --release`.
Images: the first N of EuroSAT's balanced test subset (64×64 JPEGs) from $SKYSCRIBE_DATA.

Measures, each the best of --repeat runs:
  cli        `skyscribe embed --jsonl PATHS` — a whole process: start, model load, output
  python     the same as one Python process (`import skyscribe; Clip().embed_images(PATHS)`)
  cli-start  `skyscribe embed --text x`: the CLI's start and model load (subtracted from cli
             for its steady rate)
  py-start   `import skyscribe; Clip()` in a fresh Python
  paths      `clip.embed_images(paths)` with the model loaded (the steady rate)
  array      `clip.embed_images(batch)` of an N×64×64×3 uint8 array (decoded beforehand)
  overhead   one call with nothing to embed (argument checks, GIL release, array out)
  threads    the images in two halves embedded by two Python threads at once
Prints one JSON line per measurement and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import skyscribe


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def best(repeat: int, f) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cli", required=True, help="the skyscribe binary (a release build)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    data = Path(os.environ.get("SKYSCRIBE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    split = data / "eurosat" / "splits" / "test-100-per-class.txt"
    names = split.read_text().split()[: a.images]
    paths = [str(data / "eurosat" / "images" / n) for n in names]
    n = len(paths)
    env = dict(os.environ, HF_HUB_OFFLINE="1")

    rows = []

    def record(what: str, seconds: float, images: int = n) -> None:
        r = {"what": what, "images": images, "seconds": round(seconds, 7),
             "images_per_s": round(images / seconds, 1) if images else None}
        rows.append(r)
        print(json.dumps(r), flush=True)

    record("cli", best(a.repeat, lambda: subprocess.run(
        [a.cli, "embed", "--jsonl", *paths], env=env, check=True, stdout=subprocess.DEVNULL)))
    script = ("import sys, skyscribe; skyscribe.Clip().embed_images(sys.argv[1:])")
    record("python", best(a.repeat, lambda: subprocess.run(
        [sys.executable, "-c", script, *paths], env=env, check=True)))
    record("cli-start", best(a.repeat, lambda: subprocess.run(
        [a.cli, "embed", "--jsonl", "--text", "x"], env=env, check=True,
        stdout=subprocess.DEVNULL)), 0)
    record("py-start", best(a.repeat, lambda: subprocess.run(
        [sys.executable, "-c", "import skyscribe; skyscribe.Clip()"], env=env, check=True)), 0)

    clip = skyscribe.Clip()
    clip.embed_images(paths[:64])  # warm up
    record("paths", best(a.repeat, lambda: clip.embed_images(paths)))
    batch = np.stack([skyscribe.read_image(p) for p in paths])
    record("array", best(a.repeat, lambda: clip.embed_images(batch)))
    calls = 2000
    record("overhead", best(a.repeat, lambda: [clip.embed_images([]) for _ in range(calls)]) / calls, 0)

    halves = [paths[: n // 2], paths[n // 2 :]]

    def two_threads() -> None:
        ts = [threading.Thread(target=clip.embed_images, args=(h,)) for h in halves]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    record("threads", best(a.repeat, two_threads))

    print(f"\n{cpu_name()}, {os.cpu_count()} cores; skyscribe {skyscribe.__version__}; {n} EuroSAT JPEGs")
    by = {r["what"]: r for r in rows}
    for r in rows:
        if r["what"] == "overhead":
            print(f"{'overhead':<9} {r['seconds'] * 1e6:9.1f} µs a call")
        elif r["images"] == 0:
            print(f"{r['what']:<9} {r['seconds']:8.3f} s")
        else:
            print(f"{r['what']:<9} {r['seconds']:8.3f} s  {r['images_per_s']:8.1f} images/s")
    cli_steady = n / (by["cli"]["seconds"] - by["cli-start"]["seconds"])
    print(f"python / cli, whole processes: {by['cli']['seconds'] / by['python']['seconds']:.3f}")
    print(f"python / cli, steady (paths / (cli - cli-start)): {by['paths']['images_per_s'] / cli_steady:.3f}"
          f" ({cli_steady:.1f} images/s for the CLI)")
    print(f"array / cli, steady: {by['array']['images_per_s'] / cli_steady:.3f}")


if __name__ == "__main__":
    main()
