"""Hubs for the browser tests, on the same origin as a test page and ``trioconn.js``.

Run as a subprocess (``python -m tests.browser.hub_server --port 0``) by ``_procs.py``; it is a
Starlette app under hypercorn's trio worker, as the example servers are. The first line on
stdout is ``serving http://127.0.0.1:PORT`` (``https`` with ``--certfile``/``--keyfile``).

- ``GET /``: ``harness.html``, a blank page that loads ``trioconn.js`` as ``window.trioconn``.
- ``GET /trioconn.js``: the browser client (``trioconn.browser.SCRIPT_PATH``).
- WebSocket ``/ws/plain``: a hub with the ``--heartbeat`` given, no authentication.
- WebSocket ``/ws/auth``: ``refuse_with="close"``; the token ``good`` is let in, ``forbidden``
  refused with 403 (4403), any other token with 401 (4401).
- WebSocket ``/ws/origin``: ``refuse_with="close"`` and an ``allowed_origins`` that no test
  page has (4403).
- ``GET /control/<hub>/stats``: ``{connections, accepted, refused, disconnects}``: ``accepted +
  refused`` is every handshake the hub has seen.
- ``POST /control/<hub>/close?code=C&reason=R``: close every connection of that hub.
- ``POST /control/<hub>/publish?topic=T&count=N``: publish the numbers 1..N on a stream topic.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

import trioconn
import trioconn.asgi
from trioconn import HandshakeRejected, HandshakeRequest
from trioconn.browser import SCRIPT_PATH

HERE = Path(__file__).resolve().parent


def token_check(request: HandshakeRequest) -> str | None:
    if request.token == "forbidden":
        raise HandshakeRejected(403, b"this identity may not connect")
    return "user" if request.token == "good" else None


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


def make_hubs(interval: float, timeout: float) -> dict[str, trioconn.Hub]:
    heartbeat = {"heartbeat_interval": interval, "heartbeat_timeout": timeout}
    return {
        "plain": trioconn.Hub(authorize=allow_all, **heartbeat),
        "auth": trioconn.Hub(authenticate=token_check, refuse_with="close", **heartbeat),
        "origin": trioconn.Hub(
            allowed_origins={"https://elsewhere.example"}, refuse_with="close", **heartbeat
        ),
    }


def make_app(hubs: dict[str, trioconn.Hub]) -> Starlette:
    def hub_for(request: Request) -> trioconn.Hub:
        return hubs[request.path_params["hub"]]

    async def harness(request: Request) -> Response:
        return FileResponse(HERE / "harness.html", media_type="text/html")

    async def script(request: Request) -> Response:
        return FileResponse(SCRIPT_PATH, media_type="text/javascript")

    async def stats(request: Request) -> Response:
        statistics = hub_for(request).statistics()
        refused = sum(n for cause, n in statistics.disconnects.items() if cause.startswith("refused-"))
        return JSONResponse(
            {
                "connections": statistics.connections,
                "accepted": statistics.accepted,
                "refused": refused,
                "disconnects": statistics.disconnects,
            }
        )

    async def close(request: Request) -> Response:
        hub = hub_for(request)
        code, reason = int(request.query_params["code"]), request.query_params.get("reason", "")
        return JSONResponse({"closed": sum(hub.close(session, code, reason) for session in hub.sessions())})

    async def publish(request: Request) -> Response:
        hub = hub_for(request)
        topic, count = request.query_params["topic"], int(request.query_params["count"])
        return JSONResponse({"offsets": [hub.publish_nowait(topic, n) for n in range(1, count + 1)]})

    return Starlette(
        routes=[
            Route("/", harness),
            Route("/trioconn.js", script),
            Route("/control/{hub}/stats", stats),
            Route("/control/{hub}/close", close, methods=["POST"]),
            Route("/control/{hub}/publish", publish, methods=["POST"]),
            *(WebSocketRoute(f"/ws/{name}", trioconn.asgi.HubApp(hub)) for name, hub in hubs.items()),
        ]
    )


async def main(args: argparse.Namespace) -> None:
    hubs = make_hubs(*args.heartbeat)
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn")
    config.certfile, config.keyfile = args.certfile, args.keyfile
    async with trio.open_nursery() as nursery:
        for hub in hubs.values():
            await nursery.start(run_hub, hub)
        binds = await nursery.start(serve, make_app(hubs), config)
        print(f"serving {binds[0]}", flush=True)


async def run_hub(hub: trioconn.Hub, *, task_status: trio.TaskStatus[None]) -> None:
    async with hub.running():
        task_status.started()
        await trio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--heartbeat", type=float, nargs=2, default=(0.3, 0.9), metavar=("INTERVAL", "TIMEOUT")
    )
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, parser.parse_args())
