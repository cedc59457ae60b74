"""Vectors for measuring approximate search at archive scale, as float32 .npy files that
`skyscribe bench --search-vectors-file` and `bench_faiss.py` both read.

Two kinds:

  real       Real image embeddings (the raw matrices of a skyscribe index, e.g. EuroSAT + RSICD
             through the built-in model) expanded to N vectors. 1,000 real vectors (seeded) are
             held out as the queries; the others stay in the base, and the rest of the N are
             drawn between real neighbours: pick a real vector a, one of its 10 nearest real
             neighbours b, t ~ U(0, 1), and take normalise((1 - t) a + t b + e), with e Gaussian
             noise of a quarter of the median nearest-neighbour distance (SMOTE's
             oversampling). New points lie on the real neighbourhood graph, so the expanded set
             keeps the real one's low intrinsic dimension and its clusters, without making
             exact copies.
  clustered  skyscribe bench's own synthetic recipe (`--search-vectors N`): 1,000 centres
             uniform in [-1, 1]^D, normalised, plus uniform noise of length about 0.6; queries
             are base vectors moved by uniform noise of +-0.05 a coordinate. Same distribution
             as the Rust generator, other draws.

Usage:
  skyscribe index build --index /tmp/realidx $D/eurosat/images $D/rsicd/train $D/rsicd/test
  python scripts/bench/ann_vectors.py real --index /tmp/realidx --n 1000000 --out /tmp/real-1m
  python scripts/bench/ann_vectors.py clustered --dim 512 --n 1000000 --out /tmp/clustered-1m
  skyscribe bench --search-vectors-file /tmp/real-1m/base.npy \
      --search-queries-file /tmp/real-1m/queries.npy --ann --jsonl

Writes OUT/base.npy (N x D) and OUT/queries.npy (Q x D), rows L2-normalised. Needs numpy.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def index_vectors(index: Path) -> np.ndarray:
    meta = json.loads((index / "index.json").read_text())
    dim, dtype = meta["dim"], meta.get("dtype", "f32")
    parts = sorted((index / "parts").glob(f"_part-*-of-*.{dtype}"))
    if not parts:
        raise SystemExit(f"{index}: no raw matrices in parts/ (build the index first)")
    values = {"f32": np.float32, "f16": np.float16}[dtype]
    return np.concatenate(
        [np.fromfile(p, dtype=values).astype(np.float32).reshape(-1, dim) for p in parts]
    )


def nearest(x: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """The k nearest other rows of each row (cosine), by blocks of exact products."""
    out = np.empty((len(x), k), dtype=np.int64)
    for s in range(0, len(x), block):
        sims = x[s : s + block] @ x.T
        rows = np.arange(s, min(s + block, len(x)))
        sims[rows - s, rows] = -np.inf
        idx = np.argpartition(-sims, k, axis=1)[:, :k]
        out[s : s + block] = idx
    return out


def real(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    x = normalise(index_vectors(args.index))
    order = rng.permutation(len(x))
    queries, base = x[order[: args.queries]], x[order[args.queries :]]
    if args.n < len(base):
        raise SystemExit(f"--n {args.n} is fewer than the {len(base)} real base vectors")
    nn = nearest(base, 10)
    nn_dist = 1.0 - np.einsum("ij,ij->i", base, base[nn[:, 0]])
    # Cosine distance d between unit vectors is |a - b|^2 / 2: their Euclidean distance is
    # sqrt(2 d). The noise's length is a quarter of the median of that.
    sigma = 0.25 * float(np.median(np.sqrt(2 * nn_dist))) / np.sqrt(x.shape[1])
    extra = args.n - len(base)
    chunks = [base]
    for s in range(0, extra, 1 << 18):
        m = min(1 << 18, extra - s)
        a = rng.integers(0, len(base), m)
        b = nn[a, rng.integers(0, 10, m)]
        t = rng.random((m, 1), dtype=np.float32)
        e = rng.normal(0.0, sigma, (m, x.shape[1])).astype(np.float32)
        chunks.append(normalise((1 - t) * base[a] + t * base[b] + e))
    print(
        f"real: {len(x)} vectors of {x.shape[1]} ({args.queries} held out as queries), median "
        f"nearest-neighbour cosine distance {np.median(nn_dist):.4f}; noise sigma {sigma:.5f}"
    )
    return np.concatenate(chunks), queries


def clustered(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    d = args.dim
    centres = normalise(rng.uniform(-1, 1, (1000, d)).astype(np.float32))
    scale = 0.6 * np.sqrt(3.0 / d)
    chunks = []
    for s in range(0, args.n, 1 << 18):
        m = min(1 << 18, args.n - s)
        c = centres[rng.integers(0, 1000, m)]
        chunks.append(normalise(c + scale * rng.uniform(-1, 1, (m, d)).astype(np.float32)))
    base = np.concatenate(chunks)
    rows = rng.integers(0, len(base), args.queries)
    queries = normalise(base[rows] + 0.05 * rng.uniform(-1, 1, (args.queries, d)).astype(np.float32))
    return base, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["real", "clustered"])
    ap.add_argument("--index", type=Path, help="real: a skyscribe index folder")
    ap.add_argument("--dim", type=int, default=512, help="clustered: the dimension")
    ap.add_argument("--n", type=int, required=True, help="base vectors")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.kind == "real" and args.index is None:
        ap.error("real needs --index")
    base, queries = real(args) if args.kind == "real" else clustered(args)
    os.makedirs(args.out, exist_ok=True)
    np.save(args.out / "base.npy", base)
    np.save(args.out / "queries.npy", queries)
    print(f"wrote {args.out}/base.npy {base.shape} and queries.npy {queries.shape}")


if __name__ == "__main__":
    main()
