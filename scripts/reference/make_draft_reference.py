#!/usr/bin/env python3
"""Parity fixtures of `--jpeg-draft`: JPEGs decoded by Pillow in draft mode
(`Image.draft("RGB", (n, n))`: libjpeg's inverse DCT at 1/2, 1/4 or 1/8 scale), then resized and
centre-cropped by transformers' CLIPImageProcessor at n pixels. Nothing here runs in CI.

  /tmp/pyref/bin/python scripts/reference/make_draft_reference.py [--data ../shared/data]

Writes tests/fixtures/preprocess-draft/: inputs/dota-{420,444,gray}.jpg (480 × 360 crops of DOTA
scene P1888, chroma subsampled 4:2:0, not subsampled, and grey), index.json (input, size, the
size Pillow decoded at, expected PNG) and the expected uint8 pixels.
"""
import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessorPil

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("SKYSCRIBE_DATA", str(ROOT.parent / "shared" / "data")))
    data = Path(ap.parse_args().data)
    imgdir = FIX / "images"
    out = FIX / "preprocess-draft"
    shutil.rmtree(out, ignore_errors=True)
    inputs = out / "inputs"
    inputs.mkdir(parents=True)
    crop = Image.open(data / "dota/images/P1888.png").convert("RGB").crop((100, 100, 580, 460))
    crop.save(inputs / "dota-420.jpg", quality=85)
    crop.save(inputs / "dota-444.jpg", quality=85, subsampling=0)
    crop.convert("L").save(inputs / "dota-gray.jpg", quality=85)
    cases = [
        ("data:rsicd/test/airport_348.jpg", data / "rsicd/test/airport_348.jpg", [16, 32, 64, 224]),
        ("fixture:wide.jpg", imgdir / "wide.jpg", [64]),
        ("draft:dota-420.jpg", inputs / "dota-420.jpg", [32, 64, 128, 224]),
        ("draft:dota-444.jpg", inputs / "dota-444.jpg", [64, 128]),
        ("draft:dota-gray.jpg", inputs / "dota-gray.jpg", [64]),
    ]
    index = []
    for key, path, sizes in cases:
        for n in sizes:
            im = Image.open(path)
            im.draft("RGB", (n, n))
            decoded = list(im.size)
            proc = CLIPImageProcessorPil(size={"shortest_edge": n}, crop_size={"height": n, "width": n},
                                         do_rescale=False, do_normalize=False)
            pv = proc(images=im, return_tensors="np")["pixel_values"][0]
            arr = np.clip(np.round(pv), 0, 255).astype(np.uint8).transpose(1, 2, 0)
            assert np.abs(arr.astype(np.float32) - pv.transpose(1, 2, 0)).max() == 0
            name = f"{len(index):02d}.png"
            Image.fromarray(arr).save(out / name)
            index.append({"input": key, "size": n, "decoded": decoded, "expected": name})
            print(key, n, "decoded at", decoded)
    with open(out / "index.json", "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
