"""faiss beside `skyscribe bench --search-vectors-file`: the same vectors, the same queries, the
same measures (recall@10 against exact search, latency of one query at a time, build time,
bytes a vector), for faiss's IndexHNSWFlat at skyscribe's HNSW parameters (M 16,
efConstruction 128, inner product on unit vectors) and, with --ivfpq, IndexIVFPQ.

  python3 -m venv /tmp/faissenv && /tmp/faissenv/bin/pip install faiss-cpu numpy
  /tmp/faissenv/bin/python scripts/bench/bench_faiss.py /tmp/real-1m --threads 2 [--ivfpq | --ivfpq-only]

DIR holds base.npy and queries.npy (scripts/bench/ann_vectors.py writes them). Prints a JSON
line per (index, ef or nprobe) and a summary line at ef 128, as skyscribe's last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np


def latencies(index, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[float]]:
    """Top-k of each query, searched one at a time (as a user's query is), and each time."""
    found, times = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = index.search(q[None, :], k)
        times.append((time.perf_counter() - t) * 1e3)
        found.append(i[0])
    return np.array(found), times


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def epsilon_recall(found: np.ndarray, base: np.ndarray, queries: np.ndarray, tenth: np.ndarray) -> float:
    """Share of hits at most 1 % farther (cosine distance) than exact search's 10th, as
    skyscribe's epsilon_recall_at_10."""
    near = 0
    for f, q, t in zip(found, queries, tenth):
        d = 1.0 - base[f] @ q
        near += int(np.sum(d <= t * 1.01 + 1e-6))
    return near / (10 * len(found))


def line(**kw) -> None:
    print(json.dumps(kw), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--ivfpq", action="store_true", help="also IndexIVFPQ (the 10 M memory budget)")
    ap.add_argument("--ivfpq-only", action="store_true", help="IndexIVFPQ without IndexHNSWFlat")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    base = np.load(args.dir / "base.npy")
    queries = np.load(args.dir / "queries.npy")
    n, d = base.shape

    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    sims, exact = flat.search(queries, 10)
    tenth = 1.0 - sims[:, -1]
    found, times = latencies(flat, queries)
    line(index="IndexFlatIP", vectors=n, dim=d, recall_at_10=recall(found, exact),
         p50_ms=float(np.median(times)), p95_ms=float(np.percentile(times, 95)))

    summary = None
    if not args.ivfpq_only:
        summary = hnsw_runs(args, base, queries, exact, tenth)
    if args.ivfpq or args.ivfpq_only:
        ivfpq_runs(base, queries, exact)
    line(summary=summary)


def hnsw_runs(args, base: np.ndarray, queries: np.ndarray, exact: np.ndarray, tenth: np.ndarray) -> dict:
    """IndexHNSWFlat at each ef; returns the summary at ef 128."""
    n, d = base.shape
    hnsw = faiss.IndexHNSWFlat(d, args.connections, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    t = time.perf_counter()
    hnsw.add(base)
    build_s = time.perf_counter() - t
    bytes_per_vector = faiss.serialize_index(hnsw).size / n
    summary = None
    for ef in (32, 64, 128, 256):
        hnsw.hnsw.efSearch = ef
        found, times = latencies(hnsw, queries)
        r = dict(index="IndexHNSWFlat", vectors=n, dim=d, connections=args.connections,
                 ef_construction=args.ef_construction, ef_search=ef, build_s=build_s,
                 recall_at_10=recall(found, exact),
                 epsilon_recall_at_10=epsilon_recall(found, base, queries, tenth),
                 p50_ms=float(np.median(times)),
                 p95_ms=float(np.percentile(times, 95)), bytes_per_vector=bytes_per_vector)
        line(**r)
        if ef == 128:
            summary = dict(vectors=n, dim=d, engine="faiss IndexHNSWFlat", build_s=build_s,
                           recall_at_10=r["recall_at_10"], p50_ms=r["p50_ms"], p95_ms=r["p95_ms"],
                           bytes_per_vector=bytes_per_vector)
    return summary


def ivfpq_runs(base: np.ndarray, queries: np.ndarray, exact: np.ndarray) -> None:
    """IndexIVFPQ (4·√n lists, d/4 sub-quantisers of 8 bits: 48 bytes a 192-d vector, no
    re-ranking) at nprobe 8, 32, 128."""
    n, d = base.shape
    nlist = max(16, int(4 * np.sqrt(n)))
    m = d // 4 if d % 4 == 0 else d // 2
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    ivf.train(base[np.random.default_rng(0).permutation(n)[: min(n, 256 * nlist)]])
    ivf.add(base)
    ivf_build = time.perf_counter() - t
    ivf_bytes = faiss.serialize_index(ivf).size / n
    for nprobe in (8, 32, 128):
        ivf.nprobe = nprobe
        found, times = latencies(ivf, queries)
        line(index=f"IndexIVFPQ nlist {nlist}, m {m}", vectors=n, dim=d, nprobe=nprobe,
             build_s=ivf_build, recall_at_10=recall(found, exact),
             p50_ms=float(np.median(times)), p95_ms=float(np.percentile(times, 95)),
             bytes_per_vector=ivf_bytes)


if __name__ == "__main__":
    main()
