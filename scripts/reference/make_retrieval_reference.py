"""Retrieval recall against CLIP_benchmark: tests/fixtures/retrieval/reference.json.

Two sets of embeddings, both exact in float32 (values on a grid, few dimensions), so torch and
skyscribe compute bit-identical scores:
- `distinct`: no query ties with its positive. The recalls of CLIP_benchmark's own
  `recall_at_k` (pip install clip-benchmark), used as its `zeroshot_retrieval` uses it (a query
  counts at k when any positive is in the top k), are the reference, digit for digit.
- `ties`: many identical captions across images and two identical images, the ties RSICD's
  duplicate captions make. Here torch.topk's order among equal scores is its own (it is not
  the data order, and it changes with the algorithm torch picks), so CLIP_benchmark's numbers
  are recorded but not a reference; the reference is the data order — a stable sort (numpy's
  argsort kind="stable"), the lower index first — which skyscribe follows. The old rule (a tie
  counts for the query) is recorded too, to show what the change moves.
Needs torch and clip-benchmark; CI reads only the JSON.

    python scripts/reference/make_retrieval_reference.py tests/fixtures/retrieval/reference.json
"""
import json
import sys

import numpy as np
import torch
from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k


def clip_benchmark(images, texts, owner):
    scores = torch.from_numpy(texts) @ torch.from_numpy(images).T  # texts × images
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), torch.tensor(owner)] = True
    out = {}
    for k in (1, 5, 10):
        out[f"i2t_r{k}"] = (recall_at_k(scores.T, positive.T, k) > 0).float().mean().item()
        out[f"t2i_r{k}"] = (recall_at_k(scores, positive, k) > 0).float().mean().item()
    return out


def by_rule(images, texts, owner, rule):
    scores = texts @ images.T
    positives = {
        "t2i": (scores, [{o} for o in owner]),
        "i2t": (scores.T, [{t for t, o in enumerate(owner) if o == i} for i in range(len(images))]),
    }
    out = {}
    for k in (1, 5, 10):
        for name, (s, pos) in positives.items():
            hits = 0
            for q, p in enumerate(pos):
                if rule == "stable":
                    top = set(np.argsort(-s[q], kind="stable")[:k].tolist())
                    hits += bool(top & p)
                else:  # a tie counts for the query
                    best = max(s[q][list(p)])
                    hits += 1 + int((s[q] > best).sum()) <= k
            out[f"{name}_r{k}"] = hits / len(pos)
    return out


def tied_queries(images, texts, owner):
    """Text queries whose own image ties with another, plus image queries whose best own
    caption ties with another caption."""
    s = texts @ images.T
    text_ties = sum(int((s[t] == s[t, o]).sum() > 1) for t, o in enumerate(owner))
    image_ties = 0
    for i in range(len(images)):
        best = max(s[t, i] for t, o in enumerate(owner) if o == i)
        image_ties += int((s[:, i] == best).sum() > 1)
    return text_ties + image_ties


rng = np.random.default_rng(30)
dim, n_images, per_image = 6, 40, 5
owner = [i for i in range(n_images) for _ in range(per_image)]

# Distinct: values on a 1/256 grid (dot products exact in float32), redrawn until no query
# ties with its own positive.
while True:
    images = (rng.integers(-256, 257, size=(n_images, dim)) / 256).astype(np.float32)
    texts = np.array(
        [images[o] + rng.integers(-300, 301, size=dim) / 256 for o in owner], dtype=np.float32
    )
    texts = (np.round(texts * 256) / 256).astype(np.float32)
    if tied_queries(images, texts, owner) == 0:
        break
distinct = {"images": images, "texts": texts, "owner": owner}

# Ties: small integers over 4; 60 % of the captions from 20 shared ones.
images = (rng.integers(-2, 3, size=(n_images, dim)) / 4).astype(np.float32)
images[7] = images[3]
images[21] = images[12]
pool = (rng.integers(-2, 3, size=(60, dim)) / 4).astype(np.float32)
texts = []
for o in owner:
    if rng.random() < 0.6:
        texts.append(pool[rng.integers(0, 20)])
    else:
        texts.append(np.clip(images[o] + pool[rng.integers(20, 60)] / 2, -1, 1))
texts = (np.round(np.array(texts) * 4) / 4).astype(np.float32)
ties = {"images": images, "texts": texts, "owner": owner}

out = {"source": f"clip-benchmark recall_at_k, torch {torch.__version__}, numpy {np.__version__}"}
for name, d in [("distinct", distinct), ("ties", ties)]:
    entry = {
        "images": d["images"].tolist(),
        "texts": d["texts"].tolist(),
        "owner": d["owner"],
        "clip_benchmark": clip_benchmark(d["images"], d["texts"], d["owner"]),
        "stable_sort": by_rule(d["images"], d["texts"], d["owner"], "stable"),
        "ties_count_for_the_query": by_rule(d["images"], d["texts"], d["owner"], "query"),
        "queries_with_a_tie": tied_queries(d["images"], d["texts"], d["owner"]),
    }
    out[name] = entry
    print(name, {k: v for k, v in entry.items() if k not in ("images", "texts", "owner")}, file=sys.stderr)
json.dump(out, open(sys.argv[1], "w"))
