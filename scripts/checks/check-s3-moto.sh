#!/usr/bin/env bash
# `skyscribe scan s3://…` against a local S3 server (moto's server mode, from PyPI), beside the
# same scan of the local file: the features must be the same. Not in CI.
#
#   python3 -m venv /tmp/moto && /tmp/moto/bin/pip install "moto[server]" boto3
#   PY=/tmp/moto/bin/python scripts/checks/check-s3-moto.sh SCENE.tif
set -euo pipefail
scene=${1:?a GeoTIFF}
py=${PY:-python3}
bin=${SKYSCRIBE:-target/release/skyscribe}
port=${PORT:-5055}
work=$(mktemp -d)
"$py" -m moto.server -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$work"' EXIT
sleep 2
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
"$py" - "$scene" <<PY
import boto3, sys
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:$port")
s3.create_bucket(Bucket="scenes")
s3.upload_file(sys.argv[1], "scenes", "scene.tif")
PY
labels=forest,sea,river,buildings,fields
"$bin" scan "$scene" --labels $labels --tile 64 --stride 64 --out "$work/local.geojson" 2>/dev/null
"$bin" scan s3://scenes/scene.tif --labels $labels --tile 64 --stride 64 --out "$work/s3.geojson"
"$py" - "$work/local.geojson" "$work/s3.geojson" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
strip = lambda fc: [(f["geometry"], f["properties"]["labels"]) for f in fc["features"]]
assert strip(a) == strip(b), "the S3 scan differs from the local one"
print(f"s3: {len(b['features'])} features, the same as the local scan")
PY
