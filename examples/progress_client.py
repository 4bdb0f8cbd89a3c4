"""Start a job on ``progress_server.py`` (or follow one) and show its progress until it is done.

Run ``progress_server.py`` first, then::

    python examples/progress_client.py --start              # start a new job and follow it
    python examples/progress_client.py --job report-42      # follow a job that already runs

On a terminal this shows a live progress bar; when stdout is not a terminal (a pipe, a CI log)
it prints plain lines instead, one per percent, like ``job-3f2a: 12/40 (30%)``. Either way the
result is printed once at the end, and the program exits 0 when the job is done (1 if it
failed). Connection changes go to stderr, one line each.

Why rich, not tqdm: the bar must share the terminal with the connection-state lines, which are
written to stderr from another task. rich's ``Progress`` redirects stdout and stderr while it is
live and prints such lines above the bar, so nothing tears it; with tqdm every other write would
have to go through ``tqdm.write``. rich is also the one extra dependency of the examples
(``pip install 'trioconn[examples]'``).

How it ends
-----------
The server *ends the job's topic* when the job is finished, after publishing the final state
with the result. The subscription's iteration then ends normally, the client leaves
``connect()``, which closes the connection with 1000, and a client closed with 1000 never
reconnects: no endless reconnect after the job is done. The server does not close the
connection itself, because one connection may follow several jobs. (If it closed with 1000
instead, iteration would end the same way; a job that never reached its final state is then
reported as unfinished, exit 1.)

If the server is restarted mid-job (see ``progress_server.py``), the client reconnects by itself;
the new server answers with a ``reset`` whose snapshot is the job's current value, so the bar
continues from there, and "done" is still shown exactly once.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import trio
from _cli import run_program
from _states import log_state_changes
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

from trioconn import Backoff, EventItem, ResetItem, SnapshotItem, TrioconnError, connect

START = "jobs/start"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Start or follow a job on progress_server.py and show its progress.",
        epilog="Exits 0 once the job is done, 1 if it failed, 130 on Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="server port (default: %(default)s)")
    parser.add_argument("--job", metavar="ID", help="the job to follow (with --start: its id)")
    parser.add_argument("--start", action="store_true", help="start a new job, then follow it")
    parser.add_argument(
        "--steps", type=int, default=40, help="with --start: how many chunks (default: %(default)s)"
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=0.1,
        metavar="S",
        help="with --start: seconds per chunk (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.start and not args.job:
        parser.error("give --start to start a job, or --job ID to follow one")
    if args.start and not args.job:
        args.job = "job-" + secrets.token_hex(3)
    return args


class PlainDisplay:
    """One line per percent, for logs and pipes."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.shown: int | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def update(self, done: int, total: int) -> None:
        percent = done * 100 // total if total else 0
        if percent != self.shown:
            self.shown = percent
            print(f"{self.job}: {done}/{total} ({percent}%)", flush=True)

    def finish(self, text: str) -> None:
        print(f"{self.job}: {text}", flush=True)


class BarDisplay:
    """A live rich progress bar on the terminal."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn()
        )
        self.task = self.progress.add_task(job, total=None)

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def update(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def finish(self, text: str) -> None:
        self.progress.stop()
        print(f"{self.job}: {text}", flush=True)


async def follow(args: argparse.Namespace, display: PlainDisplay | BarDisplay) -> int:
    """Follow ``job/<id>`` until its topic ends; return the exit status."""
    url = f"ws://{args.host}:{args.port}/"
    final: dict[str, Any] | None = None
    async with (
        connect(url, backoff=Backoff(base=0.25, cap=5.0)) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(log_state_changes, client, url, "progress")
        # Subscribe before starting, so no step can happen unseen (the snapshot would cover it
        # anyway: a state topic always delivers its current value first).
        async with client.subscribe(f"job/{args.job}") as sub:
            if args.start:
                # A request: the server's handler answers once the job runs (or refuses it).
                await client.request(
                    START, {"job": args.job, "steps": args.steps, "step_seconds": args.step_seconds}
                )
            async for item in sub:
                if isinstance(item, SnapshotItem | EventItem):
                    state = item.data  # a state topic's value, whichever item carried it
                elif isinstance(item, ResetItem) and item.has_snapshot:
                    state = item.snapshot  # a restarted server: continue from its current value
                else:
                    continue
                display.update(state["done"], state["total"])
                if state["status"] != "running" and final is None:
                    final = state
                    display.finish(f"{state['status']}: {state['result']}")
        # Close with 1000 (never reconnect); the state logger prints "closed" and returns.
        await client.aclose()
    if final is None:
        print(f"progress: {args.job}: the server stopped the job before it finished", file=sys.stderr)
        return 1
    return 0 if final["status"] == "done" else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    display = BarDisplay(args.job) if sys.stdout.isatty() else PlainDisplay(args.job)

    def run() -> int:
        with display:
            return trio.run(follow, args, display)

    # TrioconnError: refused by the server, or it spoke another protocol
    return run_program(
        "progress",
        run,
        errors=(TrioconnError,),
        interrupted=f"interrupted; the job goes on. Follow it again with: --job {args.job}",
    )


if __name__ == "__main__":
    sys.exit(main())
