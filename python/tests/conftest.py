"""What the Python package's tests share: the CLI binary they compare against, the shared data
set, and one loaded model.

Every function is checked against the CLI's ``--jsonl`` output for the same inputs. The binary
is ``$SKYSCRIBE_BIN``, else ``target/debug/skyscribe`` (``cargo test`` builds it; ``.ci/run``
runs the package's tests after it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SKYSCRIBE_DATA", REPO.parent / "shared" / "data"))
EUROSAT = DATA / "eurosat" / "images"
SAMPLES = REPO / "assets" / "samples"


def cli_binary() -> Path:
    b = Path(os.environ.get("SKYSCRIBE_BIN", REPO / "target" / "debug" / "skyscribe"))
    if not b.exists():
        pytest.fail(f"{b}: no skyscribe binary to compare with (run `cargo build` first)")
    return b


def run_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """Runs the CLI offline; with ``ok``, a failure fails the test with its stderr."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run(
        [str(cli_binary()), *map(str, args)], capture_output=True, text=True, env=env
    )
    if ok and p.returncode != 0:
        pytest.fail(f"skyscribe {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


def cli_jsonl(*args: str) -> List[dict]:
    """The JSON Lines a CLI command prints."""
    out = run_cli(*args, "--jsonl").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def eurosat_images(per_class: int, start: int = 1) -> List[Path]:
    """``per_class`` EuroSAT images of each class (numbered from ``start``), class by class."""
    if not EUROSAT.is_dir():
        pytest.skip(f"{EUROSAT}: the shared EuroSAT images are not here (set SKYSCRIBE_DATA)")
    paths = []
    for cls in sorted(p.name for p in EUROSAT.iterdir() if p.is_dir()):
        for n in range(start, start + per_class):
            paths.append(EUROSAT / cls / f"{cls}_{n}.jpg")
    return paths


@pytest.fixture(scope="session")
def clip():
    import skyscribe

    return skyscribe.Clip()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The CLI's embedding cache and built-in model copies in a folder of this run's own."""
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SKYSCRIBE_CACHE")
    os.environ["SKYSCRIBE_CACHE"] = str(root)
    yield root
    if old is None:
        del os.environ["SKYSCRIBE_CACHE"]
    else:
        os.environ["SKYSCRIBE_CACHE"] = old
