#!/usr/bin/env python3
"""The index parts are the interchange: DuckDB reads parts/*.parquet as they are and its
array_cosine_similarity gives the same top-k as `skyscribe search`; Polars and PyArrow read the
same files (fixed-size list embeddings). A check for people, not CI (CI needs no Python).

    pip install duckdb polars pyarrow        # PyPI
    python3 scripts/checks/duckdb_check.py --index IDX --text "an airport" [--text ...] [--skyscribe BIN]

Exit status 0 when every query's top-k ids agree in order and scores within 1e-5.
"""
import argparse
import json
import math
import subprocess
import sys


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--text", action="append", required=True)
    ap.add_argument("--skyscribe", default="target/release/skyscribe")
    ap.add_argument("--top-k", type=int, default=10)
    a = ap.parse_args()

    import duckdb

    meta = json.load(open(f"{a.index}/index.json"))
    dim, model = meta["dim"], meta["model"]["spec"]
    parts = f"{a.index}/parts/*.parquet"
    con = duckdb.connect()
    n, = con.execute(f"SELECT count(*) FROM read_parquet('{parts}')").fetchone()
    print(f"duckdb {duckdb.__version__}: {n} rows in {parts}")
    failures = 0
    for text in a.text:
        # The query vector as skyscribe makes it: the text's embedding, L2-normalised.
        e = run([a.skyscribe, "embed", "--model", model, "--text", text, "--jsonl"])[0]["embedding"]
        norm = math.sqrt(sum(v * v for v in e))
        q = [v / norm for v in e]
        rows = con.execute(
            f"""SELECT id, array_cosine_similarity(embedding::FLOAT[{dim}], ?::FLOAT[{dim}]) AS score
                FROM read_parquet('{parts}') ORDER BY score DESC, id LIMIT {a.top_k}""",
            [q],
        ).fetchall()
        ours = run([a.skyscribe, "search", "--index", a.index, "--text", text,
                    "--top-k", str(a.top_k), "--jsonl", "--engine", "exact"])
        same_ids = [r[0] for r in rows] == [h["id"] for h in ours]
        worst = max(abs(r[1] - h["score"]) for r, h in zip(rows, ours))
        ok = same_ids and worst < 1e-5
        failures += not ok
        print(f"{'same' if ok else 'DIFFERENT'}: {text!r}: top-{a.top_k} ids "
              f"{'equal' if same_ids else 'differ'}, largest score difference {worst:.2e}")
        if not same_ids:
            for r, h in zip(rows, ours):
                print(f"   duckdb {r[0]} {r[1]:.6f} | skyscribe {h['id']} {h['score']:.6f}")

    try:
        import polars as pl
        df = pl.read_parquet(parts)
        print(f"polars {pl.__version__}: {df.height} rows, embedding dtype {df.schema['embedding']}")
    except ImportError:
        print("polars not installed: skipped")
    try:
        import pyarrow.dataset as ds
        t = ds.dataset(f"{a.index}/parts", format="parquet").to_table()
        print(f"pyarrow: {t.num_rows} rows, embedding type {t.schema.field('embedding').type}")
    except ImportError:
        print("pyarrow not installed: skipped")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
