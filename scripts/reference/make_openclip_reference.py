#!/usr/bin/env python3
"""Parity fixtures for `skyscribe import-openclip`, made with OpenCLIP itself.

Nothing here runs in CI: the outputs are committed and Rust tests compare against them.

  pip install open-clip-torch==3.3.0 torch==2.15.0 torchvision pillow numpy safetensors
  python3 scripts/reference/make_openclip_reference.py             # writes tests/fixtures/openclip/
  python3 scripts/reference/make_openclip_reference.py --full ViT-B-32 /tmp/oc-b32   # full size, not committed

What it writes (tests/fixtures/openclip/):
  archs.json      for every architecture `--arch` builds in: OpenCLIP's own config JSON, the
                  names and shapes of its state dict (built on the meta device: no weights), and
                  its preprocessing (mean, std, interpolation, resize mode)
  images/*.png|jpg  small RGB pictures whose sizes exercise resizing and torchvision's crop rounding
  <tiny model>/   a tiny random OpenCLIP model of the real layout, saved in one of the forms
                  users meet, with `open_clip_config.json` (for --arch-config) and reference.json:
                  image features from given pixels, text features from given token ids, and
                  features of the image files / texts end to end (OpenCLIP's preprocessing and
                  tokenizer); features are projected and not normalised, like get_image_features.

  tiny-b32-quickgelu   QuickGELU, B/32-like, full 49,408-token vocabulary (texts end to end);
                       a plain state dict in fp16, torch.save'd to .pt
  tiny-l14-336-gelu    exact GELU, /14 patches, head_width 10, context 16; a training
                       checkpoint {"epoch", "name", "state_dict": {"module." + key}, "optimizer"}
  tiny-h14-gelu        exact GELU, head_width 16, mlp_ratio 2.5 / 3, context 12; safetensors
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file
from open_clip.transform import PreprocessCfg
from dataclasses import asdict

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "openclip"

ARCHS = ["ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14",
         "ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu"]

TINY = {
    "tiny-b32-quickgelu": dict(
        config=dict(embed_dim=16, quick_gelu=True,
                    vision_cfg=dict(image_size=32, layers=2, width=32, head_width=8, patch_size=8),
                    text_cfg=dict(context_length=77, vocab_size=49408, width=16, heads=2, layers=2)),
        form="pt-plain-fp16", seed=1),
    "tiny-l14-336-gelu": dict(
        config=dict(embed_dim=24,
                    vision_cfg=dict(image_size=42, layers=2, width=40, head_width=10, patch_size=14),
                    text_cfg=dict(context_length=16, vocab_size=1000, width=32, heads=4, layers=3)),
        form="pt-training", seed=2),
    "tiny-h14-gelu": dict(
        config=dict(embed_dim=20,
                    vision_cfg=dict(image_size=28, layers=3, width=48, head_width=16, patch_size=7,
                                    mlp_ratio=2.5),
                    text_cfg=dict(context_length=12, vocab_size=700, width=24, heads=3, layers=2,
                                  mlp_ratio=3.0)),
        form="safetensors", seed=3),
}

TEXTS = ["a satellite photo of a river", "An airport with many airplanes parked.",
         "dense residential area", "FOREST!!  and   lakes"]


def arch_fixtures():
    out = {}
    for name in ARCHS:
        cfg = open_clip.get_model_config(name)
        with torch.device("meta"):
            model = open_clip.model.CLIP(**cfg)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        # What create_model() gives a model without pretrained weights: the defaults, overridden by
        # a `preprocess_cfg` in the model config where there is one.
        pp = dict(asdict(PreprocessCfg()), **cfg.get("preprocess_cfg", {}))
        out[name] = dict(config=cfg, shapes=shapes,
                         preprocess=dict(mean=list(pp["mean"]), std=list(pp["std"]),
                                         interpolation=pp["interpolation"],
                                         resize_mode=pp["resize_mode"]))
    return out


def make_images():
    """Smooth random pictures; sizes chosen so that the centre crop's offset is (size - crop) / 2
    = x.5 with x odd, where torchvision's round-half-to-even and transformers' floor differ."""
    rng = np.random.default_rng(7)
    d = OUT / "images"
    d.mkdir(parents=True, exist_ok=True)
    names = []
    for name, (w, h) in [("crop35x32.png", (35, 32)), ("wide80x50.jpg", (80, 50)),
                         ("tall45x71.png", (45, 71)), ("square64.jpg", (64, 64))]:
        small = rng.uniform(0, 255, size=(h // 6 + 2, w // 6 + 2, 3)).astype(np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        noise = rng.normal(0, 12, size=(h, w, 3))
        arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        if name.endswith(".jpg"):
            Image.fromarray(arr).save(d / name, quality=92)
        else:
            Image.fromarray(arr).save(d / name)
        names.append(name)
    return names


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(1 / 0.07) + 0.3)
            elif p.ndim == 1 and ("ln" in name):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            else:
                fan = p.shape[-1] if p.ndim > 1 else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(fan)))


def features(model, pixels=None, ids=None):
    with torch.no_grad():
        if pixels is not None:
            return model.encode_image(pixels, normalize=False)
        return model.encode_text(ids, normalize=False)


def tiny(name, spec, image_names):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = spec["config"]
    torch.manual_seed(spec["seed"])
    model = open_clip.model.CLIP(**cfg).eval()
    randomise(model, spec["seed"])
    sd = model.state_dict()
    form = spec["form"]
    if form == "pt-plain-fp16":
        sd = {k: v.half() for k, v in sd.items()}
        torch.save(sd, d / "open_clip_model.pt")
        # The reference computes with what was saved.
        model.load_state_dict({k: v.float() for k, v in sd.items()})
    elif form == "pt-training":
        opt = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]}
        torch.save({"epoch": 3, "name": name, "state_dict": {"module." + k: v for k, v in sd.items()},
                    "optimizer": opt}, d / "epoch_3.pt")
    elif form == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, d / "open_clip_model.safetensors")
    (d / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    g = torch.Generator().manual_seed(100 + spec["seed"])
    s = cfg["vision_cfg"]["image_size"]
    pixels = torch.randn((2, 3, s, s), generator=g)
    t = cfg["text_cfg"]
    ctx, vocab = t["context_length"], t["vocab_size"]
    ids = torch.zeros((3, ctx), dtype=torch.long)
    for row, length in enumerate([ctx, ctx // 2, 3]):
        ids[row, :length] = torch.randint(1, vocab - 1, (length,), generator=g)
        ids[row, length - 1] = vocab - 1  # the end token: the largest id, pooled by argmax
    ref = dict(config=cfg, form=form,
               pixels=pixels.flatten().tolist(), pixels_shape=list(pixels.shape),
               image_features=features(model, pixels=pixels).tolist(),
               ids=ids.tolist(), text_features=features(model, ids=ids).tolist())

    preprocess = open_clip.image_transform(s, is_train=False)
    files = []
    for n in image_names:
        x = preprocess(Image.open(OUT / "images" / n)).unsqueeze(0)
        files.append(dict(file=f"images/{n}", pixels_sum=float(x.sum()),
                          pixels_corner=x[0, :, :2, :2].flatten().tolist(),
                          features=features(model, pixels=x)[0].tolist()))
    ref["files"] = files
    if vocab == 49408:
        tok = open_clip.get_tokenizer("ViT-B-32")
        tids = tok(TEXTS, context_length=ctx)
        ref["texts"] = [dict(text=tx, ids=[int(i) for i in row if i != 0],
                             features=f.tolist())
                        for tx, row, f in zip(TEXTS, tids, features(model, ids=tids))]
    (d / "reference.json").write_text(json.dumps(ref) + "\n")
    print(name, form, sum(v.numel() for v in sd.values()), "parameters")


def full(arch: str, out: Path, image_names):
    """A full-size random model of `arch` (not committed): `import-openclip --arch ARCH` on it,
    then `embed` the fixture images and texts and compare with reference.json
    (scripts/checks/check-openclip-full.sh does both)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.create_model(arch).eval()
    randomise(model, 0)
    torch.save(model.state_dict(), out / f"{arch}-random.pt")
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    preprocess = open_clip.image_transform(size, is_train=False)
    tok = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        imgs = torch.stack([preprocess(Image.open(OUT / "images" / n)) for n in image_names])
        ref = dict(images=[str(OUT / "images" / n) for n in image_names],
                   image_features=model.encode_image(imgs).tolist(),
                   texts=TEXTS, text_features=model.encode_text(tok(TEXTS)).tolist())
    (out / "reference.json").write_text(json.dumps(ref))
    print("wrote", out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", nargs=2, metavar=("ARCH", "DIR"))
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    images = make_images()
    if a.full:
        full(a.full[0], Path(a.full[1]), images)
        return
    (OUT / "archs.json").write_text(json.dumps(arch_fixtures(), indent=1) + "\n")
    for name, spec in TINY.items():
        tiny(name, spec, images)
    (OUT / "VERSIONS").write_text(
        f"open_clip {open_clip.__version__}\ntorch {torch.__version__}\n")


if __name__ == "__main__":
    main()
