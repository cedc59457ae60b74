#!/usr/bin/env python3
"""A CLIP directory with openai/clip-vit-base-patch32's shapes and random weights, for timing
whole-dataset runs where the real weights cannot be downloaded.

  python scripts/reference/make_random_vit_b32.py OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

out = Path(sys.argv[1])
torch.manual_seed(0)
CLIPModel(CLIPConfig()).save_pretrained(out)
CLIPImageProcessorPil().save_pretrained(out)
shutil.copy(Path(__file__).resolve().parents[2] / "assets/tokenizers/clip/tokenizer.json", out / "tokenizer.json")
