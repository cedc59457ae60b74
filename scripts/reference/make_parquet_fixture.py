#!/usr/bin/env python3
"""A tiny RSICD split in the Hugging Face `arampacha/rsicd` parquet layout (columns `filename`,
`captions` (list of strings), `image` (struct of `bytes` and `path`), snappy-compressed, as the
`datasets` library writes it), made from three RSICD test images, for the parquet reader's test.

  /work/pyref/bin/pip install pyarrow && /work/pyref/bin/python scripts/reference/make_parquet_fixture.py
"""
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SKYSCRIBE_DATA", ROOT.parent / "shared" / "data"))


def main():
    recs = [json.loads(l) for l in (DATA / "rsicd/test/captions.jsonl").read_text().splitlines()]
    rows = [recs[0], recs[400], recs[800]]
    table = pa.table({
        "filename": [r["filename"] for r in rows],
        "captions": [r["captions"] for r in rows],
        "image": [{"bytes": (DATA / "rsicd/test" / r["filename"]).read_bytes(), "path": None} for r in rows],
    })
    dest = ROOT / "tests/fixtures/captions/rsicd-3.parquet"
    pq.write_table(table, dest, compression="snappy")
    print(dest, dest.stat().st_size, [r["filename"] for r in rows])


if __name__ == "__main__":
    main()
