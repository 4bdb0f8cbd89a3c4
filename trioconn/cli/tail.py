"""``trioconn tail URL TOPIC``: print a topic's items as they come, across reconnects.

Standard output gets one line per item, and nothing else: the data as JSON text (an event's
data, a snapshot's value, the snapshot of a reset), or with ``--json`` the whole item as one
JSON object. Standard error gets what a person watching wants to know: connected, following (the
hub answered the subscription: whatever is published from then on is printed), link lost and
reconnecting, and every ``reset`` (events that could not be recovered). The client resumes after
each reconnect, so each event is printed once, in order, or a reset says what was lost.

Exit codes: 0 the topic ended (or the hub closed the connection with 1000, "work done");
1 the client gave up (``--max-attempts`` failed attempts in a row, refused credentials — HTTP
401/403, close codes 4401/4403 —, a refused subscription, a protocol error), with a message saying
why; 2 invalid arguments; 130 interrupted (Ctrl+C); 141 standard output closed (``| head``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._server.groups import unwrap_group
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    add_connection_arguments,
    connect_options,
    count,
    describe_failure,
    error,
    run_command,
)

__all__ = ["add_parser", "item_json", "run"]

PROG = "trioconn tail"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``trioconn tail``."""
    parser = subparsers.add_parser(
        "tail",
        help="print a topic's events as they come, across reconnects",
        description=(
            "Follow TOPIC on the hub at URL and print each item on its own line as it comes: the "
            "data as JSON text, or with --json the whole item. Reconnects and resumes by itself: "
            "every event once, in order; a reset (events that could not be recovered) is reported "
            "on standard error. Exit codes: 0 the topic ended; 1 gave up (the message says why: "
            "attempts exhausted, credentials refused, subscription refused); 2 invalid arguments; "
            "130 interrupted; 141 standard output closed."
        ),
    )
    add_connection_arguments(parser, max_attempts=None)
    parser.add_argument(
        "--last",
        metavar="N",
        type=count(0),
        default=None,
        help="first print up to N recent events from the topic's history",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each item as a JSON object: type (event, snapshot, reset), topic, epoch, offset, "
        "and data (or, for a reset: previous_epoch, previous_offset, kind, snapshot)",
    )


def item_json(item: Any) -> dict[str, Any]:
    """The ``--json`` form of a subscription item."""
    from .. import EventItem, ResetItem, SnapshotItem

    head = {"topic": item.topic, "epoch": item.epoch, "offset": item.offset}
    if isinstance(item, EventItem):
        return {"type": "event", **head, "data": item.data}
    if isinstance(item, SnapshotItem):
        return {"type": "snapshot", **head, "data": item.data}
    if isinstance(item, ResetItem):
        obj = {
            "type": "reset",
            **head,
            "previous_epoch": item.previous_epoch,
            "previous_offset": item.previous_offset,
            "kind": item.kind,
        }
        if item.has_snapshot:
            obj["snapshot"] = item.snapshot
        return obj
    raise TypeError(f"not a subscription item: {type(item).__name__}")  # pragma: no cover


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _describe_reset(item: Any) -> str:
    if item.previous_epoch is None:
        lost = "its earlier events"
    elif item.previous_epoch != item.epoch:
        lost = f"what came after offset {item.previous_offset} of epoch {item.previous_epoch}"
    else:
        lost = f"the events after offset {item.previous_offset}"
    return (
        f"reset: {lost} could not be recovered (the hub restarted or its history ended); "
        f"continuing from offset {item.offset} of epoch {item.epoch}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``trioconn tail``; returns the exit code (see the module docstring)."""
    return run_command(PROG, lambda: _tail(args))


async def _tail(args: argparse.Namespace) -> int:
    import trio

    from .. import ClientState, EventItem, ResetItem, SnapshotItem, TrioconnError, connect

    async def report(client: Any) -> None:
        opened = False
        async for change in client.state_changes():
            if change.state is ClientState.OPEN:
                error(PROG, f"{'reconnected' if opened else 'connected'} to {args.url}")
                opened = True
            elif change.state is ClientState.RECONNECTING and change.next_attempt_at is not None:
                delay = max(0.0, change.next_attempt_at - trio.current_time())
                error(PROG, f"link lost ({change.reason or change.code}); reconnecting in {delay:.1f} s")

    async def announce(sub: Any) -> None:
        # Once the hub answered: from here on, every event published reaches this tail.
        try:
            info = await sub.ready()
        except TrioconnError:
            return  # refused, or the client ended first: the iteration reports it
        error(PROG, f"following {args.topic!r} from offset {info.offset} of epoch {info.epoch}")

    out = sys.stdout
    try:
        async with connect(args.url, **connect_options(args)) as client:
            with unwrap_group():  # the failure itself, not a group around it
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(report, client)
                    async with client.subscribe(args.topic, last=args.last) as sub:
                        nursery.start_soon(announce, sub)
                        async for item in sub:
                            if isinstance(item, ResetItem):
                                error(PROG, _describe_reset(item))
                            if args.json:
                                out.write(_line(item_json(item)) + "\n")
                            elif isinstance(item, EventItem | SnapshotItem):
                                out.write(_line(item.data) + "\n")
                            elif isinstance(item, ResetItem) and item.has_snapshot:  # a state's value
                                out.write(_line(item.snapshot) + "\n")
                            out.flush()
                    closed = client.state is ClientState.CLOSED
                    nursery.cancel_scope.cancel()
    except TrioconnError as exc:
        error(PROG, describe_failure(exc))
        return EXIT_FAILED
    error(
        PROG, "the hub closed the connection: work done (1000)" if closed else f"topic {args.topic!r} ended"
    )
    return EXIT_OK
