#!/usr/bin/env python3
"""The ONNX Runtime side of `skyscribe bench`: the same pipeline, the model run by ONNX Runtime.

The random ViT-B/32 image tower of `scripts/bench/bench_reference.py` (transformers' CLIPConfig
defaults, openai/clip-vit-base-patch32's shapes) is exported with `torch.onnx.export` (opset 17,
dynamic batch) and run by ONNX Runtime's CPU provider with 2 intra-op threads and all graph
optimisations. Preprocessing is transformers' PIL CLIPImageProcessor, as in the torch script.
Prints images/s end to end (PIL decode + preprocess + model) and for the model alone.

  python scripts/bench/bench_onnxruntime.py [--images DIR] [--limit 512] [--batch-size 32]

Needs torch, transformers, onnx, onnxscript and onnxruntime (PyPI); the exported model is
written to a temporary folder (about 350 MB) and removed afterwards.
"""
import argparse
import os
import tempfile

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

from bench_common import add_image_args, image_paths, print_pipeline, time_pipeline


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
    add_image_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = image_paths(args)
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

    end_to_end, model_only = time_pipeline(paths, bs, pixels, run)
    print_pipeline(f"onnxruntime {ort.__version__} (CPU provider, opset 17 export by torch {torch.__version__}): "
                   f"{len(paths)} images, batch {bs}, {args.threads} threads", end_to_end, model_only)


if __name__ == "__main__":
    main()
