"""The ASGI front end: a hub served by an ASGI server (uvicorn, hypercorn) inside a web app.

Theory of operation
-------------------
``HubApp`` is a plain ASGI application, so it mounts in Starlette or FastAPI
(``app.mount("/ws", HubApp(hub))``) or runs on its own. It speaks only the ASGI WebSocket
messages; the server does the HTTP and WebSocket protocols, and the hub core does the rest on
anyio, so it runs under asyncio (uvicorn, hypercorn) and trio (``hypercorn --worker-class trio``):

- ``websocket.connect`` → ``HandshakeRequest`` → ``Hub.admit``. A refusal is sent as an HTTP
  response with its status when the server offers the ``websocket.http.response`` extension
  (uvicorn, hypercorn do), else as a close before accepting (the server answers 403). With
  ``refuse_with="close"`` it is ``websocket.accept`` followed at once by ``websocket.close``
  with the refusal's close code and reason, which a browser can see.
- ``websocket.accept``, then ``Hub.serve_socket`` over an ``AsgiSocket``: the connection's tasks
  run in a task group inside the server's task for this connection and end with it.
- The hub must be *running* — inside ``async with hub.running()``, which the app's lifespan opens
  when ``HubApp`` is the top-level app, or which the user's own lifespan opens
  (``trioconn.asgi.lifespan(hub)``) when it is mounted. Connections belong to that block: when
  it ends (the server shuts down) they are closed with 1001 after their queued frames. A
  WebSocket request while no block is open is refused with 503 and an error in the log that says
  what is missing.

The ASGI path has no direct write path (every message goes through the server's ``send``), so it
costs more CPU per delivered event than ``Hub.serve``; ``docs/asgi.md`` has the numbers.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from .._server.config import HandshakeRequest, RefuseWith
from .._server.hub import BaseHub
from .._server.socket import Closed, Refused, ServerSocket, SocketClosed, encoded_size

__all__ = ["AsgiSocket", "HubApp", "handshake_request", "lifespan"]

logger = logging.getLogger("trioconn")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiSocket(ServerSocket):
    """``ServerSocket`` over an accepted ASGI WebSocket connection."""

    __slots__ = ("_closed", "_max_size", "_receive", "_send", "_sent_close", "remote")

    def __init__(self, receive: Receive, send: Send, *, max_size: int, remote: str) -> None:
        self._receive = receive
        self._send = send
        self._max_size = max_size
        self._closed: Closed | None = None
        self._sent_close = False
        self.remote = remote

    @property
    def closed(self) -> Closed | None:
        return self._closed

    async def receive(self) -> str | bytes:
        if self._closed is not None:
            raise SocketClosed
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            payload: str | bytes = text if text is not None else bytes(message.get("bytes") or b"")
            if _too_big(payload, self._max_size):
                # The server's own limit is usually far larger (uvicorn, hypercorn: 16 MiB).
                self._closed = Closed(1009, "message too big")
                raise SocketClosed
            return payload
        if kind == "websocket.disconnect":
            self._closed = Closed(int(message.get("code", 1005)), str(message.get("reason") or ""))
        else:
            logger.error("unexpected ASGI message %r on a WebSocket connection", kind)
            self._closed = Closed(1011, "unexpected ASGI message")
        raise SocketClosed

    async def send(self, message: str) -> None:
        if self._closed is not None:
            raise SocketClosed
        try:
            await self._send({"type": "websocket.send", "text": message})
        except OSError:  # uvicorn's ClientDisconnected; hypercorn drops sends after a close
            self._closed = Closed(1006)
            raise SocketClosed from None

    async def close(self, code: int, reason: str, *, abort: bool = False) -> None:
        # ``abort`` needs nothing special: the server frames every message whole.
        if self._sent_close or (self._closed is not None and self._closed.code != 1009):
            return
        self._sent_close = True
        with contextlib.suppress(OSError):  # already gone
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _too_big(payload: str | bytes, limit: int) -> bool:
    return encoded_size(payload) > limit


def handshake_request(scope: Scope) -> HandshakeRequest:
    """The hub's view of an ASGI ``websocket`` scope."""
    raw: list[tuple[bytes, bytes]] = [(bytes(name), bytes(value)) for name, value in scope.get("headers", ())]
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
    query = dict(urllib.parse.parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")))
    token = query.get("token")
    auth = headers.get("authorization", "")
    if token is None and auth[:7].lower() == "bearer ":
        token = auth[7:].strip() or None
    origins = tuple(value.decode("latin-1") for name, value in raw if name.lower() == b"origin")
    client = scope.get("client")
    remote = f"{client[0]}:{client[1]}" if client else "unknown"
    return HandshakeRequest(str(scope.get("path") or "/"), query, headers, token, remote, origins)


class HubApp:
    """An ASGI application that serves ``hub`` to WebSocket clients.

    Route to it (``WebSocketRoute("/ws", HubApp(hub))`` in a Starlette/FastAPI app's routes, or
    ``app.mount("/ws", HubApp(hub))`` for ``/ws/`` and below) and open
    ``trioconn.asgi.lifespan(hub)`` in the app's lifespan; or serve it as the whole app, and it
    runs its own lifespan. Plain HTTP requests get 426 Upgrade Required.

    Args:
        hub: the hub to serve; the same handshake policy (``allowed_origins``,
            ``authenticate``, ``max_connections``) applies as for ``Hub.serve``.
    """

    def __init__(self, hub: BaseHub) -> None:
        if not isinstance(hub, BaseHub):
            raise TypeError(f"hub must be a trioconn Hub, not {type(hub).__name__}")
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await _plain_response(send, 426, "this is a WebSocket endpoint", upgrade=True)
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake was passed to us
        hub = self.hub
        request = handshake_request(scope)
        group = hub._running_group()
        if group is None:
            logger.error(
                "WebSocket request from %s refused with 503: the hub is not running; open "
                "`trioconn.asgi.lifespan(hub)` (or `async with hub.running()`) in the app's lifespan",
                request.remote,
            )
            hub._count("refused-503")
            await _reject(scope, send, Refused(503, "the hub is not running"), hub.config.refuse_with)
            return
        admission = await hub.admit(request, closing=group.closing)
        if isinstance(admission, Refused):
            await _reject(scope, send, admission, hub.config.refuse_with)
            return
        try:
            await send({"type": "websocket.accept"})
        except OSError:  # uvicorn's ClientDisconnected: gone during the handshake
            logger.debug("client %s went away during the handshake", request.remote)
            return
        socket = AsgiSocket(receive, send, max_size=hub.config.max_frame_size, remote=request.remote)
        await hub.serve_socket(socket, admission.identity, groups=(group,))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        started = False
        try:
            async with lifespan(self.hub):
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except Exception as exc:
            # Startup failing must say so: a server told "shutdown failed" instead would serve
            # on (uvicorn's default) with a hub that refuses every connection.
            logger.exception("the hub failed to %s", "stop" if started else "start")
            phase = "shutdown" if started else "startup"
            await send({"type": f"lifespan.{phase}.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


@asynccontextmanager
async def lifespan(hub: BaseHub) -> AsyncIterator[BaseHub]:
    """Run ``hub`` for an ASGI app's lifetime: use it in the app's lifespan.

    Starts the broker's task and admits WebSocket connections for the duration of the block;
    on the way out, closes them with 1001 after their queued frames (bounded by
    ``drain_timeout``), so clients reconnect to the next instance::

        @contextlib.asynccontextmanager
        async def app_lifespan(app):
            async with trioconn.asgi.lifespan(hub):
                yield

        app = FastAPI(lifespan=app_lifespan)
        app.mount("/ws", trioconn.asgi.HubApp(hub))
    """
    async with hub.running():
        yield hub


async def _reject(scope: Scope, send: Send, refusal: Refused, refuse_with: RefuseWith) -> None:
    extensions = scope.get("extensions") or {}
    if refuse_with == "close":
        # A browser sees a close code, never the status of a refused upgrade.
        try:
            await send({"type": "websocket.accept"})
            close = {"type": "websocket.close", "code": refusal.close_code, "reason": refusal.close_reason}
            await send(close)
        except OSError:  # uvicorn's ClientDisconnected: gone during the handshake
            logger.debug("client went away before its refusal was sent")
    elif "websocket.http.response" in extensions:
        body = refusal.reason.encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.close_reason})


async def _plain_response(
    send: Send, status: int, text: str, *, upgrade: bool = False, prefix: str = ""
) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    if upgrade:
        headers.append((b"upgrade", b"websocket"))
    await send({"type": f"{prefix}http.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}http.response.body", "body": body})
