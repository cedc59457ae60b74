#!/usr/bin/env bash
# Full-size parity of `import-openclip` with OpenCLIP (not in CI: needs open-clip-torch and a few
# GB of disk): a random model of each architecture, imported, then embedded by skyscribe and by
# OpenCLIP. Prints the smallest image and text cosine per architecture.
#   scripts/checks/check-openclip-full.sh [ARCH...]      (default: all five built-in architectures)
set -euo pipefail
cd "$(dirname "$0")/../.."
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(ViT-B-32 ViT-B-16 ViT-L-14 ViT-L-14-336 ViT-H-14)
bin=target/release/skyscribe
[ -x "$bin" ] || cargo build --release
work=${WORK:-/tmp/openclip-full}
for arch in "${archs[@]}"; do
  d="$work/$arch"
  rm -rf "$d"
  python3 scripts/reference/make_openclip_reference.py --full "$arch" "$d" >/dev/null
  "$bin" import-openclip --weights "$d/$arch-random.pt" --arch "$arch" --out "$d/hf" >/dev/null
  rm "$d/$arch-random.pt"
  python3 - "$bin" "$d" "$arch" <<'PY'
import json, subprocess, sys
import numpy as np
bin, d, arch = sys.argv[1:]
ref = json.load(open(f"{d}/reference.json"))
args = [bin, "embed", "--jsonl", "--model", f"{d}/hf"] + ref["images"]
for t in ref["texts"]:
    args += ["--text", t]
lines = [json.loads(l) for l in subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()]
cos = lambda a, b: float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
img = [cos(l["embedding"], f) for l, f in zip([l for l in lines if l["kind"] == "image"], ref["image_features"])]
txt = [cos(l["embedding"], f) for l, f in zip([l for l in lines if l["kind"] == "text"], ref["text_features"])]
print(f"{arch}: {len(img)} images min cosine {min(img):.7f}, {len(txt)} texts min cosine {min(txt):.7f}")
PY
  rm -rf "$d/hf"
done
