#!/usr/bin/env bash
# The GPU checks, prepared for a session that is lent a device (which has no Rust): run there,
# from the repository root, with the binary `scripts/build-cuda.sh` built here, carried in an
# ignored folder. Writes its results under OUT (the device tool's folder that comes back).
#
#   bash scripts/gpu-check.sh BINARY [DEVICE]     # DEVICE: cuda (default), or cpu to dry-run here
#
# The stripped binary is ~97 MB, over the device's 64 MiB carry with the tree (~37 MB): carry it
# xz'd (~27 MB; `strip` then `xz -k`) and unpack it there; CUDA 13's libraries must be on
# LD_LIBRARY_PATH there (the binary links them when it starts). Dry-run here (2 minutes, the CPU
# against itself: checks the script, not the GPU):
#   OUT=/tmp/gpu bash scripts/gpu-check.sh target/release/skyscribe cpu
#
# 1. Parity: the built-in models on DEVICE against the same binary on the CPU — image and text
#    embeddings (cosine per row; the minimum is printed) and `describe`'s labels, scores and
#    captions (how many agree, the largest score difference).
# 2. Speed: `bench` (random ViT-B/32) end to end and model alone at batch 32 and 128, on 512
#    JPEGs copied from the repository's fixtures (decoding and resizing included, as in README ›
#    Performance), in f32; the GPU's name with them. Then `bench --preprocess` on every core
#    (with and without --jpeg-draft) over the same JPEGs and the larger DOTA-crop fixtures: the
#    rate at which that machine's CPUs can feed the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
device=${2:-cuda}
out=${OUT:-$(mktemp -d)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$device" = cuda ]; then
  nvidia-smi -L | tee "$out/gpu.txt"
fi
images=(assets/samples/eurosat-river.jpg tests/fixtures/images/* tests/fixtures/preprocess/*.png)
texts=(--text "a river" --text "a dense residential area" --text "farmland" --text "an airport")
for d in cpu "$device"; do
  "$bin" embed --jsonl --device "$d" "${images[@]}" "${texts[@]}" >"$work/embed-$d.jsonl"
  "$bin" describe --jsonl --device "$d" "${images[@]}" >"$work/describe-$d.jsonl"
done
python3 - "$work" "$device" <<'PY' | tee "$out/parity.txt"
import json, math, sys
work, device = sys.argv[1], sys.argv[2]
def rows(name):
    return [json.loads(line) for line in open(f"{work}/{name}") if line.strip()]
cpu, dev = rows("embed-cpu.jsonl"), rows(f"embed-{device}.jsonl")
assert [r["input"] for r in cpu] == [r["input"] for r in dev], "different inputs"
def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
worst = min(cosine(a["embedding"], b["embedding"]) for a, b in zip(cpu, dev))
print(f"embeddings: {len(cpu)} rows, minimum cosine {device} vs cpu: {worst:.7f}")
cpu, dev = rows("describe-cpu.jsonl"), rows(f"describe-{device}.jsonl")
names = lambda r: [l["label"] for l in r["labels"]]
same_labels = sum(names(a) == names(b) for a, b in zip(cpu, dev))
same_captions = sum(a["caption"] == b["caption"] for a, b in zip(cpu, dev))
score_gap = max(abs(x["score"] - y["score"]) for a, b in zip(cpu, dev)
                for x, y in zip(a["labels"], b["labels"]))
print(f"describe: {len(cpu)} images; same top-5 labels in order: {same_labels}, "
      f"same caption: {same_captions}; largest score difference {score_gap:.2e}")
PY
# 512 JPEGs: the fixture JPEGs, copied under distinct names.
mkdir -p "$work/jpegs"
jpegs=(assets/samples/*.jpg tests/fixtures/images/*.jpg)
for i in $(seq 0 511); do
  cp "${jpegs[$((i % ${#jpegs[@]}))]}" "$work/jpegs/$i.jpg"
done
for batch in 32 128; do
  "$bin" bench --device "$device" --images "$work/jpegs" --limit 512 --batch-size "$batch" --jsonl \
    | tee -a "$out/bench.jsonl"
done
mkdir -p "$work/large"
for i in $(seq 0 511); do
  cp "tests/fixtures/preprocess-draft/inputs/dota-$([ $((i % 2)) = 0 ] && echo 420 || echo 444).jpg" \
    "$work/large/$i.jpg"
done
for set in jpegs large; do
  for draft in "" --jpeg-draft; do
    "$bin" bench --preprocess --images "$work/$set" --limit 512 --jsonl $draft | tee -a "$out/preprocess.jsonl"
  done
done
