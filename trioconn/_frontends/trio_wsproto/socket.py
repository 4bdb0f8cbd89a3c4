"""``ServerSocket`` on a trio stream and wsproto: reading, the direct write path, the close handshake.

Theory of operation
-------------------
One object per accepted connection, and no task of its own: the connection's receiver task
reads through ``receive``, its sender task writes through ``send``/``flush``, and fan-out writes
pre-built frames through ``write_nowait`` from synchronous code. wsproto's ``Connection`` does the
framing and the protocol checks; this class moves bytes.

- **Reading.** Over plain TCP the receiver waits for the socket to become readable and then reads
  once (``os.read`` on the non-blocking descriptor). An idle connection so costs one wake-up and
  one read per message received; the usual "try to read, get ``EAGAIN``, then wait" would cost a
  second read each time. A read that filled the whole buffer is followed by another read at once,
  after a checkpoint. TLS and in-memory streams are read with ``receive_some``.
- **Writing.** Everything written — data, the pongs that answer the client's protocol pings, close
  frames — goes out in order: ``write_nowait`` writes straight to the socket only when nothing is
  pending and no write is under way, and keeps what the kernel did not take in ``pending``;
  every other write takes the lock and sends ``pending`` first. TLS and in-memory streams have no
  direct path (``ready`` is always False), so their messages go through ``send``.
- **Messages.** Fragmented messages are joined; one larger than ``max_message_size`` bytes (UTF-8
  for text, as every front end counts) is answered with close code 1009. Frames wsproto cannot accept
  (invalid UTF-8, RSV bits, a control frame over 125 bytes, an unmasked frame …) are answered
  with a close frame carrying wsproto's code (1002 or 1007) and reason, and the socket closes
  (RFC 6455 7.1.7, "Fail the WebSocket Connection").
- **Closing.** A client's close frame is answered at once with the same code. ``close`` sends
  ours after whatever is pending and waits for the client's answer (the caller bounds how long),
  then closes the stream.
"""

from __future__ import annotations

import os

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from ..._server.socket import Closed, ServerSocket, SocketClosed, encoded_size
from .handshake import RECEIVE_SIZE, receive_some
from .writer import frame

__all__ = ["WsprotoSocket"]

#: What trio raises when the peer or the stream is gone.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class WsprotoSocket(ServerSocket):
    """One accepted WebSocket connection on a trio stream. Over plain TCP, frames are written directly."""

    __slots__ = (
        "_closed",
        "_conn",
        "_lock",
        "_max",
        "_more",
        "_parts",
        "_size",
        "_sock",
        "_stream",
        "_unsent",
        "remote",
    )

    def __init__(
        self, stream: trio.abc.Stream, connection: Connection, remote: str, *, max_message_size: int
    ) -> None:
        self._stream = stream
        self._conn = connection
        #: the socket for direct reads and writes: plain TCP only
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._lock = trio.StrictFIFOLock()
        self._max = max_message_size
        self._more = False
        self._parts: list[str | bytes] = []
        self._size = 0
        self._closed: Closed | None = None
        #: bytes a direct write left unwritten; every other write sends them first
        self._unsent = b""
        self.remote = remote

    @property
    def direct(self) -> bool:
        """True if frames are written straight to the socket (plain TCP)."""
        return self._sock is not None

    @property
    def closed(self) -> Closed | None:
        return self._closed

    # -- reading --------------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        conn = self._conn
        while True:
            for event in conn.events():
                if isinstance(event, TextMessage | BytesMessage):
                    message = await self._message(event)
                    if message is not None:
                        return message
                elif isinstance(event, Ping):
                    await self._write_or_lost(conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._peer_closed(event)
                    raise SocketClosed
            if self._closed is not None:
                raise SocketClosed
            conn.receive_data(await self._read() or None)

    async def _message(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        """The whole message once ``event`` finishes it (None before); over the limit, 1009."""
        data = event.data if isinstance(event.data, str) else bytes(event.data)
        size = encoded_size(data)
        if event.message_finished and not self._parts and size <= self._max:
            return data
        self._size += size
        self._parts.append(data)
        if self._size > self._max:
            self._parts, self._size = [], 0
            reason = f"message over {self._max} bytes"
            self._closed = Closed(1009, reason)
            await self._write_or_lost(self._conn.send(CloseConnection(1009, reason)))
            raise SocketClosed
        if not event.message_finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        return "".join(parts) if isinstance(data, str) else b"".join(parts)  # type: ignore[arg-type]

    async def _peer_closed(self, event: CloseConnection) -> None:
        """The client closed (answer it), its frames could not be parsed (fail), or the link is gone."""
        self._closed = Closed(event.code, event.reason or "")
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            await self._write_or_lost(self._conn.send(event.response()))
        elif state is ConnectionState.OPEN:  # wsproto reports a parse failure (1002, 1007)
            await self._write_or_lost(self._conn.send(CloseConnection(event.code, event.reason)))

    async def _read(self) -> bytes:
        """The next bytes from the client; ``b""`` once it or the stream is gone."""
        sock = self._sock
        if sock is None:
            return await receive_some(self._stream, RECEIVE_SIZE)
        while True:
            try:
                if self._more:
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return b""
            fd = sock.fileno()  # -1 once the stream was closed meanwhile
            try:
                data = os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                self._more = False
                continue
            except OSError:  # reset by the peer, or closed
                return b""
            self._more = len(data) == RECEIVE_SIZE
            return data

    # -- writing --------------------------------------------------------------------------------

    async def send(self, message: str) -> None:
        await self._write(frame(message))

    @property
    def pending(self) -> int:
        return len(self._unsent)

    async def flush(self) -> None:
        if self._unsent:
            await self._write(b"")

    @property
    def ready(self) -> bool:
        return (
            self._sock is not None and not self._unsent and not self._lock.locked() and self._closed is None
        )

    def write_nowait(self, message: str) -> None:
        assert self._sock is not None
        data = frame(message)
        try:
            written = os.write(self._sock.fileno(), data)
        except BlockingIOError:
            written = 0
        except OSError:
            raise SocketClosed from None
        if written < len(data):
            self._unsent = data[written:]

    async def _write(self, data: bytes) -> None:
        """Send the unsent bytes and then ``data``, waiting as long as the socket needs.

        Raises:
            SocketClosed: the peer or the stream is gone.
        """
        async with self._lock:
            data, self._unsent = self._unsent + data, b""
            try:
                await self._stream.send_all(data)
            except _GONE:
                raise SocketClosed from None

    async def _write_or_lost(self, data: bytes) -> None:
        """``_write`` for control frames the receiver sends: a failure means the link is lost."""
        try:
            await self._write(data)
        except SocketClosed:
            if self._closed is None:
                self._closed = Closed(1006)
            raise

    # -- closing --------------------------------------------------------------------------------

    async def close(self, code: int, reason: str, *, abort: bool = False) -> None:
        try:
            if not abort and self._conn.state is ConnectionState.OPEN:
                if self._closed is None:
                    self._closed = Closed(code, reason)
                await self._write(self._conn.send(CloseConnection(code, reason)))
                await self._wait_for_close()
        except SocketClosed:
            pass
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _wait_for_close(self) -> None:
        """Read (and drop) what the client still sends until its close frame or the end of the stream."""
        conn = self._conn
        while True:
            for event in conn.events():
                if isinstance(event, CloseConnection):
                    return
            data = await self._read()
            if not data:
                return
            conn.receive_data(data)
