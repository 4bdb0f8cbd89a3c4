"""The trio front end: ``Hub``, which serves a port (or a stream) of its own.

Theory of operation
-------------------
``Hub.serve`` accepts sockets itself (``listener.py``: counted from accept, limited before the
handshake, bad requests answered there) and hands each valid upgrade request to
``_handle_request``: the hub core decides on it (``admit``; a refusal is answered with its HTTP
status, or with ``refuse_with="close"`` accepted and closed at once), and an accepted connection
runs as ``serve_socket`` over a ``WsprotoSocket`` (``socket.py``: wsproto on the trio stream,
with a direct write path), inside the task that accepted the socket, under the serving call, so
cancelling ``serve`` ends every connection (each sends 1001 on its way out). A ``serve`` call
that is shutting down refuses the handshakes that complete meanwhile (503), so its shutdown
waits only for the connections it had.

This front end runs under trio only. It speaks WebSocket through wsproto directly rather than
through trio-websocket's connection object, which would add a reader task, a memory channel and
the handshake's HTTP state to every open connection (``docs/performance.md``).
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

import anyio
import sniffio
import trio
from typing_extensions import Unpack

from ..._server.broker import Broker
from ..._server.config import HandshakeRequest, HubConfig, HubSettings
from ..._server.groups import unwrap_group
from ..._server.hub import BaseHub, _Group
from ..._server.socket import Refused
from .handshake import UpgradeRequest
from .listener import CLOSE_TIMEOUT, SocketGate, open_listeners, serve_listeners
from .listener import serve_stream as serve_one_stream
from .socket import WsprotoSocket

__all__ = ["Hub"]

logger = logging.getLogger("trioconn")


def _open_task_group() -> AbstractAsyncContextManager[Any]:
    """A connection's task group: trio's own nursery under trio, anyio's under asyncio.

    anyio's task group gives every task it starts a handle with a cancel scope and an event of its
    own (anyio 4.16: about 1 KiB per task), and a connection keeps two such tasks for as long as
    it is open. A ``Hub`` served from an ASGI app on asyncio takes this path too, so it decides
    per call.
    """
    if sniffio.current_async_library() == "trio":
        return trio.open_nursery()
    return anyio.create_task_group()


class Hub(BaseHub):
    __doc__ = BaseHub.__doc__

    _open_task_group = staticmethod(_open_task_group)

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        broker: Broker | None = None,
        **settings: Unpack[HubSettings],
    ) -> None:
        super().__init__(config, broker=broker, **settings)
        self._gate = SocketGate(self.config.max_handshakes, self.config.max_sockets)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept WebSocket clients on ``host:port`` until cancelled or ``aclose()``.

        Use ``port = await nursery.start(hub.serve, host, 0)``: the bound port comes back through
        ``task_status``. Cancelling this task closes every connection with 1001. A hub can be
        served again after ``serve`` returns (its topics stay), and served on several ports at
        once; not after ``aclose()``.

        Raises:
            OSError: the address cannot be bound (e.g. the port is in use), or accepting failed
                for a reason other than running out of descriptors or memory.
        """
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
        self._check_running()
        config = self.config
        listeners = await open_listeners(host, port)
        try:
            ports = {listener.socket.getsockname()[1] for listener in listeners}
            if len(ports) != 1:
                raise RuntimeError(
                    f"{host!r} resolved to several addresses that got different ports {sorted(ports)}: "
                    "give a numeric address, or a port other than 0"
                )
            (bound,) = ports

            async def listen(outer: trio.Nursery, handlers: trio.Nursery, group: _Group) -> None:
                outer.start_soon(
                    partial(
                        serve_listeners,
                        listeners,
                        self._gate,
                        handlers,
                        partial(self._handle_request, group=group),
                        self._count,
                        ssl_context=ssl_context,
                        handshake_timeout=config.handshake_timeout,
                    )
                )
                logger.info("serving on %s:%d", host, bound)
                task_status.started(bound)
                try:
                    await trio.sleep_forever()
                finally:
                    # Let go of the port at once (it can be served again while we shut down);
                    # the accept loops end.
                    for listener in listeners:
                        await trio.aclose_forcefully(listener)

            with anyio.CancelScope() as scope:
                self._serve_scopes.add(scope)
                try:
                    async with self.running():
                        await self._run_guarded(listen)
                finally:
                    self._serve_scopes.discard(scope)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one already-connected stream (e.g. one end of ``trio.testing.memory_stream_pair``).

        Returns when that connection has ended. This is what in-memory tests use: no sockets,
        and it runs under ``trio.testing.MockClock``. The handshake is checked as ``serve``
        checks it. Cancelling it closes with 1001.
        """
        self._check_running()

        async def one(outer: trio.Nursery, handlers: trio.Nursery, group: _Group) -> None:
            done = trio.Event()

            async def handle() -> None:
                try:
                    await serve_one_stream(
                        stream,
                        partial(self._handle_request, group=group),
                        self._count,
                        handshake_timeout=self.config.handshake_timeout,
                    )
                finally:
                    done.set()

            handlers.start_soon(handle)
            await done.wait()

        try:
            await self._run_guarded(one)
        finally:
            await trio.aclose_forcefully(stream)

    async def _run_guarded(
        self, body: Callable[[trio.Nursery, trio.Nursery, _Group], Awaitable[None]]
    ) -> None:
        """Run ``body`` with a handler nursery that outside cancellation does not reach directly.

        Every connection lives in the handler nursery; if a cancellation reached it directly,
        no connection could send its queued frames and a close frame first. Instead, when
        ``body`` ends for any reason (cancellation included), accepting
        stops, the connections it started are closed gracefully with 1001 — queued frames first,
        each bounded by ``drain_timeout`` and the close timeout — while handshakes that complete
        meanwhile are refused with 503, and only then is the handler nursery cancelled (which
        also ends handshakes still in progress). Every step is bounded.
        """
        group = _Group()
        with unwrap_group():
            async with trio.open_nursery() as outer:
                handlers, handlers_scope = await outer.start(_shielded_nursery)
                try:
                    await body(outer, handlers, group)
                finally:
                    outer.cancel_scope.cancel()  # stop accepting; the handler nursery is shielded
                    with trio.CancelScope(shield=True):
                        await group.close_all()
                    handlers_scope.cancel()

    async def _handle_request(self, request: UpgradeRequest, *, group: _Group) -> None:
        # Runs once per valid upgrade request: an exception here would end only this client, but
        # it would be a bug, so everything but cancellation ends here, logged.
        try:
            admission = await self.admit(handshake_request(request), closing=group.closing)
            if isinstance(admission, Refused):
                with trio.move_on_after(CLOSE_TIMEOUT):
                    if self.config.refuse_with == "close":
                        # A browser sees a close code, never the status of a refused upgrade.
                        socket = await self._accept(request)
                        await socket.close(admission.close_code, admission.close_reason)
                    else:
                        await request.reject(admission.status, admission.reason)
                return
            socket = await self._accept(request)
            await self.serve_socket(socket, admission.identity, groups=(group,))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.debug("client went away during the handshake")
        except Exception:
            logger.exception("handshake failed")

    async def _accept(self, request: UpgradeRequest) -> WsprotoSocket:
        connection = await request.accept()
        return WsprotoSocket(
            request.stream, connection, request.remote, max_message_size=self.config.max_frame_size
        )

    def _socket_counts(self) -> tuple[int, int]:
        return self._gate.sockets, self._gate.handshaking


async def _shielded_nursery(
    *, task_status: trio.TaskStatus[tuple[trio.Nursery, trio.CancelScope]] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as nursery:
            task_status.started((nursery, scope))
            await trio.sleep_forever()


def handshake_request(request: UpgradeRequest) -> HandshakeRequest:
    """The hub's view of an upgrade request."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
    target = urllib.parse.urlsplit(request.path)
    query = dict(urllib.parse.parse_qsl(target.query))
    token = query.get("token")
    auth = headers.get("authorization", "")
    if token is None and auth[:7].lower() == "bearer ":
        token = auth[7:].strip() or None
    origins = tuple(value.decode("latin-1") for name, value in request.headers if name.lower() == b"origin")
    return HandshakeRequest(target.path or "/", query, headers, token, request.remote, origins)
