#!/usr/bin/env bash
# The load test of `skyscribe serve` in docs/src/serving.md, on loopback only, bounded in count and time:
#   1. throughput with 1 and 16 clients, with batching (--max-batch 32) and without (1);
#   2. 32 clients for 30 s on /v1/labels with EuroSAT images (the main row of docs/src/serving.md);
#   3. past capacity: 256 clients against a queue of 64 — 503s shed the excess, the accepted
#      requests' latency stays bounded, memory stays flat — and the server answers normally
#      afterwards;
#      once with clients that retry at once, once with clients that honour Retry-After.
#   4. with MODEL=DIR set, step 1 again (15 s runs) with that CLIP (e.g. the ViT-B/32-shaped
#      model docs/src/serving.md names), where the model, not the server, is the bound.
# Usage: [MODEL=DIR] scripts/bench/load-test.sh [OUT_DIR]   (needs ../shared/data/eurosat; ~4 minutes)
# Prints each run as a JSON line, also appended to OUT_DIR/load.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-target/load-test}"
mkdir -p "$out"
: > "$out/load.jsonl"
data="${SKYSCRIBE_DATA:-../shared/data}/eurosat/images"
[ -d "$data" ] || { echo "no EuroSAT images at $data (set SKYSCRIBE_DATA)" >&2; exit 1; }
cargo build --release --quiet
bin=target/release/skyscribe

# 512 EuroSAT images, the same number from each class.
images="$out/images"
rm -rf "$images" && mkdir -p "$images"
for class in "$data"/*/; do
  mapfile -t files < <(find "$class" -name '*.jpg' | sort)
  for f in "${files[@]:0:52}"; do ln -s "$(realpath "$f")" "$images/"; done
done
images_flag=(--images "$images" --limit 512)
model_flag=() # the built-in mini CLIP

server_pid=""
start_server() { # flags…
  "$bin" serve --addr 127.0.0.1:0 --no-caption "${model_flag[@]}" "$@" 2> "$out/server.log" &
  server_pid=$!
  for _ in $(seq 600); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$out/server.log" | sed 's|listening on http://||' || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$out/server.log" >&2; exit 1; }
}
stop_server() {
  kill -TERM "$server_pid" && wait "$server_pid" || true
}
record() { # label clients seconds [flags…]: a run, printed and appended to load.jsonl with its label
  local label=$1 clients=$2 seconds=$3
  shift 3
  echo "== $label"
  "$bin" bench --http "http://$addr/v1/labels?labels=eurosat" --clients "$clients" \
    --duration-s "$seconds" --server-pid "$server_pid" "${images_flag[@]}" --jsonl "$@" |
    sed "s|^{|{\"run\":\"$label\",|" | tee -a "$out/load.jsonl"
}

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
for batch in 1 32; do
  start_server --max-batch "$batch"
  record "max-batch $batch, 1 client" 1 10
  record "max-batch $batch, 16 clients" 16 10
  stop_server
done

start_server
record "32 clients, 30 s" 32 30
stop_server

start_server --max-queue 64
record "past capacity: 256 clients, queue 64, 20 s" 256 20
record "afterwards: 1 client, 5 s" 1 5
record "past capacity, clients honour Retry-After: 256 clients, 20 s" 256 20 --honour-retry-after
record "afterwards: 1 client, 5 s (2)" 1 5
grep -o 'skyscribe_queue_depth [0-9]*' <(curl -s "http://$addr/metrics") || true
stop_server

if [ -n "${MODEL:-}" ]; then
  model_flag=(--model "$MODEL")
  for batch in 1 32; do
    start_server --max-batch "$batch"
    record "$MODEL, max-batch $batch, 1 client" 1 15
    record "$MODEL, max-batch $batch, 16 clients" 16 15
    stop_server
  done
fi
echo "written: $out/load.jsonl"
