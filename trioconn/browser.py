"""The browser client, ``trioconn.js``, shipped inside the Python package.

``trioconn/js/`` holds one dependency-free ES module (``trioconn.js``), its TypeScript
declarations (``trioconn.d.ts``) and a ``package.json``; see ``docs/browser.md``. A server that
wants to hand the client to its pages serves ``SCRIPT_PATH`` (or the whole ``script_dir()``) as
a static file with the ``text/javascript`` content type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["SCRIPT_PATH", "script_dir"]

_DIR: Final = Path(__file__).resolve().parent / "js"

#: The path of ``trioconn.js`` inside the installed package.
SCRIPT_PATH: Final[Path] = _DIR / "trioconn.js"


def script_dir() -> Path:
    """The directory holding ``trioconn.js``, ``trioconn.d.ts``, ``package.json`` and ``README.md``."""
    return _DIR
