#!/usr/bin/env bash
# Trains the mini CLIP and captioner from scratch on RSICD's training split, evaluates them
# (docs/src/mini-models.md), and writes the f16 copies built into the binary.
#
#   scripts/models/mini-models.sh [RUNS_DIR]     (default: ../runs)
#
# Every step prints its wall time and peak memory (/usr/bin/time). Running the script again
# continues a stopped run: the training steps resume from their checkpoints (a finished one
# returns without training) and append to their histories; the evaluations run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SKYSCRIBE_DATA:-../shared/data}
RUNS=${1:-../runs}
mkdir -p "$RUNS"
cargo build --release
BIN=target/release/skyscribe
timed() { /usr/bin/time -f "$1: %e s wall, %M KB peak" "${@:2}"; }
resume_flag() { [ -f "$1/checkpoint/state.json" ] && echo --resume || true; }

# 1. CLIP from scratch (mini shapes at 128 px, own 2048-token BPE), 24 epochs, trained on the
#    captions and RSICD's paraphrases, label smoothing 0.1, validated and saved as a moving
#    average of the weights (scripts/models/mini-clip-recipes.sh compares this recipe with others).
timed "train clip" $BIN train clip --data rsicd:$DATA/rsicd/train --config mini-128 \
  --out "$RUNS/clip-mini" --epochs 24 --captions both --label-smoothing 0.1 --ema 0.995 \
  $(resume_flag "$RUNS/clip-mini") --jsonl | tee -a "$RUNS/clip-mini.history.jsonl"

# 2. Zero-shot. The template (one of scripts/models/mini-templates.grid) is chosen on RSICD *train*
#    scenes; test numbers use it.
cp scripts/models/mini-templates.grid "$RUNS/templates.grid"
timed "zero-shot rsicd train (template choice)" $BIN eval zero-shot --model "$RUNS/clip-mini" \
  --dataset rsicd-scenes:$DATA/rsicd/train --labels rsicd --grid "$RUNS/templates.grid" \
  --report "$RUNS/zs-rsicd-train" --no-cache
# The best single template on RSICD train becomes the model's default (its skyscribe.json).
TEMPLATE=$(python3 -c '
import json, sys
grid = json.load(open(sys.argv[1]))["evaluation"]["grid"]
best = max((g for g in grid if len(g["template_list"]) == 1), key=lambda g: g["single"]["top1"])
print(best["template_list"][0])' "$RUNS/zs-rsicd-train/summary.json")
echo "default template, chosen on RSICD train: $TEMPLATE"
timed "zero-shot rsicd test" $BIN eval zero-shot --model "$RUNS/clip-mini" \
  --dataset rsicd-scenes:$DATA/rsicd/test --labels rsicd --grid "$RUNS/templates.grid" \
  --report "$RUNS/zs-rsicd-test" --no-cache
timed "zero-shot eurosat test" $BIN eval zero-shot --model "$RUNS/clip-mini" \
  --dataset folder:$DATA/eurosat/images --split $DATA/eurosat/splits/test.txt \
  --labels eurosat --grid "$RUNS/templates.grid" --report "$RUNS/zs-eurosat-test" --no-cache

# 3. Captioner: GPT-2 mini from scratch with an MLP mapper, K=10, on the mini CLIP.
timed "train captioner" $BIN train captioner --data rsicd:$DATA/rsicd/train \
  --clip "$RUNS/clip-mini" --gpt2-config mini --out "$RUNS/captioner-mini" \
  --epochs 6 --batch-size 40 --lr 1e-3 --warmup 300 --no-cache \
  $(resume_flag "$RUNS/captioner-mini") --jsonl | tee -a "$RUNS/captioner-mini.history.jsonl"

# 4. Captions on RSICD test: the captioner (greedy, beam 5) and the nearest-neighbour baseline.
timed "eval captions greedy" $BIN eval captions --captioner "$RUNS/captioner-mini" \
  --data rsicd:$DATA/rsicd/test --save-predictions "$RUNS/captions-greedy.jsonl" --no-cache
timed "eval captions beam" $BIN eval captions --captioner "$RUNS/captioner-mini" \
  --data rsicd:$DATA/rsicd/test --decode beam --save-predictions "$RUNS/captions-beam.jsonl" \
  --no-cache
timed "eval captions nearest neighbour" $BIN eval captions \
  --nearest-neighbour rsicd:$DATA/rsicd/train --clip "$RUNS/clip-mini" \
  --data rsicd:$DATA/rsicd/test --save-predictions "$RUNS/captions-nn.jsonl" --no-cache

# 5. The built-in copies (f16); the captioner refers to the built-in CLIP by name.
rm -rf assets/models/mini-clip assets/models/mini-captioner
$BIN export --from "$RUNS/clip-mini" --to assets/models/mini-clip --dtype f16
$BIN export --from "$RUNS/captioner-mini" --to assets/models/mini-captioner --dtype f16
sed -i "s#\"clip_model\": \".*\"#\"clip_model\": \"skyscribe-mini\"#" assets/models/mini-captioner/config.json
printf '{\n  "templates": ["%s"],\n  "describe_labels": "describe"\n}\n' "$TEMPLATE" \
  > assets/models/mini-clip/skyscribe.json
du -ch assets/models/*/model.safetensors
