"""A protocol-v1 server written with the ``websockets`` package, for testing the client.

It shares no code with trioconn: frames are plain ``json.dumps`` of dicts, and the server runs
on asyncio in a thread of its own (its own event loop), on 127.0.0.1, port 0. Each connection is
handled by the next coroutine in ``server.script`` (default: ``well_behaved``), so a test can
script what the server does attempt by attempt: close with a code at a chosen moment, reject or
reset the opening handshake, stop answering as a stopped process would.

Use it from a trio test as a context manager: ``with IndependentServer() as server:``; the
thread is stopped and joined when the block ends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Handler = Callable[["Conn"], Awaitable[None]]


def frame(frame_type: str, /, **fields: Any) -> str:
    return json.dumps({"type": frame_type, **fields})


def welcome(interval: float = 5.0, timeout: float = 15.0, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "version": 1,
        "session": "independent",
        "heartbeat": {"interval": interval, "timeout": timeout},
        "max_frame_size": 1 << 20,
    }
    fields.update(overrides)
    return frame("welcome", **fields)


class Conn:
    """One connection as a handler sees it."""

    def __init__(self, server: IndependentServer, ws: ServerConnection, index: int) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.path = ws.request.path if ws.request is not None else ""
        self.received: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def recv(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(await self.ws.recv())
        self.received.append(obj)
        return obj

    async def recv_type(self, kind: str) -> dict[str, Any]:
        while True:
            obj = await self.recv()
            if obj.get("type") == kind:
                return obj

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)

    async def serve_requests(self) -> None:
        """Answer subscribe/publish like a hub with empty topics, until the client leaves.

        A ``request`` to topic ``echo`` is answered with its data; to ``refuse`` with the error
        code given in its data; to any other topic with ``no-handler``.
        """
        offsets: dict[str, int] = {}
        try:
            while True:
                obj = await self.recv()
                kind, topic, ref = obj.get("type"), obj.get("topic"), obj.get("ref")
                if kind == "subscribe":
                    answer = {"topic": topic, "epoch": "e1", "offset": offsets.get(topic, 0), "kind": None}
                    await self.send(frame("subscribed", ref=ref, replayed=0, ended=False, **answer))
                elif kind == "publish":
                    offsets[topic] = offsets.get(topic, 0) + 1
                    await self.send(frame("published", topic=topic, offset=offsets[topic], ref=ref))
                elif kind == "request" and topic == "echo":
                    await self.send(frame("reply", ref=ref, data=obj.get("data")))
                elif kind == "request":
                    code = obj.get("data") if topic == "refuse" else "no-handler"
                    await self.send(frame("error", code=code, message="refused", ref=ref, topic=topic))
        except ConnectionClosed:
            return


async def well_behaved(conn: Conn) -> None:
    await conn.send(welcome())
    await conn.serve_requests()


class IndependentServer:
    """The websockets server in its own thread; see the module docstring."""

    def __init__(self) -> None:
        self.script: list[Handler] = []
        #: handlers for the opening handshake, popped per connection (None: accept)
        self.handshake_script: list[Callable[[ServerConnection, Request], Response | None]] = []
        self.connections = 0
        self.connect_times: list[float] = []
        self.port = 0
        self.errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="independent-ws-server", daemon=True)
        self._frozen = threading.Event()
        self._thaw = threading.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/live"

    def __enter__(self) -> IndependentServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the independent server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thaw.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the independent server thread did not stop"
        if self.errors:
            raise AssertionError(f"the independent server failed: {self.errors!r}")

    # -- what a stopped process looks like

    def freeze(self) -> None:
        """Block the server's event loop (as SIGSTOP would): sockets stay open, nothing answers."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._block)
        if not self._frozen.wait(10):
            raise RuntimeError("the independent server did not freeze")

    def _block(self) -> None:
        self._frozen.set()
        self._thaw.wait(30)

    # -- internals

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # pragma: no cover - reported by __exit__
            self.errors.append(exc)
            self._ready.set()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.connect_times.append(time.monotonic())
        if self.handshake_script:
            return self.handshake_script.pop(0)(connection, request)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        handler = self.script.pop(0) if self.script else well_behaved
        try:
            await handler(Conn(self, ws, self.connections - 1))
        except ConnectionClosed:
            pass
        except Exception as exc:  # pragma: no cover - reported by __exit__
            self.errors.append(exc)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,
            close_timeout=1,
            max_size=None,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            server.close(close_connections=False)
            for connection in list(server.connections):
                connection.transport.abort()


# -- handshake behaviours


def reset_handshake(connection: ServerConnection, request: Request) -> Response | None:
    """Reset the TCP connection after reading the client's request (RST, no answer)."""
    sock = connection.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.transport.abort()
    return None


def close_handshake(connection: ServerConnection, request: Request) -> Response | None:
    """Close the TCP connection after reading the client's request (FIN, no answer)."""
    connection.transport.close()
    return None


def reject_handshake(status: int, body: bytes = b"no") -> Callable[[ServerConnection, Request], Response]:
    def handler(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(status, body.decode())

    return handler
