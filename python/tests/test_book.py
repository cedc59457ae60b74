"""The book's Python chapter (docs/src/python.md) runs as written: each ```python block, from a
folder that looks like the repository's root, with the shared data in SKYSCRIBE_DATA."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import DATA, EUROSAT, REPO

import pytest


def python_blocks(markdown: str) -> list[str]:
    """The text of every fenced block whose language is ``python``."""
    blocks: list[str] = []
    language = None  # the open block's language, None outside blocks
    lines: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip(), []
            else:
                if language == "python":
                    blocks.append("\n".join(lines) + "\n")
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def test_blocks_are_found():
    md = "a\n```python\nx = 1\n```\n```sh\necho\n```\n```python\ny = 2\n```\n"
    assert python_blocks(md) == ["x = 1\n", "y = 2\n"]


def test_the_python_chapter_runs_as_written(tmp_path):
    if not EUROSAT.is_dir():
        pytest.skip(f"{EUROSAT}: the shared EuroSAT images are not here")
    blocks = python_blocks((REPO / "docs" / "src" / "python.md").read_text("utf-8"))
    assert blocks, "docs/src/python.md has no python block"
    os.symlink(REPO / "assets", tmp_path / "assets")
    env = dict(os.environ, SKYSCRIBE_DATA=str(DATA), HF_HUB_OFFLINE="1")
    for i, code in enumerate(blocks):
        p = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert p.returncode == 0, f"block {i + 1} of docs/src/python.md stopped:\n{p.stderr}"
    assert (tmp_path / "probe.safetensors").is_file()
    assert (tmp_path / "idx" / "index.json").is_file()
    assert "EPSG:32632 (16, 16)" in p.stdout
