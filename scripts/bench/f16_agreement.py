"""How much of exact f32 search's top 10 survives storing the base vectors in half precision,
computed in numpy on the same .npy files `skyscribe bench --search-vectors-file` reads — beside
the bench's own `top10_agreement_with_f32` (which the `plain f16` line repeats, up to ties), and for
two ways of storing them that skyscribe does not use, to say what they would buy:

  plain f16    each value rounded to float16 (what `index build --dtype f16` stores)
  centred f16  the index's mean vector kept in f32, each vector's difference from it in f16
               (the part every score shares costs no precision)

For each: top-10 agreement (share of the exact top 10 returned), (1 + 0.01)-approximate
agreement (share of hits at most 1 % farther in cosine distance than the exact 10th), and the
largest change of a score.

Usage:
  python scripts/bench/f16_agreement.py /tmp/real-1m/base.npy /tmp/real-1m/queries.npy --queries 1000
Needs numpy.
"""

from __future__ import annotations

import argparse

import numpy as np


def top10(scores: np.ndarray) -> np.ndarray:
    best = np.argpartition(-scores, 10, axis=1)[:, :10]
    order = np.take_along_axis(scores, best, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(best, order, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("queries")
    ap.add_argument("--queries", dest="count", type=int, default=1000)
    args = ap.parse_args()
    x = np.load(args.base).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.load(args.queries).astype(np.float32)[: args.count]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    mean = x.mean(axis=0)
    stored = {
        "plain f16": (x.astype(np.float16).astype(np.float32), np.zeros_like(mean)),
        "centred f16": ((x - mean).astype(np.float16).astype(np.float32), mean),
    }
    totals = {name: [0, 0, 0.0] for name in stored}
    for s in range(0, len(q), 50):
        block = q[s : s + 50]
        exact = block @ x.T
        want = top10(exact)
        tenth = 1.0 - np.take_along_axis(exact, want[:, 9:10], axis=1)
        for name, (values, shift) in stored.items():
            approx = block @ values.T + (block @ shift)[:, None]
            got = top10(approx)
            t = totals[name]
            t[0] += sum(len(set(w) & set(g)) for w, g in zip(want, got))
            true_distance = 1.0 - np.take_along_axis(exact, got, axis=1)
            t[1] += int((true_distance <= tenth * 1.01 + 1e-6).sum())
            t[2] = max(t[2], float(np.abs(approx - exact).max()))
    n = 10 * len(q)
    print(f"{len(x)} vectors of {x.shape[1]}, {len(q)} queries; mean vector's length {np.linalg.norm(mean):.3f}")
    for name, (found, near, worst) in totals.items():
        print(f"{name:12}  top-10 agreement {found / n:.4f}  (1+0.01)-approximate {near / n:.4f}  largest score change {worst:.2e}")


if __name__ == "__main__":
    main()
