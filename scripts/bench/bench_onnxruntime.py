#!/usr/bin/env python3
"""The ONNX Runtime side of `skyscribe bench`: the same pipeline, the model run by ONNX Runtime.

The random ViT-B/32 image tower of `scripts/bench/bench_reference.py` (transformers' CLIPConfig
defaults, openai/clip-vit-base-patch32's shapes) is exported with `torch.onnx.export` (opset 17,
dynamic batch; scripts/bench/onnx_towers.py) and run by ONNX Runtime's CPU provider with 2
intra-op threads and all graph optimisations. Preprocessing is transformers' PIL
CLIPImageProcessor, as in the torch script. Prints images/s end to end (PIL decode + preprocess +
model) and for the model alone.

With --int8, the exported model goes through ONNX Runtime's dynamic quantisation first
(`quantize_dynamic`: MatMul/Gemm weights int8 per channel, activations u8 computed at run time):
the reference of `skyscribe bench --precision int8`. With --texts FILE, the text tower instead, on
the prompts of `skyscribe bench --texts --save-prompts FILE` (CLIPTokenizerFast on skyscribe's
tokenizer.json, padded to each batch's longest), prompts/s.

  python scripts/bench/bench_onnxruntime.py [--images DIR] [--limit 512] [--batch-size 32] [--int8]
  python scripts/bench/bench_onnxruntime.py --texts prompts.txt --batch-size 64 [--int8]

Needs torch, transformers, onnx, onnxscript and onnxruntime (PyPI); the exported model is
written to a temporary folder (about 350 MB) and removed afterwards.
"""
import os
import tempfile

import onnxruntime as ort
import torch

from onnx_towers import parse_tower_args, clip_model, export_text, export_vision, quantize_int8, time_tower


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    args = parse_tower_args("--int8", "ONNX Runtime's dynamic int8 quantisation")
    precision = "int8 (quantize_dynamic, per-channel QInt8 MatMul/Gemm)" if args.int8 else "f32"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tower.onnx")
        (export_text if args.texts else export_vision)(clip_model(), path)
        if args.int8:
            quantize_int8(path, os.path.join(tmp, "tower-int8.onnx"))
            path = os.path.join(tmp, "tower-int8.onnx")
        s = session(path, args.threads)
    header = (f"onnxruntime {ort.__version__} (CPU provider, opset 17 export by torch "
              f"{torch.__version__}), {precision}")
    time_tower(args, lambda inputs: s.run(None, inputs)[0], header)


if __name__ == "__main__":
    main()
