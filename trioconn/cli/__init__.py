"""The ``trioconn`` command (console script and ``python -m trioconn``).

One argparse parser with one subcommand per module of this package:

- ``trioconn serve`` (:mod:`trioconn.cli.serve`): a standalone hub with an HTTP publish API,
  health and Prometheus metrics.
- ``trioconn tail`` / ``trioconn publish`` (:mod:`trioconn.cli.tail`, :mod:`trioconn.cli.publish`):
  a command-line client.

Adding a subcommand: write ``trioconn/cli/NAME.py`` exposing two functions and list ``"NAME"`` in
``SUBCOMMANDS`` below::

    def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        parser = subparsers.add_parser("NAME", help="one line", description="a paragraph")
        parser.add_argument(...)

    def run(args: argparse.Namespace) -> int:
        ...  # the exit code

``add_parser`` must not import optional dependencies (the parser of every subcommand is built for
each invocation, also for ``--help``); ``run`` imports what it needs and says which extra to
install when it is missing. ``main`` sets ``args.run`` to the chosen module's ``run``.

Exit codes shared by every subcommand: 0 success, 1 failure at run time (the message says why),
2 invalid command line or configuration (argparse's convention; the message names the flag or the
key), 130 interrupted by Ctrl+C. A subcommand documents any other code it returns.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Modules of this package that provide a subcommand, in the order ``--help`` lists them. A name
#: whose module does not exist yet is skipped, so helpers can be added in any order.
SUBCOMMANDS: tuple[str, ...] = ("serve", "tail", "publish")


def build_parser() -> argparse.ArgumentParser:
    """The ``trioconn`` parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="trioconn",
        description="Live data over WebSockets: run a hub, publish to it, follow a topic.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for added in set(subparsers.choices) - before:
            subparsers.choices[added].set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trioconn`` command line and return its exit code.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit code (see the module docstring). argparse itself exits with 2 on a bad command
        line; ``main`` turns that ``SystemExit`` into the return value so callers and tests get
        an int either way.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("trioconn: interrupted", file=sys.stderr)
        return 130
    return code
