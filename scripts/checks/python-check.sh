#!/usr/bin/env bash
# The Python package (python/): built into a virtual environment with maturin in the dev
# profile — the profile `cargo test` uses, so every compiled dependency is shared and only the
# extension itself and pyo3/numpy compile — then its pytest tests, which compare each function
# with the CLI binary `cargo test` built (target/debug/skyscribe).
#
# Needs python3 with venv and network access to PyPI (maturin, pytest, numpy; tifffile and
# geopandas for the scan tests; mypy, which checks the stubs against the example and tests). The venv is .venv (or $SKYSCRIBE_VENV) and is kept between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${SKYSCRIBE_VENV:-$(pwd)/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    rm -rf "$venv"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
start=$SECONDS
"$venv/bin/pip" install -q --disable-pip-version-check \
  "maturin>=1.16,<2" pytest numpy tifffile geopandas mypy
(cd python && VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop --quiet)
echo "python-check: tools and the extension built in $((SECONDS - start)) s" >&2
if [ ! -x target/debug/skyscribe ]; then
  cargo build --bin skyscribe
fi
start=$SECONDS
# The typed package (skyscribe/_skyscribe.pyi) as a user's code sees it.
(cd python && "$venv/bin/mypy" --ignore-missing-imports skyscribe tests ../examples/python)
SKYSCRIBE_BIN="$(pwd)/target/debug/skyscribe" "$venv/bin/python" -m pytest python/tests -q
echo "python-check: typed and tested in $((SECONDS - start)) s" >&2
