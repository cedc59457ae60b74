#!/usr/bin/env python3
"""ClipCap fixtures: tiny random checkpoints in the reference layout (a state dict with
`clip_project.*` and `gpt.*` tensors, saved with torch.save), and the captions that the
reference's greedy decoding (`generate2`: argmax each step, stop after the "." token or 67
tokens) gives for them.

  /tmp/pyref/bin/python scripts/reference/make_clipcap_reference.py   (after make_reference.py)

The mapping networks below are written from the ClipCap paper and the reference's parameter
names; they compute what the reference's MLP and TransformerMapper compute.
"""
import json
import shutil
from pathlib import Path

import torch
from torch import nn
from PIL import Image
from transformers import CLIPImageProcessorPil, CLIPModel, GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests/fixtures"
OUT = FIX / "clipcap"


class MlpMapper(nn.Module):
    def __init__(self, clip_dim, width, k):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(clip_dim, width * k // 2), nn.Tanh(), nn.Linear(width * k // 2, width * k))

    def forward(self, x):
        return self.model(x)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        h = self.heads
        q = self.to_queries(x).reshape(b, n, h, c // h)
        kv = self.to_keys_values(x).reshape(b, n, 2, h, c // h)
        k, v = kv[:, :, 0], kv[:, :, 1]
        att = torch.einsum("bnhd,bmhd->bnmh", q, k) * (c // h) ** -0.5
        att = att.softmax(dim=2)
        return self.project(torch.einsum("bnmh,bmhd->bnhd", att, v).reshape(b, n, c))


class Layer(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, 8)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 2 * dim)
        self.mlp.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp.fc2(torch.relu(self.mlp.fc1(self.norm2(x))))


class TransformerMapper(nn.Module):
    def __init__(self, clip_dim, width, k, clip_length, layers):
        super().__init__()
        self.clip_length = clip_length
        self.linear = nn.Linear(clip_dim, clip_length * width)
        self.prefix_const = nn.Parameter(torch.randn(k, width))
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList([Layer(width) for _ in range(layers)])

    def forward(self, x):
        x = self.linear(x).view(x.shape[0], self.clip_length, -1)
        x = torch.cat((x, self.prefix_const.unsqueeze(0).expand(x.shape[0], *self.prefix_const.shape)), dim=1)
        for layer in self.transformer.layers:
            x = layer(x)
        return x[:, self.clip_length:]


class ClipCap(nn.Module):
    def __init__(self, mapper, gpt, k):
        super().__init__()
        self.clip_project = mapper
        self.gpt = gpt
        self.k = k

    def prefix(self, clip):
        return self.clip_project(clip).view(clip.shape[0], self.k, -1)


def greedy(model, clip, stop=13, length=67):
    generated = model.prefix(clip)
    tokens = []
    for _ in range(length):
        logits = model.gpt(inputs_embeds=generated).logits[:, -1, :]
        nxt = int(torch.argmax(logits, -1)[0])
        tokens.append(nxt)
        generated = torch.cat((generated, model.gpt.transformer.wte(torch.tensor([[nxt]]))), dim=1)
        if nxt == stop:
            break
    return tokens


def beam(model, clip, beam_size=3, stop=13, length=67):
    """The reference's generate_beam: length-normalised beam scores, finished beams carried."""
    generated = model.prefix(clip)
    tokens = scores = None
    seq_lengths = torch.ones(beam_size)
    is_stopped = torch.zeros(beam_size, dtype=torch.bool)
    for _ in range(length):
        logits = model.gpt(inputs_embeds=generated).logits[:, -1, :].softmax(-1).log()
        if scores is None:
            scores, next_tokens = logits.topk(beam_size, -1)
            generated = generated.expand(beam_size, *generated.shape[1:])
            next_tokens, scores = next_tokens.permute(1, 0), scores.squeeze(0)
            tokens = next_tokens
        else:
            logits[is_stopped] = -float("inf")
            logits[is_stopped, 0] = 0
            scores_sum = scores[:, None] + logits
            seq_lengths[~is_stopped] += 1
            avg = scores_sum / seq_lengths[:, None]
            avg, next_tokens = avg.view(-1).topk(beam_size, -1)
            source = next_tokens // scores_sum.shape[1]
            seq_lengths = seq_lengths[source]
            next_tokens = (next_tokens % scores_sum.shape[1]).unsqueeze(1)
            tokens = torch.cat((tokens[source], next_tokens), dim=1)
            generated = generated[source]
            scores = avg * seq_lengths
            is_stopped = is_stopped[source]
        generated = torch.cat((generated, model.gpt.transformer.wte(next_tokens.squeeze(1)).unsqueeze(1)), dim=1)
        is_stopped = is_stopped | next_tokens.eq(stop).squeeze(1)
        if is_stopped.all():
            break
    best = int((scores / seq_lengths).argmax())
    return tokens[best][: int(seq_lengths[best])].tolist()


def main():
    torch.manual_seed(7)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    clip_dir = FIX / "clip/tiny-a"
    clip = CLIPModel.from_pretrained(clip_dir).float().eval()  # stored in f16, run in f32 as skyscribe does
    proc = CLIPImageProcessorPil.from_pretrained(clip_dir)
    images = ["images/wide.jpg", "images/gray.png", "images/rgba.png"]
    with torch.no_grad():
        embeds = []
        for name in images:
            e = clip.get_image_features(pixel_values=proc(images=Image.open(FIX / name), return_tensors="pt")["pixel_values"])
            embeds.append(getattr(e, "pooler_output", e))
        embeds = torch.cat(embeds)
    gcfg = GPT2Config(vocab_size=50257, n_positions=128, n_embd=16, n_layer=2, n_head=2)
    gpt_dir = OUT / "gpt2"
    gpt_dir.mkdir()
    (gpt_dir / "config.json").write_text(json.dumps(gcfg.to_dict(), indent=1))
    expected = {"clip_model": "tiny-a", "images": images, "checkpoints": {}}
    k = 10
    for kind in ["mlp", "transformer"]:
        gpt = GPT2LMHeadModel(gcfg).eval()
        with torch.no_grad():
            # Strong positions and mixing weights make each step's token differ; the token
            # scale keeps logits well separated (no argmax near-ties between implementations).
            for n, p in gpt.named_parameters():
                p.add_(torch.randn_like(p) * 0.2)
            gpt.transformer.wte.weight.normal_(0.0, 0.3)
            gpt.transformer.wpe.weight.normal_(0.0, 1.0)
        if kind == "mlp":
            mapper = MlpMapper(embeds.shape[1], 16, k)
        else:
            mapper = TransformerMapper(embeds.shape[1], 16, k, clip_length=4, layers=2)
        model = ClipCap(mapper, gpt, k).eval()
        # Stored in f16; the reference decodes with the same values in f32.
        # lm_head is tied to wte: leave the duplicate out (the importer never reads it).
        state = {n: t.detach().half() for n, t in model.state_dict().items() if n != "gpt.lm_head.weight"}
        torch.save(state, OUT / f"{kind}.pt")
        model.load_state_dict({n: t.float() for n, t in state.items()}, strict=False)
        with torch.no_grad():
            caps = [greedy(model, embeds[i:i + 1]) for i in range(len(images))]
            beams = [beam(model, embeds[i:i + 1]) for i in range(len(images))]
        expected["checkpoints"][kind] = {"prefix_length": k, "clip_length": 4, "num_layers": 2, "tokens": caps,
                                         "beam_size": 3, "beam_tokens": beams}
        print(kind, [len(c) for c in caps], [len(set(c)) for c in caps])
    (OUT / "expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main()
