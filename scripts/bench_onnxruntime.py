#!/usr/bin/env python3
"""The ONNX Runtime side of `skyscribe bench`: the same pipeline, the model run by ONNX Runtime.

The random ViT-B/32 image tower of `scripts/bench_reference.py` (transformers' CLIPConfig
defaults, openai/clip-vit-base-patch32's shapes) is exported with `torch.onnx.export` (opset 17,
dynamic batch) and run by ONNX Runtime's CPU provider with 2 intra-op threads and all graph
optimisations. Preprocessing is transformers' PIL CLIPImageProcessor, as in the torch script.
Prints images/s end to end (PIL decode + preprocess + model) and for the model alone.

  python scripts/bench_onnxruntime.py [--images DIR] [--limit 512] [--batch-size 32]

Needs torch, transformers, onnx, onnxscript and onnxruntime (PyPI); the exported model is
written to a temporary folder (about 350 MB) and removed afterwards.
"""
import argparse
import glob
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel


def export(path):
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision = model.vision_model
            self.proj = model.visual_projection

        def forward(self, pixel_values):
            return self.proj(self.vision(pixel_values=pixel_values).pooler_output)

    dummy = torch.zeros(2, 3, 224, 224)
    torch.onnx.export(Tower().eval(), (dummy,), path, input_names=["pixel_values"],
                      output_names=["image_embeds"], opset_version=17,
                      dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                      dynamo=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=os.path.join(os.path.dirname(__file__), "../../shared/data/eurosat/images/Forest"))
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(glob.glob(os.path.join(args.images, "**", "*.jpg"), recursive=True))[: args.limit]
    proc = CLIPImageProcessorPil()
    bs = args.batch_size

    def pixels(batch):
        return proc(images=[Image.open(p) for p in batch], return_tensors="np")["pixel_values"].astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip-vit-b32-vision.onnx")
        export(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(pv):
        return session.run(None, {"pixel_values": pv})[0]

    run(pixels(paths[:bs]))  # warm-up
    start = time.perf_counter()
    for i in range(0, len(paths), bs):
        run(pixels(paths[i:i + bs]))
    end_to_end = len(paths) / (time.perf_counter() - start)
    all_pixels = [pixels(paths[i:i + bs]) for i in range(0, len(paths), bs)]
    start = time.perf_counter()
    for pv in all_pixels:
        run(pv)
    model_only = len(paths) / (time.perf_counter() - start)
    print(f"onnxruntime {ort.__version__} (CPU provider, opset 17 export by torch {torch.__version__}): "
          f"{len(paths)} images, batch {bs}, {args.threads} threads")
    print(f"  end to end (decode + preprocess + encode): {end_to_end:.1f} images/s")
    print(f"  model only: {model_only:.1f} images/s")


if __name__ == "__main__":
    main()
