#!/usr/bin/env bash
# The OpenAPI document against the server it describes: Schemathesis (`st run --checks all`)
# over every operation of a server on loopback with the built-in models and an index of the
# fixture images. Passes when Schemathesis reports nothing. Not run by CI (needs Python
# packages); run it after changing an endpoint or web/openapi.json:
#
#   python3 -m venv /tmp/st && /tmp/st/bin/pip install schemathesis pillow
#   PATH=/tmp/st/bin:$PATH bash scripts/checks/check-openapi.sh [target/release/skyscribe] [EXAMPLES]
#
# Also validates the document itself with openapi-spec-validator when it is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/skyscribe}
examples=${2:-50}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" index build --index "$work/index" tests/fixtures/images >/dev/null 2>&1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --addr "127.0.0.1:$port" --index "$work/index" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if command -v openapi-spec-validator >/dev/null 2>&1; then
  openapi-spec-validator src/serve/web/openapi.json
fi
# One setting past Schemathesis's defaults: a schema-violating request whose URI is past
# 65,534 bytes (hundreds of repeated parameters) is refused by the HTTP layer with 414 before
# any endpoint reads it; 414 is a refusal like 400, so it counts as one.
cat >"$work/schemathesis.toml" <<'TOML'
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "406", "414", "422", "428"]
TOML
set +e
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=scripts \
  st --config-file "$work/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
  --checks all --max-examples "$examples" --request-timeout 60 --no-color
status=$?
set -e
if grep -q panicked "$work/server.log"; then
  echo "the server panicked:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
exit $status
