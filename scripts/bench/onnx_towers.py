"""CLIP's two towers as ONNX files, for the ONNX Runtime and OpenVINO references of
`skyscribe bench` (bench_onnxruntime.py, bench_openvino.py) and for precision_drift.py's
`ort-int8` measurement: one export, so that both runtimes run the same graph.

- `clip_model(model_dir)`: transformers' CLIPModel, random ViT-B/32 weights (CLIPConfig's defaults,
  openai/clip-vit-base-patch32's shapes, seed 0) when `model_dir` is None, else the model of a
  Hugging Face folder (the built-in mini CLIP: assets/models/mini-clip).
- `export_vision` / `export_text`: `torch.onnx.export` (opset 17, the TorchScript exporter), the
  projected embeddings out, the batch (and the text's length) dynamic.
- `quantize_int8`: ONNX Runtime's dynamic quantisation as its documentation recommends for
  transformers: MatMul and Gemm weights int8 per channel, activations u8 per tensor, computed at
  run time.

- `parse_tower_args` / `time_tower`: what both benchmark scripts share: the image pipeline's options
  and `--texts`, and the timing of either tower, its inputs as NumPy arrays by input name.

Needs torch, transformers, onnx, onnxscript and onnxruntime (PyPI).
"""
import os

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel

from bench_common import add_image_args, image_paths, print_pipeline, time_pipeline

TOKENIZER = os.path.join(os.path.dirname(__file__), "../../assets/tokenizers/clip/tokenizer.json")


def clip_model(model_dir=None):
    if model_dir is None:
        torch.manual_seed(0)
        return CLIPModel(CLIPConfig()).eval()
    # In f32 whatever the checkpoint stores (transformers 5 keeps a stored f16 as f16).
    return CLIPModel.from_pretrained(model_dir).float().eval()


def export_vision(model, path):
    size = model.config.vision_config.image_size

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision = model.vision_model
            self.proj = model.visual_projection

        def forward(self, pixel_values):
            return self.proj(self.vision(pixel_values=pixel_values).pooler_output)

    dummy = torch.zeros(2, 3, size, size)
    torch.onnx.export(Tower().eval(), (dummy,), path, input_names=["pixel_values"],
                      output_names=["image_embeds"], opset_version=17,
                      dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                      dynamo=False)


def export_text(model, path):
    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text = model.text_model
            self.proj = model.text_projection

        def forward(self, input_ids, attention_mask):
            out = self.text(input_ids=input_ids, attention_mask=attention_mask)
            return self.proj(out.pooler_output)

    ids = torch.tensor([[49406, 320, 1125, 539, 49407], [49406, 320, 49407, 49407, 49407]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    torch.onnx.export(Tower().eval(), (ids, mask), path,
                      input_names=["input_ids", "attention_mask"], output_names=["text_embeds"],
                      opset_version=17,
                      dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                    "attention_mask": {0: "batch", 1: "tokens"},
                                    "text_embeds": {0: "batch"}},
                      dynamo=False)


def quantize_int8(src, dst):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])


def parse_tower_args(flag, help):
    """The command line of a tower benchmark: the image pipeline's options (bench_common's),
    --texts, and the runtime's own precision `flag`; torch's threads set to --threads."""
    import argparse

    ap = argparse.ArgumentParser()
    add_image_args(ap)
    ap.add_argument("--texts", help="time the text tower on these prompts (one a line) instead")
    ap.add_argument(flag, action="store_true", help=help)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args


def time_tower(args, run, header):
    """Times `run(inputs)` (inputs by the ONNX file's input names) on the image pipeline (PIL
    decode + CLIPImageProcessorPil), or with --texts on the prompts (CLIPTokenizerFast on
    skyscribe's tokenizer.json, each batch padded to its longest), and prints the rates after
    `header`."""
    from PIL import Image
    from transformers import CLIPImageProcessorPil, CLIPTokenizerFast

    bs = args.batch_size
    if args.texts:
        prompts = [l.rstrip("\n") for l in open(args.texts) if l.strip()]
        tok = CLIPTokenizerFast(tokenizer_file=TOKENIZER)

        def encode(batch):
            t = tok(batch, padding=True, return_tensors="np")
            return {"input_ids": t["input_ids"].astype(np.int64),
                    "attention_mask": t["attention_mask"].astype(np.int64)}

        end_to_end, model_only = time_pipeline(prompts, bs, encode, run)
        print_pipeline(f"{header}: {len(prompts)} prompts, batch {bs}, {args.threads} threads",
                       end_to_end, model_only, unit="prompts")
        return
    paths = image_paths(args)
    proc = CLIPImageProcessorPil()

    def pixels(batch):
        pv = proc(images=[Image.open(p) for p in batch], return_tensors="np")["pixel_values"]
        return {"pixel_values": pv.astype(np.float32)}

    end_to_end, model_only = time_pipeline(paths, bs, pixels, run)
    print_pipeline(f"{header}: {len(paths)} images, batch {bs}, {args.threads} threads",
                   end_to_end, model_only)
