"""The Python example (examples/python/quickstart.py) runs, and says what it should."""

from __future__ import annotations

import subprocess
import sys

from conftest import EUROSAT, REPO

import pytest


def test_the_quickstart_runs(tmp_path):
    if not EUROSAT.is_dir():
        pytest.skip(f"{EUROSAT}: the shared EuroSAT images are not here")
    p = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python" / "quickstart.py")],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert p.returncode == 0, p.stderr
    assert "embeddings (200, 192) float32" in p.stdout
    assert "linear probe on 100 held-out images" in p.stdout
    assert "class map (16, 16) on EPSG:32632" in p.stdout
    assert (tmp_path / "eurosat-probe.safetensors").exists()
