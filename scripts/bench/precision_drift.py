#!/usr/bin/env python3
"""How far reduced precision moves CLIP's outputs from f32 (docs/src/performance.md › bf16).

Compares two runs of the same inputs, f32 and reduced precision, of either kind:

  embeddings   two `skyscribe embed --jsonl` outputs: cosine of each input's two embeddings
  predictions  two `predictions.jsonl` of `skyscribe eval zero-shot --report`: top-1 agreement

  python3 scripts/bench/precision_drift.py embeddings f32.jsonl bf16.jsonl
  python3 scripts/bench/precision_drift.py predictions f32/predictions.jsonl bf16/predictions.jsonl
  python scripts/bench/precision_drift.py ort-int8 assets/models/mini-clip \
      ../shared/data/eurosat/images ../shared/data/eurosat/splits/test.txt

With `ort-int8 MODEL_DIR IMAGES SPLIT`, ONNX Runtime's int8 drift on the same images: the image
tower of a Hugging Face CLIP folder (the built-in mini CLIP: assets/models/mini-clip) exported to
ONNX and quantised as scripts/bench/onnx_towers.py does for bench_onnxruntime.py --int8, both
models run by ONNX Runtime on the images listed in SPLIT (paths under IMAGES, e.g. EuroSAT's
splits/test.txt), preprocessed by transformers' CLIPImageProcessorPil from the folder's
preprocessor_config.json: the cosine of each image's two embeddings (needs torch, transformers,
onnx, onnxscript, onnxruntime and pillow).

With `torch IMAGES`, the reference's own drift instead: a random ViT-B/32 (transformers'
CLIPConfig defaults) under torch.autocast bf16 against f32, on the JPEGs of IMAGES (needs torch,
transformers and pillow; 2 threads).

Plain Python for the two comparisons (no NumPy): CI never runs this script.
"""
import json
import math
import statistics
import sys


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def report(cosines, what):
    cosines = sorted(cosines)
    print(json.dumps({
        "what": what,
        "inputs": len(cosines),
        "min_cosine": round(cosines[0], 6),
        "median_cosine": round(statistics.median(cosines), 6),
        "mean_cosine": round(statistics.fmean(cosines), 6),
        "share_at_least_0.999": round(sum(c >= 0.999 for c in cosines) / len(cosines), 4),
    }))


def embeddings(f32_path, reduced_path):
    f32 = {(r["kind"], r["input"]): r["embedding"] for r in read_jsonl(f32_path)}
    reduced = {(r["kind"], r["input"]): r["embedding"] for r in read_jsonl(reduced_path)}
    if f32.keys() != reduced.keys():
        sys.exit(f"{f32_path} and {reduced_path} embed different inputs")
    report([cosine(f32[k], reduced[k]) for k in f32], "embeddings")


def predictions(f32_path, reduced_path):
    top1 = lambda path: {r["input"]: r["predicted"][0]["label"] for r in read_jsonl(path)}
    a, b = top1(f32_path), top1(reduced_path)
    if a.keys() != b.keys():
        sys.exit(f"{f32_path} and {reduced_path} predict different inputs")
    same = sum(a[k] == b[k] for k in a)
    print(json.dumps({"what": "top-1 agreement", "inputs": len(a), "same_top1": same,
                      "agreement": round(same / len(a), 5)}))


def torch_drift(images):
    import glob
    import os

    import torch
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.set_num_threads(2)
    torch.manual_seed(0)
    paths = sorted(glob.glob(os.path.join(images, "**", "*.jpg"), recursive=True))[:512]
    model = CLIPModel(CLIPConfig()).eval()
    proc = CLIPImageProcessorPil()
    cosines = []
    with torch.inference_mode():
        for i in range(0, len(paths), 32):
            pv = proc(images=[Image.open(p) for p in paths[i:i + 32]], return_tensors="pt")["pixel_values"]
            # transformers 5 returns the projected embeddings as the output's pooler_output.
            full = model.get_image_features(pixel_values=pv).pooler_output
            with torch.autocast("cpu", dtype=torch.bfloat16):
                reduced = model.get_image_features(pixel_values=pv).pooler_output.float()
            cosines += torch.nn.functional.cosine_similarity(full, reduced).tolist()
    report(cosines, f"torch {torch.__version__} autocast bf16, random ViT-B/32")


def ort_int8_drift(model_dir, images, split):
    import os
    import tempfile

    import numpy as np
    import onnxruntime as ort
    from PIL import Image
    from transformers import CLIPImageProcessorPil

    from onnx_towers import clip_model, export_vision, quantize_int8

    paths = [os.path.join(images, line.strip()) for line in open(split) if line.strip()]
    proc = CLIPImageProcessorPil.from_pretrained(model_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    with tempfile.TemporaryDirectory() as tmp:
        f32_path, int8_path = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        export_vision(clip_model(model_dir), f32_path)
        quantize_int8(f32_path, int8_path)
        f32 = ort.InferenceSession(f32_path, opts, providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(int8_path, opts, providers=["CPUExecutionProvider"])
    cosines = []
    for i in range(0, len(paths), 64):
        images = [Image.open(p).convert("RGB") for p in paths[i:i + 64]]
        pv = proc(images=images, return_tensors="np")["pixel_values"].astype(np.float32)
        a = f32.run(None, {"pixel_values": pv})[0]
        b = int8.run(None, {"pixel_values": pv})[0]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        cosines += cos.tolist()
    report(cosines, f"onnxruntime {ort.__version__} quantize_dynamic int8, {model_dir}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "embeddings":
        embeddings(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "predictions":
        predictions(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "torch":
        torch_drift(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "ort-int8":
        ort_int8_drift(*sys.argv[2:])
    else:
        sys.exit(__doc__)
