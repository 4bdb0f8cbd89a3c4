"""Serve a hub and its web page on one port: a Starlette app under hypercorn's trio worker.

The example servers call ``serve_with_page`` instead of ``hub.serve``. One port then answers

- ``GET /``: the example's page (``examples/web/*.html``);
- ``GET /trioconn.js``: the browser client, the file the Python package ships
  (``trioconn.browser.SCRIPT_PATH``);
- WebSocket requests to ``/``: the hub (``trioconn.asgi.HubApp``), so ``ws://HOST:PORT/`` works
  for the Python clients exactly as it did with ``hub.serve``. Starlette matches routes by the
  request's type as well as its path, so ``/`` serves both the page and the hub.

The hub runs (``hub.running()``) around the server; ``hub.aclose()`` closes every connection
with 1001 as it does for ``hub.serve``.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

import trioconn
import trioconn.asgi
from trioconn import HandshakeRequest
from trioconn.browser import SCRIPT_PATH

PAGES = Path(__file__).resolve().parent / "web"


def url_host(host: str) -> str:
    """``host`` as it goes into a URL a browser on this machine can open."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def same_origin(request: HandshakeRequest) -> bool:
    """Whether a handshake comes from a page this server served (or from no page at all).

    A browser sends the page's origin with every WebSocket request, and any web site the user
    visits may open one to 127.0.0.1. Programs (the Python clients) send no ``Origin``.
    """
    if not request.origins:
        return True
    return request.origins == (f"http://{request.headers.get('host', '')}",)


async def serve_with_page(
    hub: trioconn.Hub,
    page: str,
    host: str,
    port: int,
    *,
    routes: Sequence[BaseRoute] = (),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` and ``examples/web/<page>`` on ``host:port`` until cancelled.

    Args:
        hub: the hub; it runs for as long as this call.
        page: the file in ``examples/web`` answered at ``/``.
        host, port: where to listen; port 0 picks a free one.
        routes: more routes for the app (before the hub's).
        task_status: reports the port listened on (``await nursery.start(...)``).
    """

    async def index(request: Request) -> Response:
        return FileResponse(PAGES / page, media_type="text/html")

    async def script(request: Request) -> Response:
        return FileResponse(SCRIPT_PATH, media_type="text/javascript")

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/trioconn.js", script),
            *routes,
            WebSocketRoute("/", trioconn.asgi.HubApp(hub)),
        ]
    )
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # it would print the pages' ?token= with every request
    config.errorlog = logging.getLogger("hypercorn")
    # Ctrl-C is taken as a signal here and raised from this task. Left to trio, its
    # KeyboardInterrupt lands in whichever task runs at that moment, and hypercorn swallows one
    # that lands in its own tasks (it logs "Error in ASGI Framework", or shuts down quietly):
    # the program would go on running without serving.
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with hub.running(), trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(serve, app, config)
            task_status.started(int(binds[0].rsplit(":", 1)[1]))
            async for _ in interrupts:
                nursery.cancel_scope.cancel()
                break
    raise KeyboardInterrupt
