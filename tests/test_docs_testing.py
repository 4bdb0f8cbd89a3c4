"""Every example of docs/testing.md runs as written: test modules with pytest (the fixtures come
from the installed plugin, as for a user), scripts with python."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
TEST_MODULES = [block for block in BLOCKS if "\nasync def test_" in block]
SCRIPTS = [block for block in BLOCKS if block not in TEST_MODULES]


def test_the_page_has_its_examples():
    assert len(TEST_MODULES) == 2 and len(SCRIPTS) == 1


@pytest.mark.parametrize("block", TEST_MODULES, ids=["banner", "restart-and-cut"])
def test_example_test_module_passes(block, pytester):
    pytester.makeini("[pytest]\ntrio_mode = true\nfilterwarnings = error\n")
    pytester.makepyfile(test_example=block)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=block.count("\nasync def test_"))


@pytest.mark.parametrize("block", SCRIPTS, ids=["without-pytest"])
def test_example_script_runs(block, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "dead link noticed after 20 virtual seconds" in done.stdout
