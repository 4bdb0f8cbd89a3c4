"""The python blocks of the "JSON" sections of docs/server.md and docs/client.md run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def section_blocks(doc: str, heading: str) -> list[str]:
    text = (ROOT / doc).read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


BLOCKS = [
    pytest.param(block, id=f"{doc}-{index}")
    for doc in ("docs/server.md", "docs/client.md")
    for index, block in enumerate(section_blocks(doc, "JSON"))
]


def test_each_json_section_has_examples():
    assert len(BLOCKS) == 3


@pytest.mark.parametrize("block", BLOCKS)
def test_json_doc_block_runs(block, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the example prints what it shows"
