"""``trioconn publish URL TOPIC DATA``: publish to a stream topic and print the offset.

``DATA`` is JSON text; ``-`` reads standard input instead and publishes each non-blank line as
one event, in order, each acknowledged before the next is sent. Each offset the hub gives is
printed on its own line. The hub must allow the publication: its ``authorize`` hook decides
(without one, every client publication is refused with ``forbidden``).

Exit codes: 0 every event was published; 1 the hub refused one (the message gives the error
code, e.g. ``forbidden``), or the client gave up connecting (``--max-attempts``, refused
credentials), or the link dropped before an acknowledgement (that event may or may not have
been stored); 2 invalid arguments, or ``DATA`` (a line of standard input) that is not JSON —
lines before it were published; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_connection_arguments,
    connect_options,
    describe_failure,
    error,
    run_command,
)

__all__ = ["add_parser", "parse_data", "run"]

PROG = "trioconn publish"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``trioconn publish``."""
    parser = subparsers.add_parser(
        "publish",
        help="publish JSON data to a stream topic and print the offset",
        description=(
            "Publish DATA (JSON text) to stream topic TOPIC on the hub at URL and print the offset "
            "the hub gave it. DATA '-' publishes each non-blank line of standard input, in order. "
            "The hub's authorize hook must allow it. Exit codes: 0 published; 1 refused by the hub "
            "(the message gives the error code) or the connection failed; 2 invalid arguments or "
            "data that is not JSON; 130 interrupted."
        ),
    )
    add_connection_arguments(parser, max_attempts=3)
    parser.add_argument(
        "data",
        metavar="DATA",
        type=_data,
        help="JSON text, e.g. '{\"pct\": 50}' or '\"a line\"'; - for stdin",
    )


class _Stdin:
    """``DATA`` was ``-``: one publication per line of standard input."""


def parse_data(text: str) -> Any:
    """Parse JSON text strictly (no NaN or Infinity); ``ValueError`` saying why otherwise."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    value = json.loads(text, parse_constant=constant)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    return value


def _data(value: str) -> Any:
    if value == "-":
        return _Stdin()
    try:
        return parse_data(value)
    except (ValueError, RecursionError) as exc:
        raise argparse.ArgumentTypeError(f"is not JSON: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``trioconn publish``; returns the exit code (see the module docstring)."""
    return run_command(PROG, lambda: _publish(args))


async def _publish(args: argparse.Namespace) -> int:
    import trio

    from .. import ConnectionBroken, TrioconnError, connect

    async def lines() -> Any:
        number = 0
        while True:
            raw = await trio.to_thread.run_sync(sys.stdin.buffer.readline, abandon_on_cancel=True)
            if not raw:
                return
            number += 1
            text = raw.decode("utf-8", "replace").strip()
            if text:
                yield number, text

    try:
        async with connect(args.url, **connect_options(args)) as client:
            if not isinstance(args.data, _Stdin):
                return await _one(client, args.topic, args.data, None)
            async for number, text in lines():
                try:
                    data = parse_data(text)
                except (ValueError, RecursionError) as exc:
                    error(PROG, f"line {number} of standard input is not JSON: {exc}")
                    return EXIT_USAGE
                code = await _one(client, args.topic, data, number)
                if code != EXIT_OK:
                    return code
            return EXIT_OK
    except ConnectionBroken as exc:
        error(
            PROG, f"the link dropped before the hub acknowledged; the event may or may not be stored: {exc}"
        )
        return EXIT_FAILED
    except TrioconnError as exc:
        error(PROG, describe_failure(exc))
        return EXIT_FAILED


async def _one(client: Any, topic: str, data: Any, line: int | None) -> int:
    from .. import ServerError

    where = "" if line is None else f"line {line}: "
    try:
        offset = await client.publish(topic, data)
    except TypeError as exc:  # nested too deep for the protocol
        error(PROG, f"{where}{exc}")
        return EXIT_USAGE
    except ServerError as exc:
        error(PROG, f"{where}{describe_failure(exc)}")
        return EXIT_FAILED
    sys.stdout.write(f"{offset}\n")
    sys.stdout.flush()
    return EXIT_OK
