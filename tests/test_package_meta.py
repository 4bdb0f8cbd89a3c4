"""What the package says about itself, and the clear error for the client on the wrong event loop."""

from __future__ import annotations

import asyncio
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import trio

import trioconn
from trioconn import _version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_version_is_the_installed_distributions() -> None:
    assert trioconn.__version__ == metadata.version("trioconn") == PYPROJECT["version"]


def test_a_source_checkout_that_was_never_installed_reads_its_pyproject(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert _version.version() == PYPROJECT["version"]
    assert _version.version(tmp_path / "missing.toml") == "0+unknown"
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "something-else"\nversion = "9"\n')
    assert _version.version(other) == "0+unknown"
    other.write_text("not toml [")
    assert _version.version(other) == "0+unknown"


def test_the_classifiers_agree_with_the_rest_of_pyproject() -> None:
    classifiers = PYPROJECT["classifiers"]
    assert all(re.fullmatch(r"[A-Z][\w .-]*( :: [\w .()+/-]+)+", c) for c in classifiers), classifiers
    assert classifiers == sorted(classifiers)
    assert "License :: OSI Approved :: MIT License" in classifiers and PYPROJECT["license"]["text"] == "MIT"
    assert {"Framework :: Trio", "Framework :: AnyIO", "Typing :: Typed"} <= set(classifiers)
    assert (ROOT / "trioconn" / "py.typed").exists()
    lowest = re.fullmatch(r">=3\.(\d+)", PYPROJECT["requires-python"])
    assert lowest is not None
    listed = sorted(int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c))
    assert listed[0] == int(lowest.group(1))
    assert metadata.metadata("trioconn").get_all("Classifier") == classifiers


# ------------------------------------------------------------------------- the wrong event loop


def test_connect_under_asyncio_raises_a_trioconn_error_saying_what_to_do() -> None:
    async def main() -> None:
        async with trioconn.connect("ws://127.0.0.1:9/"):
            pass  # pragma: no cover

    with pytest.raises(trioconn.TrioconnError) as info:
        asyncio.run(main())
    message = str(info.value)
    assert "trioconn.connect() runs on trio, but it was called from asyncio" in message
    assert "trio.run(main)" in message and "thread" in message and "trioconn.js" in message
    assert "RunContext" not in message


def test_a_connect_made_outside_any_loop_and_entered_under_asyncio_says_the_same() -> None:
    context = trioconn.connect("ws://127.0.0.1:9/")  # no event loop here: allowed

    async def main() -> None:
        async with context:
            pass  # pragma: no cover

    with pytest.raises(trioconn.TrioconnError, match="called from asyncio"):
        asyncio.run(main())


def test_connect_under_trio_is_not_refused() -> None:
    async def main() -> str:
        async with trioconn.connect("ws://127.0.0.1:9/", connect_timeout=0.01) as client:
            return client.state.value

    assert trio.run(main) == "connecting"
