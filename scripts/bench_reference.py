#!/usr/bin/env python3
"""The reference side of `skyscribe bench`: the same pipeline in transformers + torch.

ViT-B/32 shapes (CLIPConfig's defaults are openai/clip-vit-base-patch32's), random weights,
EuroSAT JPEGs, 2 threads. Prints images/s end to end (PIL decode + CLIPImageProcessor + model)
and for the model alone. With --texts FILE, the text side instead: the prompts of
`skyscribe bench --texts --save-prompts FILE`, tokenized with skyscribe's built-in CLIP
tokenizer.json (CLIPTokenizerFast) and encoded, prompts/s.

  /tmp/pyref/bin/python scripts/bench_reference.py [--images DIR] [--limit 256] [--batch-size 32]
  /tmp/pyref/bin/python scripts/bench_reference.py --texts prompts.txt --batch-size 64
"""
import argparse
import glob
import os
import time

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizerFast

TOKENIZER = os.path.join(os.path.dirname(__file__), "../assets/tokenizers/clip/tokenizer.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=os.path.join(os.path.dirname(__file__), "../../shared/data/eurosat/images/Forest"))
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemm", action="store_true",
                    help="time torch's matrix products of ViT-B/32's layer shapes instead (GFLOP/s)")
    ap.add_argument("--texts", help="time the text side on these prompts (one a line) instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.texts:
        texts(args)
        return
    if args.gemm:
        for m, k, n in [(1600, 768, 2304), (1600, 768, 3072), (1600, 3072, 768), (1600, 768, 768)]:
            a, b = torch.randn(m, k), torch.randn(k, n)
            for _ in range(2):
                a @ b
            start = time.perf_counter()
            for _ in range(10):
                a @ b
            seconds = (time.perf_counter() - start) / 10
            print(f"torch {torch.__version__} ({m} x {k}) . ({k} x {n}): "
                  f"{2 * m * k * n / seconds / 1e9:.0f} GFLOP/s, {torch.get_num_threads()} threads")
        return
    paths = sorted(glob.glob(os.path.join(args.images, "**", "*.jpg"), recursive=True))[: args.limit]
    model = CLIPModel(CLIPConfig()).eval()
    proc = CLIPImageProcessorPil()
    bs = args.batch_size

    def pixels(batch):
        return proc(images=[Image.open(p) for p in batch], return_tensors="pt")["pixel_values"]

    with torch.inference_mode():
        model.get_image_features(pixel_values=pixels(paths[:bs]))  # warm-up
        start = time.perf_counter()
        for i in range(0, len(paths), bs):
            model.get_image_features(pixel_values=pixels(paths[i:i + bs]))
        end_to_end = len(paths) / (time.perf_counter() - start)
        all_pixels = [pixels(paths[i:i + bs]) for i in range(0, len(paths), bs)]
        start = time.perf_counter()
        for pv in all_pixels:
            model.get_image_features(pixel_values=pv)
        model_only = len(paths) / (time.perf_counter() - start)
    print(f"transformers {__import__('transformers').__version__} + torch {torch.__version__}: "
          f"{len(paths)} images, batch {bs}, {torch.get_num_threads()} threads")
    print(f"  end to end (decode + preprocess + encode): {end_to_end:.1f} images/s")
    print(f"  model only: {model_only:.1f} images/s")


def texts(args):
    prompts = [l.rstrip("\n") for l in open(args.texts) if l.strip()]
    model = CLIPModel(CLIPConfig()).eval()
    tok = CLIPTokenizerFast(tokenizer_file=TOKENIZER)
    bs = args.batch_size

    def encode(batch):
        return tok(batch, padding=True, return_tensors="pt")

    with torch.inference_mode():
        model.get_text_features(**encode(prompts[:bs]))  # warm-up
        start = time.perf_counter()
        for i in range(0, len(prompts), bs):
            model.get_text_features(**encode(prompts[i:i + bs]))
        end_to_end = len(prompts) / (time.perf_counter() - start)
        batches = [encode(prompts[i:i + bs]) for i in range(0, len(prompts), bs)]
        start = time.perf_counter()
        for b in batches:
            model.get_text_features(**b)
        model_only = len(prompts) / (time.perf_counter() - start)
    tokens = sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts)
    print(f"transformers {__import__('transformers').__version__} + torch {torch.__version__}: "
          f"{len(prompts)} prompts ({tokens:.1f} tokens on average), batch {bs}, "
          f"{torch.get_num_threads()} threads")
    print(f"  end to end (tokenize + encode): {end_to_end:.0f} prompts/s")
    print(f"  model only: {model_only:.0f} prompts/s")


if __name__ == "__main__":
    main()
