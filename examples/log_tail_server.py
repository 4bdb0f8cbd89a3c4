"""Stream log files to WebSocket clients in real time, like ``tail -F`` over the network.

Run it::

    python examples/log_tail_server.py /var/log/app.log /var/log/worker.log --port 8765

and, in another terminal, ``python examples/log_tail_client.py app.log --port 8765``.

Each FILE is followed the way ``tail -F`` follows it: new lines as they are written, a file that
is truncated, rotated (renamed and re-created) or that does not exist yet. Every line is
published to the stream topic ``log/<basename>`` (``log/app.log`` above). The server first
publishes the last ``--history`` lines already in the file, so a client that subscribes with
``last=N`` (N up to ``--history``) starts with those lines, then gets the live ones.

What a published line looks like::

    {"text": "GET / 200", "inode": 1835023, "pos": 4096, "end": 4106}

``inode`` and the byte range ``pos``..``end`` identify the line in the file. They are what lets a
client survive a *server* restart without printing a line twice or losing one: the restarted
hub has new topic epochs and cannot resume the client where it was, but it re-reads the last
``--history`` lines from disk, and the client skips those it already printed (see
``log_tail_client.py``). Notices such as ``{"notice": "file truncated"}`` go to the same topic.

The same port serves a page for the browser, ``examples/web/log_tail.html``: open
``http://HOST:PORT/`` (``?file=app.log`` picks the file), and it follows the file as the Python
client does, across server restarts too. WebSocket requests to ``/`` go to the hub, other
requests to the page, ``/trioconn.js`` and ``/files`` (the files followed, as JSON); see
``_web.py``. Pages of other sites are refused (4403): a page the user opens elsewhere could
otherwise read these logs through the user's browser.

The first line on stdout is ``serving ws://HOST:PORT`` (with ``--port 0`` the port is chosen by
the system, so scripts read it from there), the second ``page http://HOST:PORT/``; connection
events are logged on stderr. Ctrl-C or SIGTERM stops it; connected clients get close code 1001
and reconnect when it is back.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import trio
from _cli import log_to_stderr, run_program
from _follow import Line, Notice, follow
from _web import same_origin, serve_with_page, url_host
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import trioconn
from trioconn import HandshakeRejected, HandshakeRequest

logger = logging.getLogger("log_tail_server")


def topic_for(path: str) -> str:
    """The topic a file is published on: ``log/<basename>``."""
    return "log/" + os.path.basename(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Follow log files like tail -F and publish their lines on a trioconn hub.",
        epilog="Each FILE is published on the topic log/<basename>; see the module docstring.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="a file to follow (it may not exist yet)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to listen on; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--history",
        type=int,
        default=1000,
        metavar="N",
        help="lines kept per file for new and reconnecting clients (default: %(default)s)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="how often each file is checked for changes (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    topics: dict[str, str] = {}
    for path in args.files:
        other = topics.setdefault(topic_for(path), path)
        if other != path:
            parser.error(f"{other} and {path} would share the topic {topic_for(path)}; rename one")
    if args.history < 1:
        parser.error("--history must be at least 1")
    if args.poll <= 0:
        parser.error("--poll must be positive")
    return args


def publisher(hub: trioconn.Hub, path: str) -> Callable[[Line | Notice], None]:
    """What the follower of ``path`` calls for each line and notice."""
    topic = topic_for(path)

    def emit(item: Line | Notice) -> None:
        data: dict[str, Any]
        if isinstance(item, Line):
            data = {"text": item.text, "inode": item.inode, "pos": item.pos, "end": item.end}
        else:
            logger.info("%s: %s", path, item.text)
            data = {"notice": item.text}
        hub.publish_nowait(topic, data)

    return emit


async def stop_on_sigterm(hub: trioconn.Hub, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            logger.info("SIGTERM: closing connections (1001) and stopping")
            await hub.aclose()
            scope.cancel()
            return


def check_origin(request: HandshakeRequest) -> str:
    """The ``authenticate`` hook: anyone may read, but no page of another site."""
    if not same_origin(request):
        raise HandshakeRejected(403, b"pages of other sites may not connect")
    return "reader"


async def serve(args: argparse.Namespace) -> None:
    # No client ever publishes here: without an ``authorize`` hook the hub refuses client
    # publications, and every client may subscribe. Refusals reach a page as a close code
    # (4403) instead of an HTTP status that browsers hide.
    hub = trioconn.Hub(history_size=args.history, authenticate=check_origin, refuse_with="close")
    names = [os.path.basename(path) for path in args.files]

    async def files(request: Request) -> JSONResponse:
        return JSONResponse(names)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_sigterm, hub, nursery.cancel_scope)
        # Followers first: the existing lines are in the topics before the first client comes.
        for path in args.files:
            await nursery.start(
                lambda task_status, path=path: follow(
                    path,
                    publisher(hub, path),
                    poll_interval=args.poll,
                    initial_lines=args.history,
                    task_status=task_status,
                )
            )
        port = await nursery.start(
            lambda task_status: serve_with_page(
                hub,
                "log_tail.html",
                args.host,
                args.port,
                routes=[Route("/files", files)],
                task_status=task_status,
            )
        )
        print(f"serving ws://{args.host}:{port}", flush=True)
        print(f"page http://{url_host(args.host)}:{port}/", flush=True)
        for path in args.files:
            print(f"  {topic_for(path)}  <-  {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log_to_stderr()
    # OSError: a file that exists but cannot be read, a port in use …
    return run_program(
        "log_tail_server",
        lambda: trio.run(serve, args),
        errors=(OSError,),
        interrupted="interrupted, stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
