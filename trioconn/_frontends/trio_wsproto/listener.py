"""The trio front end's listener: accepting sockets, the opening handshake, refusals.

Theory of operation
-------------------
``Hub.serve`` accepts TCP sockets itself, so that a socket counts from the moment it is
accepted, not from the end of its handshake:

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
- Each accepted socket runs ``serve_stream`` in the hub's handler nursery, in one task that
  becomes the connection's receiver once the upgrade is accepted: optional TLS, then the upgrade
  request (``handshake.py``), which must arrive within ``handshake_timeout``. ``serve_stream`` is
  also what ``Hub.serve_stream`` runs for in-memory streams, so tests see exactly this behaviour.
- Requests that wsproto accepts but RFC 6455 does not (HTTP/1.0, a ``Sec-WebSocket-Key`` that is
  not 16 bytes of base64, a request target ``urllib.parse`` cannot split) are refused with
  HTTP 400; the ones wsproto refuses itself (not GET, no ``Upgrade``, a
  ``Sec-WebSocket-Version`` other than 13 → 426 naming 13, unparseable HTTP) are answered as
  wsproto says. Either way the socket is closed at once and the refusal is counted.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..._core.ratelog import RateLimitedLog
from ..._server.groups import unwrap_group
from .handshake import Refusal, UpgradeRequest, check_request, read_request

__all__ = [
    "ACCEPT_PAUSE",
    "REPORT_INTERVAL",
    "SocketGate",
    "accept_loop",
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


async def serve_stream(
    stream: trio.abc.Stream,
    handle: Callable[[UpgradeRequest], Awaitable[None]],
    report: Report,
    *,
    handshake_timeout: float,
    on_request: Callable[[], None] | None = None,
) -> None:
    """Serve one client stream: read its upgrade request, refuse it or pass it to ``handle``.

    ``on_request`` is called once the request has arrived, was refused, or timed out (the
    socket no longer waits for its handshake). The stream is closed before this returns.
    """
    peer = remote(stream)
    try:
        request = None
        with trio.move_on_after(handshake_timeout) as timeout:
            try:
                request = await read_request(stream, peer)
            except Refusal as refused:
                report(f"refused-{refused.status}")
                logger.debug("bad handshake from %s: HTTP %d (%s)", peer, refused.status, refused.reason)
        if on_request is not None:
            on_request()
        if request is None:
            if timeout.cancelled_caught:
                report("handshake-timeout")
                logger.debug("no handshake from %s within %gs", peer, handshake_timeout)
            return
        refusal = check_request(request)
        if refusal is not None:
            report(f"refused-{refusal.status}")
            logger.debug("bad handshake from %s: HTTP %d %s", peer, refusal.status, refusal.reason)
            with trio.move_on_after(CLOSE_TIMEOUT):
                await request.reject(refusal.status, refusal.reason)
            return
        await handle(request)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        logger.debug("%s went away during the handshake", peer)
    finally:
        await trio.aclose_forcefully(stream)


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
        # A bug, in trioconn or wsproto: it ends this client, not the server.
        logger.exception("serving a client failed")
    finally:
        handshake_over()
        gate.closed()
        await trio.aclose_forcefully(stream)


async def serve_listeners(
    listeners: Sequence[trio.SocketListener],
    gate: SocketGate,
    handlers: trio.Nursery,
    handle: Callable[[UpgradeRequest], Awaitable[None]],
    report: Report,
    *,
    ssl_context: ssl.SSLContext | None,
    handshake_timeout: float,
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
            on_request=handshake_over,
        )

    with unwrap_group():
        async with trio.open_nursery() as loops:
            for listener in listeners:
                loops.start_soon(accept_loop, listener, gate, handlers, serve_one)


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port``; raises ``OSError`` (not a group) if it cannot."""
    return await trio.open_tcp_listeners(port, host=host)


def remote(stream: trio.abc.Stream) -> str:
    """The peer's address for logs (``host:port``), ``in-memory``, or ``unknown`` if it is gone."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return "in-memory"
    try:
        address = stream.socket.getpeername()
    except OSError:  # the peer is already gone
        return "unknown"
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def wrap_tls(stream: trio.SocketStream, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """The stream to speak WebSocket over: TLS on top of the socket if a context is given."""
    if ssl_context is None:
        return stream
    return trio.SSLStream(stream, ssl_context, server_side=True, https_compatible=True)
