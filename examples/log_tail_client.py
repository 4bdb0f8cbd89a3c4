"""Print a remote log file's lines as ``tail -f`` would, and keep going across server restarts.

Run ``log_tail_server.py`` first, then::

    python examples/log_tail_client.py app.log --port 8765 -n 20

prints the last 20 lines of the server's ``app.log`` (topic ``log/app.log``) and then every new
line, until Ctrl-C. Lines go to stdout, nothing else does: pipe it into ``grep`` as you would
``tail -f``. Connection changes and file notices (truncated, rotated) go to stderr, one line each.

No missing and no duplicated line across a server restart
---------------------------------------------------------
While the server stays up, the client library resumes the subscription after a dropped
connection from the last offset it delivered, so nothing is lost or repeated. A *restarted*
server has a new hub with new epochs: the old offsets mean nothing there, and the subscription
yields a ``ResetItem``. The server cannot remember what it sent before, but the file can:
every line carries ``inode``, ``pos`` and ``end`` (its byte range in the file), and the restarted
server has re-read the file's last lines from disk. So on a reset this client subscribes again,
asking for all the lines the server kept (not just ``-n``), and, while catching up, skips every
line of the same inode that starts before the end of the last line it printed. The first line
it does not skip ends the catch-up; from
there on it prints everything, as before.

Limits, stated plainly: if more than the server's ``--history`` lines were written while it was
down, the oldest of them are gone and the client says how many bytes it missed (on stderr).
If the file was rotated while the server was down, lines written to the old file after the
last one printed are not seen (``tail -F`` cannot see them either); the new file is printed from
its start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import trio
from _cli import run_program
from _states import log_state_changes

from trioconn import Backoff, ClientState, EventItem, ResetItem, TrioconnError, connect

#: ``last=`` after a reset: everything the server still has (it sends at most its history).
CATCH_UP = 1_000_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Print a log file served by log_tail_server.py, like tail -f.",
        epilog="Lines go to stdout; connection changes and notices to stderr.",
    )
    parser.add_argument("file", help="the file's name on the server (app.log) or its topic (log/app.log)")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="server port (default: %(default)s)")
    parser.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="start with the last N lines, at most the server's --history (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.lines < 0:
        parser.error("--lines must not be negative")
    return args


class Printer:
    """Prints lines once each, recognising lines already printed after a server restart."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: (inode, end) of the last line printed: where in which file we are.
        self.position: tuple[int, int] | None = None
        self.catching_up = False

    def reset(self) -> None:
        """The server restarted: the lines that follow may include some already printed."""
        self.catching_up = self.position is not None

    def handle(self, data: dict[str, Any]) -> None:
        if "notice" in data:
            if not self.catching_up:
                print(f"tail: {self.name}: {data['notice']}", file=sys.stderr, flush=True)
            return
        inode, pos, end = data["inode"], data["pos"], data["end"]
        if self.catching_up:
            assert self.position is not None
            last_inode, last_end = self.position
            if inode == last_inode and pos < last_end:
                return  # printed before the restart
            self.catching_up = False
            if inode == last_inode and pos > last_end:
                print(
                    f"tail: {self.name}: {pos - last_end} bytes were written while the server was "
                    "away and are no longer in its history",
                    file=sys.stderr,
                    flush=True,
                )
        print(data["text"], flush=True)
        self.position = (inode, end)


async def tail(args: argparse.Namespace) -> None:
    topic = args.file if args.file.startswith("log/") else f"log/{args.file}"
    url = f"ws://{args.host}:{args.port}/"
    printer = Printer(topic.removeprefix("log/"))
    # A person is waiting at the terminal: retry soon, and never wait more than 5 s.
    async with (
        connect(url, backoff=Backoff(base=0.25, cap=5.0)) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(log_state_changes, client, url, "tail")
        last = args.lines
        while client.state is not ClientState.CLOSED:
            async with client.subscribe(topic, last=last) as sub:
                async for item in sub:
                    if isinstance(item, ResetItem):
                        printer.reset()
                        last = CATCH_UP
                        break  # subscribe again, asking for every line the server kept
                    if isinstance(item, EventItem):
                        printer.handle(item.data)
                else:
                    # The topic ended or the server closed with 1000: nothing more will come.
                    break
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # TrioconnError: refused by the server, or it spoke another protocol
    return run_program("tail", lambda: trio.run(tail, args), errors=(TrioconnError,))


if __name__ == "__main__":
    sys.exit(main())
