"""The trio-websocket front end: accepting sockets, the opening handshake, protocol failures.

Theory of operation
-------------------
``Hub.serve`` accepts TCP sockets itself instead of using ``trio_websocket.serve_websocket``, so
that a socket counts from the moment it is accepted, not from the end of its handshake:

- One *accept loop* per listening socket. Before each ``accept`` it waits until the hub's
  ``SocketGate`` has room: fewer than ``max_handshakes`` sockets still waiting for their upgrade
  request and fewer than ``max_sockets`` sockets in all. Over a limit the loop simply stops
  accepting: new clients wait in the kernel's listen backlog and are served in order as room
  frees up, and a flood costs the hub no work at all (accepting only to close would cost two
  system calls per attempt and send the client straight back to retry). When ``accept`` fails
  because the process is out of descriptors or memory (``EMFILE``, ``ENFILE``, ``ENOBUFS``,
  ``ENOMEM``) the loop pauses briefly — until one of its sockets closes, at most ``ACCEPT_PAUSE``
  — and logs at most one line per ``REPORT_INTERVAL``, with a count: never a traceback per
  attempt. A full gate is logged the same way.
- Each accepted socket runs ``serve_stream`` in the hub's handler nursery: optional TLS, then
  trio-websocket's ``WebSocketConnection`` on the stream, whose upgrade request must arrive
  within ``handshake_timeout``. ``serve_stream`` is also what ``Hub.serve_stream`` runs for
  in-memory streams, so tests see exactly this behaviour.
- Requests that wsproto accepts but RFC 6455 does not (HTTP/1.0, a ``Sec-WebSocket-Key`` that is
  not 16 bytes of base64, a request target ``urllib.parse`` cannot split) are refused with
  HTTP 400 through ``WebSocketRequest.reject``; the ones wsproto refuses itself (not GET, no
  ``Upgrade``, a ``Sec-WebSocket-Version`` other than 13 → 426 naming 13, unparseable HTTP) are
  answered by wsproto. Either way the socket is closed at once and the refusal is counted.
- After the handshake, a frame wsproto cannot accept (invalid UTF-8, RSV bits, a control frame
  over 125 bytes or fragmented, an unmasked client frame) makes wsproto report a close with
  1002 or 1007 but trio-websocket then closes the socket without a close frame.
  ``ServerProtocol`` makes trio-websocket answer it like a close the client started, so the
  client gets a close frame with wsproto's code and reason before the socket closes. (If a
  direct write left part of a frame unsent, ``ServerProtocol`` sends that first: see
  ``writer.py``.)

Two private parts of trio-websocket are used, as its own ``serve_websocket`` does:
``WebSocketConnection._reader_task`` and ``_get_request`` (``wrap_server_stream`` in three lines,
without which there is no way to pass our ``ServerProtocol`` or to notice that the reader ended
before a request arrived — a refused request would otherwise hold its slot for the whole
``handshake_timeout``). ``tests/test_abuse_network.py`` fails if an upgrade changes them.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import os
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Generator, Sequence

import attrs
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event, RejectConnection
from wsproto.utilities import RemoteProtocolError

from ..._core.ratelog import RateLimitedLog
from ..._server.groups import unwrap_group

__all__ = [
    "ACCEPT_PAUSE",
    "REPORT_INTERVAL",
    "Refusal",
    "ServerProtocol",
    "SocketGate",
    "accept_loop",
    "check_request",
    "open_listeners",
    "remote",
    "serve_listeners",
    "serve_stream",
]

logger = logging.getLogger("trioconn")

#: Errors of accept(2) that mean the process or the system is out of a resource, not that
#: anything is wrong with the listener (the same set trio's ``serve_listeners`` uses).
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: Longest pause of the accept loop after such an error; it retries sooner if a socket closes.
ACCEPT_PAUSE = 0.1

#: While accepts keep failing, or keep waiting for room, at most one log line per this many seconds.
REPORT_INTERVAL = 10.0

#: How long a refusal or the final close of a socket may take when the peer does not read.
CLOSE_TIMEOUT = 2.0

#: Called with a cause (``"refused-400"``, ``"handshake-timeout"`` …) to count it in statistics.
Report = Callable[[str], None]


@attrs.frozen
class Refusal:
    """An HTTP answer to an upgrade request that will not be accepted."""

    status: int
    reason: str


class ServerProtocol(WSConnection):
    """wsproto's server connection, made to answer protocol failures with a close frame.

    When wsproto cannot parse a client's frames it reports ``CloseConnection`` with 1002 (or 1007
    for invalid UTF-8) while its state is still OPEN — a close frame from the client would have
    moved it to REMOTE_CLOSING first. trio-websocket answers a close with a close frame only in
    REMOTE_CLOSING, so this class reports that state until the answer is sent: the client gets a
    close frame carrying wsproto's code and reason, then the socket closes, as RFC 6455 7.1.7
    allows ("Fail the WebSocket Connection").

    It also remembers the HTTP status wsproto answered a bad handshake with (``refused``), and
    puts the bytes the direct writer left pending in front of what trio-websocket sends
    (``send_first``; see ``writer.py``).
    """

    def __init__(self) -> None:
        super().__init__(ConnectionType.SERVER)
        #: the status wsproto refused the handshake with, if it did
        self.refused: int | None = None
        #: the close code of a protocol failure of the client's, if there was one
        self.failed: int | None = None
        #: bytes that must precede anything sent (see ``writer.py``), set by the direct writer
        self.send_first: Callable[[], bytes] | None = None

    @property
    def state(self) -> ConnectionState:
        state = super().state
        if self.failed is not None and state is ConnectionState.OPEN:
            return ConnectionState.REMOTE_CLOSING
        return state

    @property
    def http_version(self) -> bytes | None:
        """The HTTP version of the upgrade request (``b"1.1"``), None if unknown."""
        h11_connection = getattr(self.handshake, "_h11_connection", None)
        version = getattr(h11_connection, "their_http_version", None)
        return version if isinstance(version, bytes) else None

    def send(self, event: Event) -> bytes:
        data = super().send(event)
        if self.send_first is not None:
            data = self.send_first() + data
        return data

    def receive_data(self, data: bytes | None) -> None:
        try:
            super().receive_data(data)
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            self.refused = hint.status_code if isinstance(hint, RejectConnection) else 400
            raise

    def events(self) -> Generator[Event, None, None]:
        for event in super().events():
            if (
                isinstance(event, CloseConnection)
                and self.connection is not None
                and self.connection.state is ConnectionState.OPEN
            ):
                self.failed = event.code
            yield event


def check_request(request: trio_websocket.WebSocketRequest, protocol: ServerProtocol) -> Refusal | None:
    """What RFC 6455 4.2.1 requires of an upgrade request and wsproto does not check."""
    version = protocol.http_version
    if version is not None and version < b"1.1":
        return Refusal(400, "a WebSocket handshake needs HTTP/1.1")
    try:
        urllib.parse.urlsplit(request.path)
    except ValueError:
        return Refusal(400, "the request target cannot be parsed")
    keys = [value for name, value in request.headers if name.lower() == b"sec-websocket-key"]
    if len(keys) != 1 or not _is_key(keys[0]):
        return Refusal(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value")
    return None


def _is_key(value: bytes) -> bool:
    try:
        return len(base64.b64decode(value.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


async def serve_stream(
    stream: trio.abc.Stream,
    handle: Callable[[trio_websocket.WebSocketRequest], Awaitable[None]],
    report: Report,
    *,
    handshake_timeout: float,
    max_message_size: int,
    on_request: Callable[[], None] | None = None,
) -> None:
    """Serve one client stream: read its upgrade request, refuse it or pass it to ``handle``.

    ``on_request`` is called once the request has arrived, was refused, or timed out (the
    socket no longer waits for its handshake). The stream is closed before this returns.
    """
    try:
        async with trio.open_nursery() as nursery:
            protocol = ServerProtocol()
            ws = trio_websocket.WebSocketConnection(stream, protocol, max_message_size=max_message_size)
            request = None
            with trio.move_on_after(handshake_timeout) as timeout:
                request = await _first_request(nursery, ws)
            if on_request is not None:
                on_request()
            if request is None:
                if timeout.cancelled_caught:
                    report("handshake-timeout")
                    logger.debug("no handshake from %s within %gs", remote(ws), handshake_timeout)
                elif protocol.refused is not None:
                    report(f"refused-{protocol.refused}")
                    logger.debug("bad handshake from %s: HTTP %d", remote(ws), protocol.refused)
            else:
                refusal = check_request(request, protocol)
                if refusal is not None:
                    report(f"refused-{refusal.status}")
                    logger.debug(
                        "bad handshake from %s: HTTP %d %s", remote(ws), refusal.status, refusal.reason
                    )
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await request.reject(refusal.status, body=refusal.reason.encode())
                else:
                    try:
                        await handle(request)
                    finally:
                        with trio.move_on_after(CLOSE_TIMEOUT):
                            await ws.aclose()
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def _first_request(
    nursery: trio.Nursery, ws: trio_websocket.WebSocketConnection
) -> trio_websocket.WebSocketRequest | None:
    """Start ``ws``'s reader and wait for the upgrade request; None if the reader ends first."""
    with trio.CancelScope() as waiting:
        nursery.start_soon(_read, ws, waiting)
        return await ws._get_request()
    return None


async def _read(ws: trio_websocket.WebSocketConnection, waiting: trio.CancelScope) -> None:
    try:
        await ws._reader_task()
    finally:
        # No request can arrive any more (a refused or broken handshake); harmless after one did.
        waiting.cancel()


class SocketGate:
    """Counts a hub's TCP sockets from accept to close; accept loops wait while it is full."""

    def __init__(self, max_handshakes: int, max_sockets: int | None) -> None:
        self.max_handshakes = max_handshakes
        self.max_sockets = max_sockets
        #: sockets whose upgrade request has not arrived yet
        self.handshaking = 0
        #: every open socket the hub accepted
        self.sockets = 0
        self._freed = trio.Event()

    @property
    def full(self) -> bool:
        return self.handshaking >= self.max_handshakes or (
            self.max_sockets is not None and self.sockets >= self.max_sockets
        )

    def opened(self) -> None:
        self.sockets += 1
        self.handshaking += 1

    def handshake_over(self) -> None:
        self.handshaking -= 1
        self._free()

    def closed(self) -> None:
        self.sockets -= 1
        self._free()

    async def wait_freed(self) -> None:
        """Return when a socket next closes or ends its handshake."""
        await self._freed.wait()

    def _free(self) -> None:
        self._freed.set()
        self._freed = trio.Event()


async def accept_loop(
    listener: trio.SocketListener,
    gate: SocketGate,
    nursery: trio.Nursery,
    serve: Callable[[trio.SocketStream, Callable[[], None]], Awaitable[None]],
) -> None:
    """Accept sockets on ``listener`` until it is closed, while ``gate`` has room; serve each in ``nursery``.

    ``serve(stream, handshake_over)`` calls ``handshake_over()`` once the socket no longer waits
    for its handshake; the socket counts as closed when ``serve`` returns.

    Raises:
        OSError: ``accept`` failed for a reason other than a lack of resources.
    """
    log = RateLimitedLog(logger, trio.current_time, REPORT_INTERVAL)
    while True:
        if gate.full:
            log.warning(
                "full",
                "socket limit reached, new clients wait in the listen backlog: %d sockets in their "
                "handshake (max_handshakes=%d), %d in all (max_sockets=%s)",
                gate.handshaking,
                gate.max_handshakes,
                gate.sockets,
                gate.max_sockets,
            )
            while gate.full:
                await gate.wait_freed()
        try:
            stream = await listener.accept()
        except trio.ClosedResourceError:
            return  # the listener was closed: serving is over
        except OSError as exc:
            if exc.errno not in CAPACITY_ERRNOS:
                raise
            log.warning(
                "starved",
                "accept failed, accepting paused: %s (%s)",
                errno.errorcode[exc.errno],
                os.strerror(exc.errno),
            )
            with trio.move_on_after(ACCEPT_PAUSE):
                await gate.wait_freed()
            continue
        gate.opened()
        nursery.start_soon(_counted, gate, serve, stream)


async def _counted(
    gate: SocketGate,
    serve: Callable[[trio.SocketStream, Callable[[], None]], Awaitable[None]],
    stream: trio.SocketStream,
) -> None:
    waiting = True

    def handshake_over() -> None:
        nonlocal waiting
        if waiting:
            waiting = False
            gate.handshake_over()

    try:
        await serve(stream, handshake_over)
    except Exception:
        # A bug, in trioconn or trio-websocket: it ends this client, not the server.
        logger.exception("serving a client failed")
    finally:
        handshake_over()
        gate.closed()
        await trio.aclose_forcefully(stream)


async def serve_listeners(
    listeners: Sequence[trio.SocketListener],
    gate: SocketGate,
    handlers: trio.Nursery,
    handle: Callable[[trio_websocket.WebSocketRequest], Awaitable[None]],
    report: Report,
    *,
    ssl_context: ssl.SSLContext | None,
    handshake_timeout: float,
    max_message_size: int,
) -> None:
    """Run one accept loop per listener, until the listeners are closed; each client runs
    ``serve_stream`` in ``handlers``.

    Raises:
        OSError: accepting failed for a reason other than a lack of resources.
    """

    async def serve_one(stream: trio.SocketStream, handshake_over: Callable[[], None]) -> None:
        await serve_stream(
            wrap_tls(stream, ssl_context),
            handle,
            report,
            handshake_timeout=handshake_timeout,
            max_message_size=max_message_size,
            on_request=handshake_over,
        )

    with unwrap_group():
        async with trio.open_nursery() as loops:
            for listener in listeners:
                loops.start_soon(accept_loop, listener, gate, handlers, serve_one)


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port``; raises ``OSError`` (not a group) if it cannot."""
    return await trio.open_tcp_listeners(port, host=host)


def remote(ws: trio_websocket.WebSocketConnection | trio_websocket.WebSocketRequest) -> str:
    """The peer's address for logs (``str`` of trio-websocket's ``Endpoint``), or ``in-memory``."""
    try:
        endpoint = ws.remote
    except OSError:  # the peer is already gone: getpeername() fails
        return "unknown"
    if isinstance(endpoint, trio_websocket.Endpoint):
        return str(endpoint)
    return "in-memory"


def wrap_tls(stream: trio.SocketStream, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """The stream to speak WebSocket over: TLS on top of the socket if a context is given."""
    if ssl_context is None:
        return stream
    return trio.SSLStream(stream, ssl_context, server_side=True, https_compatible=True)
