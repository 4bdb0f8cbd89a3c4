"""Opening the WebSocket: the ``Transport`` interface, ``tcp_transport``, and a handshake watch.

trio-websocket 0.12.2's client waits for the end of the opening handshake on an event that only a
successful handshake (or a refusal, which raises) ever sets. When the server closes or resets the
socket before it answered, its reader task records an abnormal closure and returns quietly, and
``trio_websocket.wrap_client_stream`` waits for that event forever: the attempt costs the whole
connect timeout. ``trioconn.wrap_client_stream`` therefore hands trio-websocket the stream
through ``_HandshakeWatch``, which sees the end of the stream (EOF, a reset, a failed write, or
trio-websocket closing the stream after an answer it could not parse) while the handshake is
still pending and ends the wait with ``ConnectionBroken`` — or with ``UntrustedCertificate`` when
the stream failed because the server's TLS certificate did not verify, an end the client treats
as final. No WebSocket framing or HTTP is done here: trio-websocket and wsproto still do all of
that; the watch only forwards bytes.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import trio
import trio_websocket

from .._core.exceptions import ConnectionBroken, UntrustedCertificate
from .errors import certificate_error

__all__ = [
    "MAX_MESSAGE_SIZE",
    "Headers",
    "Transport",
    "close_on_cancel",
    "tcp_transport",
    "wrap_client_stream",
]

#: Largest message the default transport accepts. Large on purpose: a ``batch`` can be big, and
#: a client-side 1009 would end the client for good (1009 is a final code).
MAX_MESSAGE_SIZE: Final = 64 * 2**20

Headers = list[tuple[bytes, bytes]]


class Transport(Protocol):
    """Opens one WebSocket client connection; injectable so tests can use memory streams.

    The transport runs the connection's background tasks in ``nursery`` and must release every
    resource it opened (sockets) when that nursery is cancelled: the client cancels it when the
    connection is over. Errors may be raised as trio-websocket, trio or ``OSError`` exceptions;
    the client translates them. Build it on ``trioconn.wrap_client_stream`` (as
    ``tcp_transport`` does) rather than on trio-websocket's function of the same name, whose
    client waits for the whole connect timeout when the server closes the socket during the
    opening handshake.

    Args:
        nursery: where the connection's reader task (and any cleanup task) runs.
        url: the ``ws://`` or ``wss://`` URL, with ``?token=`` added when a token is used.
        headers: extra HTTP headers for the opening handshake (``Authorization``).

    Returns:
        An open ``trio_websocket.WebSocketConnection`` (the handshake has completed).
    """

    def __call__(
        self, nursery: trio.Nursery, url: str, headers: Headers
    ) -> Awaitable[trio_websocket.WebSocketConnection]: ...


class _HandshakeWatch(trio.abc.Stream):
    """Forwards a stream to trio-websocket and reports its end while the handshake is pending."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._on_end: Callable[[], object] | None = None
        self.why = ""
        #: the stream's failure that ended the handshake, if one did
        self.error: BaseException | None = None

    def watch(self, on_end: Callable[[], object] | None) -> None:
        self._on_end = on_end

    def _ended(self, why: str) -> None:
        if self._on_end is not None:
            self.why = why
            self._on_end()
            self._on_end = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = self.error or exc
            self._ended(_failed(exc))
            raise
        if not data:
            self._ended("the server closed the connection during the opening handshake")
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = self.error or exc
            self._ended(_failed(exc))
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._ended("the server's answer to the opening handshake was not a valid WebSocket handshake")
        await self._stream.aclose()


def _failed(exc: BaseException) -> str:
    detail = str(exc.__cause__ or exc)
    return "the connection failed during the opening handshake" + (f" ({detail})" if detail else "")


async def wrap_client_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    url: str,
    headers: Headers,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> trio_websocket.WebSocketConnection:
    """Open a WebSocket client connection over ``stream``, for a custom ``Transport``.

    Like ``trio_websocket.wrap_client_stream``, but it takes the URL (host, path and query go
    into the request) and fails at once if the server closes or resets ``stream`` before the
    opening handshake completed, instead of waiting forever.

    Args:
        nursery: where trio-websocket's reader task runs. Close ``stream`` when this nursery
            is cancelled (trio-websocket leaves that to the garbage collector when the server
            closes first).
        stream: a connected byte stream (TCP, TLS, or in memory).
        url: the URL whose host, path and query go into the request.
        headers: extra HTTP headers.
        max_message_size: largest message accepted (a larger one closes with 1009).

    Returns:
        The open connection.

    Raises:
        ConnectionBroken: the server closed or reset the stream before the handshake completed.
        UntrustedCertificate: ``stream`` is TLS and the server's certificate failed verification.
        trio_websocket.ConnectionRejected: the server answered with an HTTP status.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    port = parts.port
    default_port = 443 if parts.scheme == "wss" else 80
    host_header = host if port in (None, default_port) else f"{host}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    watched = _HandshakeWatch(stream)
    ws: trio_websocket.WebSocketConnection | None = None
    with trio.CancelScope() as scope:
        watched.watch(scope.cancel)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            watched,  # type: ignore[arg-type]  # trio-websocket annotates socket streams, takes any
            host_header,
            resource,
            extra_headers=headers,
            max_message_size=max_message_size,
        )
    watched.watch(None)
    if ws is None:
        bad = None if watched.error is None else certificate_error(watched.error)
        if bad is not None:
            raise UntrustedCertificate(str(bad)) from bad
        raise ConnectionBroken(watched.why)
    return ws


async def close_on_cancel(stream: trio.abc.AsyncResource) -> None:
    """Sleep until cancelled, then close ``stream`` at once (no graceful TLS or TCP goodbye)."""
    try:
        await trio.sleep_forever()
    finally:
        await trio.aclose_forcefully(stream)


async def tcp_transport(
    nursery: trio.Nursery, url: str, headers: Headers, *, ssl_context: ssl.SSLContext | None = None
) -> trio_websocket.WebSocketConnection:
    """The default transport: TCP (TLS for ``wss://``) via trio-websocket.

    The socket is closed when ``nursery`` is cancelled, whatever state the WebSocket is in, and
    a server that closes or resets it during the opening handshake fails the attempt at once.
    ``connect(url, ssl_context=...)`` passes its context here; as a transport of your own, use
    ``functools.partial(tcp_transport, ssl_context=...)``.

    Args:
        nursery: where the connection's reader task runs.
        url: the ``ws://`` or ``wss://`` URL.
        headers: extra HTTP headers for the opening handshake.
        ssl_context: the TLS settings for ``wss://`` (default ``ssl.create_default_context()``:
            the system's trusted CAs, host names checked). Give one that trusts a private CA.

    Raises:
        ValueError: ``ssl_context`` with a ``ws://`` URL, which has no TLS.
        UntrustedCertificate: the server's certificate failed verification.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    if ssl_context is not None and not secure:
        raise ValueError(f"ssl_context is only used with wss:// URLs, not with {parts.scheme}://")
    port = parts.port or (443 if secure else 80)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            host,
            port,
            ssl_context=ssl_context if ssl_context is not None else ssl.create_default_context(),
            https_compatible=True,
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    nursery.start_soon(close_on_cancel, stream)
    return await wrap_client_stream(nursery, stream, url, headers)
