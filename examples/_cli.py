"""What every example program does the same way: logging, Ctrl-C, and errors as one line.

Ctrl-C ends the trio run with ``KeyboardInterrupt`` (inside an exception group when it lands in
a nursery); a person wants a one-line goodbye and exit status 130, not a traceback. Expected
failures (a refused handshake, a port in use) likewise become one line and status 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def log_to_stderr() -> None:
    """Library log lines (logger ``trioconn``) as ``HH:MM:SS name: message`` on stderr."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )


def run_program(
    prog: str,
    run: Callable[[], int | None],
    *,
    errors: tuple[type[Exception], ...],
    interrupted: str | None = None,
) -> int:
    """Call ``run`` (which calls ``trio.run``) and turn Ctrl-C and ``errors`` into exit statuses.

    Returns:
        What ``run`` returned (0 for None), 130 after Ctrl-C, 1 after one of ``errors``.
    """
    status = 0
    try:
        status = run() or 0
    except* KeyboardInterrupt:
        if interrupted:
            print(f"{prog}: {interrupted}", file=sys.stderr)
        status = 130
    except* errors as group:
        for exc in group.exceptions:
            print(f"{prog}: {exc}", file=sys.stderr)
        status = 1
    return status
