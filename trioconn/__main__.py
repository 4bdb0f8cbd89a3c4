"""``python -m trioconn``: the same command as the ``trioconn`` console script."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
