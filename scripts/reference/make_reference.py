#!/usr/bin/env python3
"""Builds skyscribe's tokenizer files and its parity fixtures with the reference implementation.

Nothing here runs in CI: the outputs are committed, and Rust tests compare against them.

  python3 -m venv /tmp/pyref && /tmp/pyref/bin/pip install -r scripts/reference/requirements-reference.txt
  cargo fetch   # brings instant-clip-tokenizer and tiktoken-rs, whose vocabulary files we read
  /tmp/pyref/bin/python scripts/reference/make_reference.py [--data ../shared/data]

What it writes:
  assets/tokenizers/clip/tokenizer.json   CLIP's BPE, from instant-clip-tokenizer's
                                          bpe_simple_vocab_16e6.txt, built the way transformers'
                                          CLIPTokenizer builds it from vocab.json + merges.txt
  assets/tokenizers/gpt2/tokenizer.json   GPT-2's byte-level BPE, from tiktoken-rs's encoder.json
                                          and vocab.bpe, likewise through GPT2Tokenizer
  tests/fixtures/tokenizers/reference_ids.json   ids of >500 strings from both reference tokenizers
  tests/fixtures/clip/tiny-a, tiny-b      tiny random CLIP models (HF layout) + reference.json
  tests/fixtures/gpt2/tiny                a tiny random GPT-2 + reference logits
  tests/fixtures/images/*                 small images in modes the data set lacks (L, RGBA, P, WebP)
  tests/fixtures/preprocess/*.png         transformers' resized + cropped uint8 pixels at 224 px
"""

import argparse
import glob
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizer,
    GPT2Tokenizer,
)

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"

EUROSAT_WORDINGS = [
    "annual crop land", "forest", "brushland or shrubland", "highway or road",
    "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
    "residential buildings or homes or apartments", "river", "lake or sea",
]
EUROSAT_TEMPLATES = [
    "a centered satellite photo of {}.",
    "a centered satellite photo of a {}.",
    "a centered satellite photo of the {}.",
]


def cargo_src(crate: str) -> Path:
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    hits = sorted(glob.glob(str(home / "registry" / "src" / "*" / f"{crate}-*")))
    if not hits:
        sys.exit(f"{crate} is not in the cargo registry: run `cargo fetch` first")
    return Path(hits[-1])


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table (shared by CLIP)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def save_compact(tokenizer, path: Path):
    """tokenizer.json without indentation: the same content at two thirds of the size."""
    tokenizer.backend_tokenizer.save(str(path))
    content = json.loads(path.read_text("utf-8"))
    path.write_text(json.dumps(content, ensure_ascii=False, separators=(",", ":")), "utf-8")


def build_tokenizers():
    out = ROOT / "assets" / "tokenizers"
    # CLIP: the merges file of the original repository; the vocabulary is derived from it.
    bpe = (cargo_src("instant-clip-tokenizer") / "bpe_simple_vocab_16e6.txt").read_text("utf-8")
    merges = [tuple(m.split()) for m in bpe.split("\n")[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    clip = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    (out / "clip").mkdir(parents=True, exist_ok=True)
    save_compact(clip, out / "clip" / "tokenizer.json")

    tk = cargo_src("tiktoken-rs") / "assets"
    encoder = json.loads((tk / "encoder.json").read_text("utf-8"))
    gmerges = [tuple(l.split()) for l in (tk / "vocab.bpe").read_text("utf-8").split("\n")[1:] if l]
    gpt2 = GPT2Tokenizer(vocab=encoder, merges=gmerges)
    (out / "gpt2").mkdir(parents=True, exist_ok=True)
    save_compact(gpt2, out / "gpt2" / "tokenizer.json")
    return clip, gpt2


def token_strings(data: Path):
    strings = []
    for line in (data / "rsicd" / "test" / "captions.jsonl").read_text().splitlines()[:150]:
        rec = json.loads(line)
        strings += rec["captions"][:2] + rec["augmented"][:1]
    strings += [t.format(w) for t in EUROSAT_TEMPLATES + ["a satellite photo of {}.", "{}"]
                for w in EUROSAT_WORDINGS]
    strings += [
        "", " ", "   \t\n  ", "A", "Hello, World!", "AIRPORT RUNWAY", "don't it's we're they've I'm you'll he'd",
        "Café près de la forêt — naïve façade", "東京の衛星写真", "صورة فضائية لميناء", "снимок со спутника",
        "emoji 🛰️🌍🚢✈️", "tabs\tand\nnewlines\r\nmixed", "multiple     spaces    here",
        "numbers 12345 3.14159 1e-5 2026-11-27", "punctuation!!! ??? ... ;;; :: --", "<|endoftext|> inside",
        "<|startoftext|>start", "ß ẞ ﬁ Å Å", "\u00e9 vs e\u0301", "x" * 300,
        " ".join(["harbor"] * 120), " ".join(f"word{i}" for i in range(200)),
        "a satellite photo of " + "very " * 90 + "large port.",
        "Zero\u200bwidth space", "HTML &amp; entities &lt;b&gt;", "ascii art :-) ^_^ <3",
    ]
    return strings


def write_token_fixture(clip, gpt2, data: Path):
    strings = token_strings(data)
    clip_ids = clip(strings, truncation=True, max_length=77)["input_ids"]
    gpt2_ids = [gpt2(s)["input_ids"] for s in strings]
    (FIX / "tokenizers").mkdir(parents=True, exist_ok=True)
    with open(FIX / "tokenizers" / "reference_ids.json", "w") as f:
        json.dump({"strings": strings, "clip": clip_ids, "gpt2": gpt2_ids}, f, ensure_ascii=False)
    print(f"tokenizer fixture: {len(strings)} strings")


def fixture_images(data: Path):
    """(name, path) pairs: real files from the shared data set and small images made here."""
    imgdir = FIX / "images"
    imgdir.mkdir(parents=True, exist_ok=True)
    river = Image.open(data / "eurosat/images/River/River_1.jpg").convert("RGB")
    airport = Image.open(data / "rsicd/test/airport_348.jpg").convert("RGB")
    river.convert("L").resize((80, 60), Image.BICUBIC).save(imgdir / "gray.png")
    rgba = airport.resize((70, 90), Image.BICUBIC).convert("RGBA")
    alpha = Image.linear_gradient("L").resize((70, 90))
    rgba.putalpha(alpha)
    rgba.save(imgdir / "rgba.png")
    airport.crop((10, 20, 210, 170)).quantize(64).save(imgdir / "palette.png")
    river.save(imgdir / "river.webp", lossless=True)
    airport.crop((0, 0, 200, 150)).save(imgdir / "wide.jpg", quality=90)
    return [
        ("data:eurosat/images/River/River_1.jpg", data / "eurosat/images/River/River_1.jpg"),
        ("data:eurosat/images/Industrial/Industrial_10.jpg", data / "eurosat/images/Industrial/Industrial_10.jpg"),
        ("data:rsicd/test/airport_348.jpg", data / "rsicd/test/airport_348.jpg"),
        ("data:rsicd/train/" + sorted(os.listdir(data / "rsicd/train"))[0], data / "rsicd/train" / sorted(os.listdir(data / "rsicd/train"))[0]),
        ("data:dota/images/P1888.png", data / "dota/images/P1888.png"),
        ("fixture:gray.png", imgdir / "gray.png"),
        ("fixture:rgba.png", imgdir / "rgba.png"),
        ("fixture:palette.png", imgdir / "palette.png"),
        ("fixture:river.webp", imgdir / "river.webp"),
        ("fixture:wide.jpg", imgdir / "wide.jpg"),
    ]


def perturb(model: CLIPModel, seed: int):
    """Random weights with no trivial values: every parameter (biases, LayerNorms) moves."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(float(np.log(100.0)))
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def make_clip(name, text, vision, proj, pre_size, crop, dtype, binary, seed, clip_tok, images):
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)
    model = CLIPModel(cfg).eval()
    perturb(model, seed)
    if dtype == torch.float16:
        # Stored in f16; the reference runs the same values in f32, so parity stays exact.
        model = model.half().float()
    out = FIX / "clip" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if binary:
        # The legacy layout: a zipped pickle of the state dict, as torch.save writes it.
        model.save_pretrained(out)
        (out / "model.safetensors").unlink()
        torch.save(model.state_dict(), out / "pytorch_model.bin")
    else:
        model.to(dtype).save_pretrained(out)
        model = model.float()
    # tokenizer.json is not copied (it is 2 MB): tests add assets/tokenizers/clip/tokenizer.json.
    proc = CLIPImageProcessorPil(size={"shortest_edge": pre_size}, crop_size={"height": crop, "width": crop})
    proc.save_pretrained(out)
    proc = CLIPImageProcessorPil.from_pretrained(out)

    ref = {"config": name}
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        pix = torch.randn((2, 3, crop, crop), generator=g)
        ref["random_pixels"] = {
            "shape": list(pix.shape),
            "pixel_values": pix.flatten().tolist(),
            "image_embeds": model.get_image_features(pixel_values=pix).pooler_output.tolist()
            if hasattr(model.get_image_features(pixel_values=pix), "pooler_output")
            else model.get_image_features(pixel_values=pix).tolist(),
        }
        texts = ["a satellite photo of a harbor.", "forest", "", "A very " + "long " * 100 + "road.",
                 "résidence près du fleuve", "an airport with two runways and many planes parked ."]
        enc = clip_tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        tf = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        tf = getattr(tf, "pooler_output", tf)
        ref["texts"] = {"texts": texts, "input_ids": enc["input_ids"].tolist(), "text_embeds": tf.tolist()}

        recs = []
        pixels = []
        for key, path in images:
            pv = proc(images=Image.open(path), return_tensors="pt")["pixel_values"]
            pixels.append(pv)
            emb = model.get_image_features(pixel_values=pv)
            emb = getattr(emb, "pooler_output", emb)
            recs.append({"input": key, "image_embeds": emb[0].tolist()})
        ref["images"] = recs
        pixels = torch.cat(pixels)

        # Zero-shot, single template: exactly CLIPModel's logits_per_image.
        prompts = [f"a satellite photo of {w}." for w in EUROSAT_WORDINGS]
        enc = clip_tok(prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        out_all = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
        single = out_all.logits_per_image.softmax(-1)
        # Ensemble of templates: mean of normalised template embeddings, normalised again.
        img = model.get_image_features(pixel_values=pixels)
        img = getattr(img, "pooler_output", img)
        img = img / img.norm(dim=-1, keepdim=True)
        cls = []
        for w in EUROSAT_WORDINGS:
            e = clip_tok([t.format(w) for t in EUROSAT_TEMPLATES], padding=True, return_tensors="pt")
            t = model.get_text_features(input_ids=e["input_ids"], attention_mask=e["attention_mask"])
            t = getattr(t, "pooler_output", t)
            t = t / t.norm(dim=-1, keepdim=True)
            t = t.mean(0)
            cls.append(t / t.norm())
        cls = torch.stack(cls)
        ens = (model.logit_scale.exp() * img @ cls.T).softmax(-1)
        ref["zero_shot"] = {
            "wordings": EUROSAT_WORDINGS,
            "single_template": "a satellite photo of {}.",
            "ensemble_templates": EUROSAT_TEMPLATES,
            "inputs": [k for k, _ in images],
            "single_probs": single.tolist(),
            "ensemble_probs": ens.tolist(),
        }
    with open(out / "reference.json", "w") as f:
        json.dump(ref, f)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{name}: {size / 1e6:.2f} MB")


def write_preprocess_fixture(images):
    """transformers' uint8 pixels after resize + centre crop at CLIP's real 224 px size."""
    out = FIX / "preprocess"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                 do_rescale=False, do_normalize=False)
    index = []
    for i, (key, path) in enumerate(images):
        pv = proc(images=Image.open(path), return_tensors="np")["pixel_values"][0]
        arr = np.clip(np.round(pv), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        assert np.abs(arr.astype(np.float32) - pv.transpose(1, 2, 0)).max() == 0
        name = f"{i:02d}.png"
        Image.fromarray(arr).save(out / name)
        index.append({"input": key, "expected": name})
    with open(out / "index.json", "w") as f:
        json.dump(index, f, indent=1)


def make_gpt2(name, seed, **cfg):
    """A tiny random GPT-2 and its reference logits: full pass, embeddings input, cached steps."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**cfg)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    out = FIX / "gpt2" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    ids = torch.randint(0, cfg["vocab_size"], (2, 9), generator=g)
    prefix = torch.randn((2, 4, cfg["n_embd"]), generator=g)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        embeds = torch.cat([prefix, model.transformer.wte(ids)], dim=1)
        logits_embeds = model(inputs_embeds=embeds).logits
    ref = {
        "input_ids": ids.tolist(),
        "logits": logits.flatten().tolist(),
        "logits_shape": list(logits.shape),
        "prefix": prefix.flatten().tolist(),
        "prefix_shape": list(prefix.shape),
        "logits_with_prefix": logits_embeds.flatten().tolist(),
    }
    with open(out / "reference.json", "w") as f:
        json.dump(ref, f)
    print(f"gpt2 {name}: {sum(p.stat().st_size for p in out.iterdir()) / 1e6:.2f} MB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("SKYSCRIBE_DATA", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    data = Path(args.data)
    torch.set_num_threads(2)
    clip_tok, gpt2_tok = build_tokenizers()
    clip_tok = CLIPTokenizer.from_pretrained(str(ROOT / "assets/tokenizers/clip"))
    write_token_fixture(clip_tok, gpt2_tok, data)
    images = fixture_images(data)
    write_preprocess_fixture(images)
    make_gpt2("tiny", 3, vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=4,
              bos_token_id=255, eos_token_id=255)
    make_clip(
        "tiny-a",
        text=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", eos_token_id=2),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8, hidden_act="quick_gelu"),
        proj=16, pre_size=32, crop=32, dtype=torch.float16, binary=False, seed=1,
        clip_tok=clip_tok, images=images,
    )
    make_clip(
        "tiny-b",
        text=dict(hidden_size=12, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3,
                  max_position_embeddings=77, vocab_size=49408, hidden_act="gelu",
                  bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision=dict(hidden_size=24, intermediate_size=30, num_hidden_layers=1, num_attention_heads=2,
                    image_size=48, patch_size=16, hidden_act="gelu"),
        proj=20, pre_size=56, crop=48, dtype=torch.float32, binary=True, seed=2,
        clip_tok=clip_tok, images=images,
    )


if __name__ == "__main__":
    main()
