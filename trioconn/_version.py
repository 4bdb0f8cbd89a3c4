"""The package's version: ``trioconn.__version__``.

From the installed distribution's metadata; in a source checkout that was never installed
(``PYTHONPATH=.``), from the ``pyproject.toml`` beside the package, so it is never a guess.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

__all__ = ["version"]

#: What ``version()`` says when neither the metadata nor a pyproject.toml is there.
UNKNOWN = "0+unknown"
#: Where a source checkout keeps its project metadata.
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def version(pyproject: Path = PYPROJECT) -> str:
    """The version of trioconn: installed metadata first, else the source checkout's pyproject."""
    try:
        return metadata.version("trioconn")
    except metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return UNKNOWN
    if project.get("name") != "trioconn" or not isinstance(project.get("version"), str):
        return UNKNOWN
    return str(project["version"])
