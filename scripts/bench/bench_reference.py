#!/usr/bin/env python3
"""The reference side of `skyscribe bench`: the same pipeline in transformers + torch.

ViT-B/32 shapes (CLIPConfig's defaults are openai/clip-vit-base-patch32's), random weights,
EuroSAT JPEGs, 2 threads. Prints images/s end to end (PIL decode + CLIPImageProcessor + model)
and for the model alone. With --texts FILE, the text side instead: the prompts of
`skyscribe bench --texts --save-prompts FILE`, tokenized with skyscribe's built-in CLIP
tokenizer.json (CLIPTokenizerFast) and encoded, prompts/s. With --bf16, the model runs under
torch.autocast's bf16 (oneDNN's bf16 kernels where the CPU has AVX512-BF16 or AMX), and --gemm
multiplies bf16 tensors: the reference of `skyscribe bench --precision bf16`.

  /tmp/pyref/bin/python scripts/bench/bench_reference.py [--images DIR] [--limit 256] [--batch-size 32]
  /tmp/pyref/bin/python scripts/bench/bench_reference.py --texts prompts.txt --batch-size 64
  /tmp/pyref/bin/python scripts/bench/bench_reference.py --preprocess --images DIR --limit 1024

--preprocess times decoding and preprocessing alone, as a PyTorch pipeline feeding a GPU runs
them: a DataLoader with --threads worker processes, each opening files with PIL and running
the image processor (the reference of `skyscribe bench --preprocess`). --processor pil (the
default) is CLIPImageProcessorPil, the Pillow path whose pixels skyscribe reproduces;
--processor torchvision is transformers' default CLIPImageProcessor when torchvision is
installed (resizing with torch's antialiased bicubic interpolation on tensors).
"""
import argparse
import os
import time

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizerFast

from bench_common import add_image_args, image_paths, print_pipeline, time_pipeline

TOKENIZER = os.path.join(os.path.dirname(__file__), "../../assets/tokenizers/clip/tokenizer.json")


def main():
    ap = argparse.ArgumentParser()
    add_image_args(ap)
    ap.add_argument("--gemm", action="store_true",
                    help="time torch's matrix products of ViT-B/32's layer shapes instead (GFLOP/s)")
    ap.add_argument("--texts", help="time the text side on these prompts (one a line) instead")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (bf16 operands for --gemm)")
    ap.add_argument("--preprocess", action="store_true",
                    help="time decoding and preprocessing alone, in a DataLoader of --threads workers")
    ap.add_argument("--processor", choices=["pil", "torchvision"], default="pil",
                    help="with --preprocess: CLIPImageProcessorPil or the torchvision CLIPImageProcessor")
    args = ap.parse_args()
    if args.preprocess:
        preprocess(args)
        return
    precision = "bf16 autocast" if args.bf16 else "f32"
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    torch.set_num_threads(args.threads)
    if args.texts:
        texts(args, autocast, precision)
        return
    if args.gemm:
        for m, k, n in [(1600, 768, 2304), (1600, 768, 3072), (1600, 3072, 768), (1600, 768, 768)]:
            a, b = torch.randn(m, k), torch.randn(k, n)
            if args.bf16:
                a, b = a.bfloat16(), b.bfloat16()
            for _ in range(2):
                a @ b
            start = time.perf_counter()
            for _ in range(10):
                a @ b
            seconds = (time.perf_counter() - start) / 10
            print(f"torch {torch.__version__} ({m} x {k}) . ({k} x {n}): "
                  f"{2 * m * k * n / seconds / 1e9:.0f} GFLOP/s, {a.dtype}, {torch.get_num_threads()} threads")
        return
    paths = image_paths(args)
    model = CLIPModel(CLIPConfig()).eval()
    proc = CLIPImageProcessorPil()

    def pixels(batch):
        return proc(images=[Image.open(p) for p in batch], return_tensors="pt")["pixel_values"]

    with torch.inference_mode(), autocast:
        end_to_end, model_only = time_pipeline(
            paths, args.batch_size, pixels, lambda pv: model.get_image_features(pixel_values=pv))
    print_pipeline(f"transformers {__import__('transformers').__version__} + torch {torch.__version__}: "
                   f"{len(paths)} images, batch {args.batch_size}, {precision}, "
                   f"{torch.get_num_threads()} threads",
                   end_to_end, model_only)


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, proc):
        self.paths, self.proc = paths, proc

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("RGB")
        if self.proc is None:
            return torch.from_numpy(__import__("numpy").asarray(img).copy())
        return self.proc(images=img, return_tensors="pt")["pixel_values"][0]


def preprocess(args):
    """Images/s of decoding alone and of decoding + CLIPImageProcessor, each a second pass of
    a DataLoader with persistent workers (the first starts them and warms the page cache)."""
    paths = image_paths(args)
    if args.processor == "torchvision":
        from transformers import CLIPImageProcessor
        processor = CLIPImageProcessor()
        name = f"torchvision {__import__('torchvision').__version__} CLIPImageProcessor"
    else:
        processor = CLIPImageProcessorPil()
        name = "CLIPImageProcessorPil"
    rates = {}
    for what, proc in [("decode", None), ("decode + preprocess", processor)]:
        loader = torch.utils.data.DataLoader(
            _Files(paths, proc), batch_size=args.batch_size, num_workers=args.threads,
            persistent_workers=True, collate_fn=(lambda b: b) if proc is None else None)
        for _ in loader:
            pass
        start = time.perf_counter()
        for _ in loader:
            pass
        rates[what] = len(paths) / (time.perf_counter() - start)
        del loader
    print(f"PIL {Image.__version__} + transformers {__import__('transformers').__version__} "
          f"{name}, DataLoader: {len(paths)} images, batch {args.batch_size}, "
          f"{args.threads} workers")
    print(f"  decode: {rates['decode']:.0f} images/s")
    print(f"  decode + preprocess: {rates['decode + preprocess']:.0f} images/s "
          f"({rates['decode + preprocess'] / args.threads:.0f} a worker)")


def texts(args, autocast, precision):
    prompts = [l.rstrip("\n") for l in open(args.texts) if l.strip()]
    model = CLIPModel(CLIPConfig()).eval()
    tok = CLIPTokenizerFast(tokenizer_file=TOKENIZER)
    bs = args.batch_size

    def encode(batch):
        return tok(batch, padding=True, return_tensors="pt")

    with torch.inference_mode(), autocast:
        end_to_end, model_only = time_pipeline(
            prompts, bs, encode, lambda batch: model.get_text_features(**batch))
    tokens = sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts)
    print_pipeline(f"transformers {__import__('transformers').__version__} + torch {torch.__version__}: "
                   f"{len(prompts)} prompts ({tokens:.1f} tokens on average), batch {bs}, {precision}, "
                   f"{torch.get_num_threads()} threads", end_to_end, model_only, unit="prompts")


if __name__ == "__main__":
    main()
