#!/usr/bin/env python3
"""Caption-metric fixture: RSICD test captions scored by pycocoevalcap (the COCO caption
evaluation code), for skyscribe's pure-Rust BLEU, ROUGE-L and CIDEr-D to match.

  /tmp/pyref/bin/pip install pycocoevalcap && /tmp/pyref/bin/python scripts/reference/make_caption_reference.py

Hypotheses are other sentences about the same image (CLIP-rsicd's paraphrases) or about a
neighbouring image, so scores spread; some images get a repeated reference sentence, which the
reference scorers count twice. Captions are pre-tokenised: lower case, "." split off.
"""
import json
import os
import re
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SKYSCRIBE_DATA", ROOT.parent / "shared" / "data"))


def tok(s):
    return " ".join(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", s.lower()))


def main():
    recs = [json.loads(l) for l in (DATA / "rsicd/test/captions.jsonl").read_text().splitlines()][:300]
    gts, res = {}, {}
    for i, r in enumerate(recs):
        refs = [tok(c) for c in r["captions"]]
        if i % 5 == 0:
            refs.append(refs[0])
        if i % 3 == 2:
            hyp = tok(recs[(i + 1) % len(recs)]["captions"][0])
        else:
            hyp = tok(r["augmented"][i % len(r["augmented"])])
        gts[str(i)] = refs
        res[str(i)] = [hyp]
    out = {"pairs": [{"hypothesis": res[k][0], "references": gts[k]} for k in gts]}
    b, bs = Bleu(4).compute_score(gts, res, verbose=0)
    r, rs = Rouge().compute_score(gts, res)
    c, cs = Cider().compute_score(gts, res)
    out["corpus"] = {"bleu": list(b), "rouge_l": float(r), "cider_d": float(c)}
    out["per_image"] = {"bleu": [list(x) for x in zip(*bs)], "rouge_l": [float(x) for x in rs], "cider_d": [float(x) for x in cs]}
    dest = ROOT / "tests/fixtures/captions"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "rsicd_reference_scores.json").write_text(json.dumps(out))
    print(out["corpus"])


if __name__ == "__main__":
    main()
