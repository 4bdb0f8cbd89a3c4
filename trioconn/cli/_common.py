"""What ``trioconn tail`` and ``trioconn publish`` share: their arguments, the connection, exit codes.

Arguments are checked by argparse ``type=`` functions, so a bad value is a usage error (exit 2)
whose message names the argument. The command runs inside ``trio.run`` with Ctrl+C taken over
by a signal receiver (``run_command``): an interrupt cancels the command, the client closes, and
the exit code is 130 with no traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from .._core.exceptions import (
    ConnectionClosed,
    HandshakeRejected,
    ReconnectFailed,
    ServerError,
    TrioconnError,
)
from .._core.protocol import validate_topic
from .._server.groups import unwrap_group

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_connection_arguments",
    "connect_options",
    "count",
    "describe_failure",
    "error",
    "run_command",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: standard output was closed by its reader (``trioconn tail … | head``): 128 + SIGPIPE, as a
#: shell reports a command killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141

#: HTTP statuses and close codes that mean "these credentials will not do".
_AUTH_STATUSES = {401: "unauthorized", 403: "forbidden"}
_AUTH_CODES = {4401: "unauthorized", 4403: "forbidden"}


def error(prog: str, message: str) -> None:
    """Print ``prog: message`` to standard error."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _url(value: str) -> str:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"must be a ws:// or wss:// URL with a host, got {value!r}")
    return value


def _topic(value: str) -> str:
    try:
        return validate_topic(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _valid_token(value: str, source: str) -> str:
    if not value or not all("!" <= ch <= "~" for ch in value):
        raise argparse.ArgumentTypeError(
            f"{source} must be visible ASCII characters with no spaces or control characters (RFC 6750)"
        )
    return value


def _token(value: str) -> str:
    return _valid_token(value, "the token")


def _token_file(value: str) -> str:
    try:
        text = Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value!r}: {exc}") from None
    return _valid_token(text.strip(), f"the token in {value!r}")


def count(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for a whole number of at least ``minimum``."""

    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return check


def add_connection_arguments(parser: argparse.ArgumentParser, *, max_attempts: int | None) -> None:
    """``URL TOPIC``, ``--token`` / ``--token-file`` and ``--max-attempts``."""
    parser.add_argument("url", metavar="URL", type=_url, help="the hub, ws://host:port/path or wss://…")
    parser.add_argument("topic", metavar="TOPIC", type=_topic, help="the topic name")
    credentials = parser.add_mutually_exclusive_group()
    credentials.add_argument(
        "--token",
        metavar="T",
        type=_token,
        help="bearer token for the hub's authenticate hook (visible to other users in the process list: "
        "prefer --token-file)",
    )
    credentials.add_argument(
        "--token-file",
        metavar="F",
        type=_token_file,
        dest="token",
        help="read the bearer token from file F (surrounding whitespace is ignored)",
    )
    default = "never give up" if max_attempts is None else str(max_attempts)
    parser.add_argument(
        "--max-attempts",
        metavar="N",
        type=count(1),
        default=max_attempts,
        help=f"connection attempts in a row that may fail before giving up (default: {default})",
    )


def connect_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``trioconn.connect`` for these command-line arguments."""
    from .._core.backoff import Backoff

    options: dict[str, Any] = {"backoff": Backoff(max_attempts=args.max_attempts)}
    if args.token is not None:
        token: str = args.token

        async def token_provider() -> str:
            return token

        options["token_provider"] = token_provider
    return options


def describe_failure(exc: TrioconnError) -> str:
    """A one-line explanation of why the client gave up, saying so plainly for credentials."""
    cause = exc.cause if isinstance(exc, ReconnectFailed) else exc
    if isinstance(cause, HandshakeRejected) and cause.status in _AUTH_STATUSES:
        what = _AUTH_STATUSES[cause.status]
        return f"the hub refused the connection: HTTP {cause.status} {what} (check --token): {exc}"
    if isinstance(cause, ConnectionClosed) and cause.code in _AUTH_CODES:
        what = _AUTH_CODES[cause.code]
        return f"the hub closed the connection: {cause.code} {what} (check --token): {exc}"
    if isinstance(exc, ServerError):
        return f"the hub refused: {exc.code}: {exc.message}"
    return str(exc)


def run_command(prog: str, command: Callable[[], Awaitable[int]]) -> int:
    """Run ``command`` under ``trio.run`` and return its exit code.

    Ctrl+C (SIGINT) is taken by a signal receiver rather than delivered as ``KeyboardInterrupt``:
    it cancels the command, which unwinds like any cancelled trio code (the client closes), and
    the exit code is 130 with no traceback. A closed standard output (``| head``) ends the
    command quietly with 141.
    """
    interrupted = False

    async def main() -> int:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals, unwrap_group():
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(watch)
                try:
                    return await command()
                finally:
                    nursery.cancel_scope.cancel()
        return EXIT_INTERRUPTED  # cancelled by the watcher before the command returned

    try:
        code = trio.run(main)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    if interrupted:
        error(prog, "interrupted")
        return EXIT_INTERRUPTED
    return code


def _silence_stdout() -> None:
    """After a broken pipe, point standard output at /dev/null so that the interpreter's final
    flush does not report the same error again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
