"""Fault injection: a link whose connections a test can stall, cut, delay, throttle or drop.

Theory of operation
-------------------
Every connection through a link is a ``_Pipe``: two streams (the client's side and the server's)
and, per direction, a reader task that pulls chunks into a small channel and a writer task that
forwards them. The writer consults the link before every chunk: it waits while the link is
stalled (both sockets stay open — the half-dead link heartbeats exist for), holds each chunk
until its delivery time when a delay is set, and paces itself when a bandwidth limit is set.
``cut`` closes both streams of every pipe; ``drop_for`` also refuses new connections for a
while. The same pipes serve a TCP proxy on loopback (``open_fault_proxy``) and an in-memory link
(``open_memory_link``), so a test can use real sockets or ``MockClock`` with the same controls.
"""

from __future__ import annotations

import math
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import trio
import trio.testing
import trio_websocket

from .._client.transport import wrap_client_stream
from .._server.groups import unwrap_group

__all__ = ["FaultProxy", "FaultyLink", "MemoryLink", "open_fault_proxy", "open_memory_link"]

_CHUNK = 65536


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class FaultyLink:
    """The controls shared by every connection through one proxy or in-memory link.

    All methods are synchronous and take effect at once, for current and new connections.
    """

    def __init__(self) -> None:
        self._pipes: set[_Pipe] = set()
        self._flowing = trio.Event()
        self._flowing.set()
        self._changed = trio.Event()
        self._latency = 0.0
        self._rate: float | None = None
        self._down_until = -math.inf
        #: connections accepted since the link was made
        self.accepted = 0
        #: connections refused while the link was down
        self.refused = 0

    # -- controls ----------------------------------------------------------------------------

    def pass_through(self) -> None:
        """Forward everything again: no stall, no delay, no bandwidth limit, not down."""
        self._latency, self._rate, self._down_until = 0.0, None, -math.inf
        self._flowing.set()

    def stall(self) -> None:
        """Stop forwarding in both directions but keep every socket open; undo with ``pass_through``."""
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def cut(self, *, reset: bool = False) -> None:
        """Close both sides of every current connection (with a TCP reset if ``reset``)."""
        for pipe in list(self._pipes):
            pipe.cut(reset=reset)

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` after it was read (order is kept)."""
        self._latency = _non_negative("delay", seconds)

    def throttle(self, bytes_per_second: float | None) -> None:
        """Limit each direction of each connection to ``bytes_per_second`` (None: no limit)."""
        if bytes_per_second is not None and _non_negative("bytes_per_second", bytes_per_second) == 0:
            raise ValueError("bytes_per_second must be positive; use stall() to stop the flow")
        self._rate = None if bytes_per_second is None else float(bytes_per_second)

    def drop_for(self, seconds: float, *, reset: bool = False) -> None:
        """Cut every connection now and refuse new ones for ``seconds``, then accept again."""
        self._down_until = trio.current_time() + _non_negative("seconds", seconds)
        self.cut(reset=reset)

    # -- observation -------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many connections are open through the link now."""
        return len(self._pipes)

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly ``count`` connections are open through the link."""
        while len(self._pipes) != count:
            await self._changed.wait()

    # -- internals -----------------------------------------------------------------------------

    def _is_down(self) -> bool:
        return trio.current_time() < self._down_until

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _run_pipe(self, client: trio.abc.Stream, server: trio.abc.Stream) -> None:
        pipe = _Pipe(self, client, server)
        self._pipes.add(pipe)
        self.accepted += 1
        self._notify()
        try:
            await pipe.run()
        finally:
            self._pipes.discard(pipe)
            self._notify()


class _Pipe:
    def __init__(self, link: FaultyLink, client: trio.abc.Stream, server: trio.abc.Stream) -> None:
        self._link = link
        self._streams = (client, server)
        self._scope = trio.CancelScope()
        self._reset = False

    def cut(self, *, reset: bool) -> None:
        self._reset = reset
        self._scope.cancel()

    async def run(self) -> None:
        client, server = self._streams
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    for source, sink in ((client, server), (server, client)):
                        send, receive = trio.open_memory_channel[tuple[float, bytes]](16)
                        nursery.start_soon(self._read, source, send)
                        nursery.start_soon(self._write, receive, sink)
        finally:
            # Shielded: when the link's nursery is cancelled, the first close would re-raise
            # that cancellation and leave the other stream open.
            with trio.CancelScope(shield=True):
                for stream in self._streams:
                    if self._reset:
                        _set_linger_zero(stream)
                    await trio.aclose_forcefully(stream)

    async def _read(self, source: trio.abc.Stream, out: trio.MemorySendChannel[tuple[float, bytes]]) -> None:
        async with out:
            while True:
                try:
                    data = await source.receive_some(_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    return
                await out.send((trio.current_time() + self._link._latency, bytes(data)))

    async def _write(
        self, chunks: trio.MemoryReceiveChannel[tuple[float, bytes]], sink: trio.abc.Stream
    ) -> None:
        link = self._link
        async with chunks:
            async for due, data in chunks:
                await link._flowing.wait()
                await trio.sleep_until(due)
                if link._rate is not None:  # the time these bytes take on a link this slow
                    await trio.sleep(len(data) / link._rate)
                await link._flowing.wait()
                try:
                    await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
        # one side finished: end the whole connection, as a dead peer would
        self._scope.cancel()


def _set_linger_zero(stream: trio.abc.Stream) -> None:
    sock = getattr(stream, "socket", None)
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FaultProxy(FaultyLink):
    """A TCP proxy on loopback in front of a server; connect clients to ``port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__()
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0

    async def _handle(self, client: trio.SocketStream) -> None:
        if self._is_down():
            self.refused += 1
            _set_linger_zero(client)
            await trio.aclose_forcefully(client)
            return
        try:
            server = await trio.open_tcp_stream(self.target_host, self.target_port)
        except OSError:
            self.refused += 1
            await trio.aclose_forcefully(client)
            return
        await self._run_pipe(client, server)


@asynccontextmanager
async def open_fault_proxy(
    target_host: str, target_port: int, *, host: str = "127.0.0.1"
) -> AsyncIterator[FaultProxy]:
    """Run a fault-injecting TCP proxy to ``target_host:target_port`` for the ``async with`` block.

    Yields:
        The proxy: ``proxy.port`` is where clients connect; the ``FaultyLink`` methods control
        every connection through it.
    """
    if isinstance(target_port, bool) or not isinstance(target_port, int) or not 0 < target_port < 65536:
        raise ValueError(f"target_port must be an int from 1 to 65535, got {target_port!r}")
    proxy = FaultProxy(target_host, target_port)
    with unwrap_group():  # the caller's own exception comes out as itself
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, proxy._handle, 0, host=host))
            proxy.port = listeners[0].socket.getsockname()[1]
            try:
                yield proxy
            finally:
                nursery.cancel_scope.cancel()


class MemoryLink(FaultyLink):
    """An in-memory link to a server: no sockets, works under ``trio.testing.MockClock``.

    ``serve`` is called with the server's end of each new connection (for a hub:
    ``hub.serve_stream``); replace it to point new connections at another server, as a restarted
    process would be.
    """

    def __init__(self, nursery: trio.Nursery, serve: Callable[[trio.abc.Stream], Awaitable[None]]) -> None:
        super().__init__()
        self._nursery = nursery
        self.serve = serve

    async def open_stream(self) -> trio.abc.Stream:
        """Open a new connection through the link; returns the client's end.

        Raises:
            OSError: the link is down (see ``drop_for``), like a refused TCP connection.
        """
        await trio.lowlevel.checkpoint()
        if self._is_down():
            self.refused += 1
            raise OSError("connection refused: the in-memory link is down")
        client_end, proxy_client = trio.testing.memory_stream_pair()
        proxy_server, server_end = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._run_pipe, proxy_client, proxy_server)
        self._nursery.start_soon(self._serve_one, server_end)
        return client_end

    async def _serve_one(self, stream: trio.abc.Stream) -> None:
        await self.serve(stream)

    async def transport(
        self, nursery: trio.Nursery, url: str, headers: list[tuple[bytes, bytes]]
    ) -> trio_websocket.WebSocketConnection:
        """A client ``Transport`` through this link: ``connect(url, transport=link.transport)``.

        The host in ``url`` is ignored; its path and query string are sent in the handshake.
        """
        stream = await self.open_stream()
        nursery.start_soon(_close_when_cancelled, stream)
        return await wrap_client_stream(nursery, stream, url, headers)


async def _close_when_cancelled(stream: trio.abc.AsyncResource) -> None:
    try:
        await trio.sleep_forever()
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_memory_link(serve: Callable[[trio.abc.Stream], Awaitable[None]]) -> AsyncIterator[MemoryLink]:
    """An in-memory, fault-injecting link to ``serve`` (e.g. ``hub.serve_stream``) for the block."""
    if not callable(serve):
        raise TypeError("serve must be an async callable taking a trio stream, e.g. hub.serve_stream")
    with unwrap_group():  # the caller's own exception comes out as itself
        async with trio.open_nursery() as nursery:
            link = MemoryLink(nursery, serve)
            try:
                yield link
            finally:
                nursery.cancel_scope.cancel()
