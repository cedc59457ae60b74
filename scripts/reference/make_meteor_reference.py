#!/usr/bin/env python3
"""METEOR fixture: the pairs of tests/fixtures/captions/rsicd_reference_scores.json scored by
pycocoevalcap's METEOR (the Meteor 1.5 jar, `-l en -norm`, needs Java), for skyscribe's METEOR
to be compared with. Run scripts/reference/make_caption_reference.py first.

  /work/pyref/bin/python scripts/reference/make_meteor_reference.py
"""
import json
from pathlib import Path

from pycocoevalcap.meteor.meteor import Meteor

ROOT = Path(__file__).resolve().parents[2]


def main():
    fixture = ROOT / "tests/fixtures/captions/rsicd_reference_scores.json"
    pairs = json.loads(fixture.read_text())["pairs"]
    gts = {str(i): p["references"] for i, p in enumerate(pairs)}
    res = {str(i): [p["hypothesis"]] for i, p in enumerate(pairs)}
    m, ms = Meteor().compute_score(gts, res)
    out = {"corpus": float(m), "per_image": [float(x) for x in ms]}
    (ROOT / "tests/fixtures/captions/rsicd_meteor_scores.json").write_text(json.dumps(out))
    print(out["corpus"])


if __name__ == "__main__":
    main()
