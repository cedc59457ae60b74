#!/usr/bin/env python3
"""The OpenVINO side of `skyscribe bench`: the same pipeline, the model run by OpenVINO's CPU
plugin, the fastest CPU runtime measured here.

The random ViT-B/32 tower of `scripts/bench/bench_onnxruntime.py` is exported to ONNX the same
way (scripts/bench/onnx_towers.py: opset 17, dynamic batch), read by `openvino.Core`, and
compiled for the CPU plugin with 2 inference threads and the LATENCY hint. With --bf16, the
plugin's `INFERENCE_PRECISION_HINT` is bf16 (its bf16 kernels on CPUs with AVX512-BF16 or AMX:
fused attention and LayerNorm included); otherwise f32, stated explicitly since the plugin
would pick bf16 by itself on such CPUs. Preprocessing is transformers' PIL CLIPImageProcessor.
Prints images/s end to end (decode + preprocess + model) and for the model alone. With
--texts FILE, the text tower instead (tokenized as bench_reference.py does), prompts/s.

  python scripts/bench/bench_openvino.py [--images DIR] [--limit 512] [--batch-size 32] [--bf16]
  python scripts/bench/bench_openvino.py --texts prompts.txt --batch-size 64 [--bf16]

Needs openvino, torch, transformers, onnx and onnxscript (PyPI).
"""
import os
import tempfile

import openvino as ov
import torch

from onnx_towers import parse_tower_args, clip_model, export_text, export_vision, time_tower


def main():
    args = parse_tower_args("--bf16", "INFERENCE_PRECISION_HINT bf16")
    precision = "bf16" if args.bf16 else "f32"
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": precision}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tower.onnx")
        (export_text if args.texts else export_vision)(clip_model(), path)
        compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
    header = f"openvino {ov.get_version()} (CPU plugin, {cpu}, LATENCY hint), {precision}"
    time_tower(args, lambda inputs: request.infer(inputs)[compiled.output(0)], header)


if __name__ == "__main__":
    main()
