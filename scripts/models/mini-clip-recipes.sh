#!/usr/bin/env bash
# Trains mini CLIP variants from scratch on RSICD train and scores each zero-shot the way the
# built-in model is chosen (docs/src/mini-models.md: recipes compared):
#
#   scripts/models/mini-clip-recipes.sh RUNS_DIR VARIANT...
#
# VARIANT is one of
#   base        128 px, 16 epochs, captions only                        (r1)
#   recipe      base + --captions both --label-smoothing 0.1 --ema 0.995 (r2)
#   long        recipe, 24 epochs                                        (r3, built in)
#   low-res     recipe + --low-res-views 0.5                             (r4)
#   no-captions / no-smoothing / no-ema    recipe without that one option (ablation)
#
# For each variant: the best single template on RSICD *train* scenes is chosen, and RSICD test
# scenes and EuroSAT test are scored with it; one JSON line per variant goes to
# RUNS_DIR/recipes.jsonl. A finished variant is not retrained; a stopped one resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SKYSCRIBE_DATA:-../shared/data}
RUNS=${1:?usage: scripts/models/mini-clip-recipes.sh RUNS_DIR VARIANT...}
shift
mkdir -p "$RUNS"
cargo build --release
BIN=target/release/skyscribe

RECIPE="--captions both --label-smoothing 0.1 --ema 0.995"
for variant in "$@"; do
  case $variant in
    base) args="--epochs 16" ;;
    recipe) args="--epochs 16 $RECIPE" ;;
    long) args="--epochs 24 $RECIPE" ;;
    low-res) args="--epochs 16 $RECIPE --low-res-views 0.5" ;;
    no-captions) args="--epochs 16 --label-smoothing 0.1 --ema 0.995" ;;
    no-smoothing) args="--epochs 16 --captions both --ema 0.995" ;;
    no-ema) args="--epochs 16 --captions both --label-smoothing 0.1" ;;
    *) echo "unknown variant: $variant" >&2; exit 2 ;;
  esac
  out="$RUNS/$variant"
  # A run with a checkpoint resumes (a finished one returns without training); its epochs are
  # appended to the history.
  resume=$([ -f "$out/checkpoint/state.json" ] && echo --resume || true)
  # shellcheck disable=SC2086  # $args is a list of options
  /usr/bin/time -f "train clip $variant: %e s wall, %M KB peak" $BIN train clip \
    --data "rsicd:$DATA/rsicd/train" --config mini-128 --out "$out" $args $resume --jsonl \
    >> "$out.history.jsonl"
  cp scripts/models/mini-templates.grid "$out.grid"
  score() {
    $BIN eval zero-shot --model "$out" --grid "$out.grid" --report "$out-zs-$1" --no-cache \
      "${@:2}" > /dev/null
  }
  score rsicd-train --dataset "rsicd-scenes:$DATA/rsicd/train" --labels rsicd
  score rsicd-test --dataset "rsicd-scenes:$DATA/rsicd/test" --labels rsicd
  score eurosat-test --dataset "folder:$DATA/eurosat/images" \
    --split "$DATA/eurosat/splits/test.txt" --labels eurosat
  python3 - "$variant" "$out" "$args" >> "$RUNS/recipes.jsonl" <<'PY'
import json, sys
variant, out, args = sys.argv[1:]
def singles(name):
    grid = json.load(open(f"{out}-zs-{name}/summary.json"))["evaluation"]["grid"]
    return {g["template_list"][0]: g["single"]["top1"] for g in grid if len(g["template_list"]) == 1}
train = singles("rsicd-train")
template = max(train, key=train.get)
history = [json.loads(l) for l in open(f"{out}.history.jsonl") if l.startswith("{")]
val = [h["val_loss"] for h in history if h.get("val_loss") is not None]
print(json.dumps({
    "variant": variant, "options": args, "template": template,
    "rsicd_train_top1": train[template], "rsicd_test_top1": singles("rsicd-test")[template],
    "eurosat_test_top1": singles("eurosat-test")[template],
    "best_val_loss": min(val) if val else None,
}))
PY
  tail -1 "$RUNS/recipes.jsonl"
done
