#!/usr/bin/env bash
# The GPU checks, prepared for a session that is lent a device (which has no Rust): run there,
# from the repository root, with the binary `scripts/checks/build-cuda.sh` built here, carried in an
# ignored folder. Writes its results under OUT (the device tool's folder that comes back).
#
#   bash scripts/checks/gpu-check.sh BINARY [DEVICE]     # DEVICE: cuda (default), or cpu to dry-run here
#
# The stripped binary is ~97 MB, over the device's 64 MiB carry with the tree (~37 MB): carry it
# xz'd (~27 MB; `strip` then `xz -k`) and unpack it there; CUDA 13's libraries must be on
# LD_LIBRARY_PATH there (the binary links them when it starts). Dry-run here (2 minutes, the CPU
# against itself: checks the script, not the GPU):
#   OUT=/tmp/gpu bash scripts/checks/gpu-check.sh target/release/skyscribe cpu
#
# 1. Parity: the built-in models on DEVICE against the same binary on the CPU — image and text
#    embeddings (cosine per row; the minimum is printed) and `describe`'s labels, scores and
#    captions (how many agree, the largest score difference).
#    The same in reduced precision on DEVICE (f16 and bf16 on a GPU; bf16 in a CPU dry run)
#    against the CPU in f32: least cosine, same top-1 label, same caption.
# 2. Speed: `bench` (random ViT-B/32) end to end and model alone at batch 32 and 128, on 512
#    JPEGs copied from the repository's fixtures (decoding and resizing included, as in docs/src/performance.md ›
#    Performance), `bench --texts` and `bench --gemm` (the layers' products), in f32 and each
#    reduced precision; the GPU's name with them. Then `bench --preprocess` on every core
#    (with and without --jpeg-draft) over the same JPEGs and the larger DOTA-crop fixtures: the
#    rate at which that machine's CPUs can feed the GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "$1")
device=${2:-cuda}
out=${OUT:-$(mktemp -d)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$device" = cuda ]; then
  nvidia-smi -L | tee "$out/gpu.txt"
fi
# 0. Parity with transformers itself on DEVICE: the tiny reference models of the parity tests
#    (tests/fixtures/clip, outputs from scripts/reference/make_reference.py), their fixture images and
#    texts, embedded by the binary on DEVICE in f32 (largest difference to transformers' f32;
#    the tests ask for < 1e-4) and in each reduced precision (least cosine; they ask ≥ 0.999).
if [ "$device" = cuda ]; then ref_precisions=(f32 f16 bf16); else ref_precisions=(f32 bf16); fi
for m in tiny-a tiny-b; do
  mkdir -p "$work/$m"
  cp tests/fixtures/clip/$m/* assets/tokenizers/clip/tokenizer.json "$work/$m/"
  mapfile -t ref_args < <(python3 - "$work/$m/reference.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for x in r["images"]:
    if x["input"].startswith("fixture:"):
        print("tests/fixtures/images/" + x["input"][len("fixture:"):])
for t in r["texts"]["texts"]:
    print("--text"); print(t)
PY
)
  for p in "${ref_precisions[@]}"; do
    "$bin" embed --jsonl --model "$work/$m" --device "$device" --precision "$p" "${ref_args[@]}" \
      >"$work/ref-$m-$p.jsonl" 2>"$work/err" ||
      { echo "$m $p on $device refused or failed: $(tail -n 1 "$work/err")"; rm -f "$work/ref-$m-$p.jsonl"; }
  done
done 2>&1 | tee "$out/reference-parity.txt"
python3 - "$work" "$device" <<'PY' | tee -a "$out/reference-parity.txt"
import glob, json, math, os, sys
work, device = sys.argv[1], sys.argv[2]
def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
for m in ["tiny-a", "tiny-b"]:
    r = json.load(open(f"{work}/{m}/reference.json"))
    want = {"tests/fixtures/images/" + x["input"][len("fixture:"):]: x["image_embeds"]
            for x in r["images"] if x["input"].startswith("fixture:")}
    want.update(zip(r["texts"]["texts"], r["texts"]["text_embeds"]))
    for f in sorted(glob.glob(f"{work}/ref-{m}-*.jsonl")):
        p = f.rsplit("-", 1)[1].split(".")[0]
        rows = [json.loads(l) for l in open(f) if l.strip()]
        assert sorted(x["input"] for x in rows) == sorted(want), f"{f}: other inputs"
        diff = max(abs(a - b) for x in rows for a, b in zip(x["embedding"], want[x["input"]]))
        worst = min(cosine(x["embedding"], want[x["input"]]) for x in rows)
        print(f"{m} on {device} in {p} against transformers f32: {len(rows)} embeddings, "
              f"largest difference {diff:.2e}, least cosine {worst:.7f}")
PY
images=(assets/samples/eurosat-river.jpg tests/fixtures/images/* tests/fixtures/preprocess/*.png)
texts=(--text "a river" --text "a dense residential area" --text "farmland" --text "an airport")
# Reduced precision on the device: f16 and bf16 on a GPU (the whole model); in a CPU dry run,
# bf16 (the linear layers, on CPUs with AVX512-BF16; refused elsewhere, which the run prints).
if [ "$device" = cuda ]; then precisions=(f16 bf16); else precisions=(bf16); fi
runs=("cpu f32" "$device f32")
for p in "${precisions[@]}"; do runs+=("$device $p"); done
for run in "${runs[@]}"; do
  read -r d p <<<"$run"
  if "$bin" embed --jsonl --device "$d" --precision "$p" "${images[@]}" "${texts[@]}" \
      >"$work/embed-$d-$p.jsonl" 2>"$work/err" &&
    "$bin" describe --jsonl --device "$d" --precision "$p" "${images[@]}" \
      >"$work/describe-$d-$p.jsonl" 2>>"$work/err"; then
    :
  else
    echo "$d $p refused or failed: $(tail -n 1 "$work/err")" | tee -a "$out/parity.txt"
    rm -f "$work/embed-$d-$p.jsonl" "$work/describe-$d-$p.jsonl"
  fi
done
python3 - "$work" "${runs[@]:1}" <<'PY' | tee -a "$out/parity.txt"
import json, math, os, sys
work, runs = sys.argv[1], sys.argv[2:]
def rows(name):
    return [json.loads(line) for line in open(f"{work}/{name}") if line.strip()]
def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
names = lambda r: [l["label"] for l in r["labels"]]
for run in runs:
    tag = run.replace(" ", "-")
    if not os.path.exists(f"{work}/embed-{tag}.jsonl"):
        continue
    cpu, dev = rows("embed-cpu-f32.jsonl"), rows(f"embed-{tag}.jsonl")
    assert [r["input"] for r in cpu] == [r["input"] for r in dev], "different inputs"
    worst = min(cosine(a["embedding"], b["embedding"]) for a, b in zip(cpu, dev))
    print(f"{run} against cpu f32 — embeddings: {len(cpu)} rows, minimum cosine {worst:.7f}")
    cpu, dev = rows("describe-cpu-f32.jsonl"), rows(f"describe-{tag}.jsonl")
    same_labels = sum(names(a) == names(b) for a, b in zip(cpu, dev))
    same_top1 = sum(names(a)[:1] == names(b)[:1] for a, b in zip(cpu, dev))
    same_captions = sum(a["caption"] == b["caption"] for a, b in zip(cpu, dev))
    score_gap = max(abs(x["score"] - y["score"]) for a, b in zip(cpu, dev)
                    for x, y in zip(a["labels"], b["labels"]))
    print(f"{run} against cpu f32 — describe: {len(cpu)} images; same top-1 label: {same_top1}, "
          f"same top-5 in order: {same_labels}, same caption: {same_captions}; "
          f"largest score difference {score_gap:.2e}")
PY
# 512 JPEGs: the fixture JPEGs, copied under distinct names.
mkdir -p "$work/jpegs"
jpegs=(assets/samples/*.jpg tests/fixtures/images/*.jpg)
for i in $(seq 0 511); do
  cp "${jpegs[$((i % ${#jpegs[@]}))]}" "$work/jpegs/$i.jpg"
done
for p in f32 "${precisions[@]}"; do
  for batch in 32 128; do
    "$bin" bench --device "$device" --precision "$p" --images "$work/jpegs" --limit 512 \
      --batch-size "$batch" --jsonl | tee -a "$out/bench.jsonl" || true
  done
  "$bin" bench --device "$device" --precision "$p" --texts --batch-size 64 --jsonl \
    | tee -a "$out/texts.jsonl" || true
  "$bin" bench --device "$device" --precision "$p" --gemm --jsonl | tee -a "$out/gemm.jsonl" || true
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
