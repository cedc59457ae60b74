#!/usr/bin/env python3
"""Large JPEGs for `skyscribe bench --preprocess` and its reference: crops of a real DOTA aerial
scene (P0706, 1111 × 1182 px) at shifted offsets, flipped and rotated in turn, saved as JPEG
quality 90. The data's own images are small (EuroSAT 64 px, RSICD 128 and 224 px); archives of
aerial photos are not, and there decoding and downscaling are most of a GPU pipeline's work.

  python scripts/bench/bench_images.py OUT_DIR [--count 256] [--size 1024]

Writes OUT_DIR/dota-NNNN.jpg (outside the repository: the data stay in ../shared/data).
"""
import argparse
import os

from PIL import Image

SCENE = os.path.join(os.path.dirname(__file__), "../../../shared/data/dota/images/P0706.png")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--scene", default=SCENE)
    args = ap.parse_args()
    scene = Image.open(args.scene).convert("RGB")
    w, h = scene.size
    if args.size > min(w, h):
        raise SystemExit(f"{args.scene} is {w}×{h}: no {args.size}-pixel crops")
    os.makedirs(args.out, exist_ok=True)
    turns = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90,
             Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270, Image.Transpose.FLIP_TOP_BOTTOM]
    for i in range(args.count):
        x = (i * 37) % (w - args.size + 1)
        y = (i * 53) % (h - args.size + 1)
        crop = scene.crop((x, y, x + args.size, y + args.size))
        if turns[i % len(turns)] is not None:
            crop = crop.transpose(turns[i % len(turns)])
        crop.save(os.path.join(args.out, f"dota-{i:04d}.jpg"), quality=90)


if __name__ == "__main__":
    main()
