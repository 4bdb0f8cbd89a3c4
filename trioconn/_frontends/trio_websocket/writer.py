"""The data path to one client's socket: pre-built frames, written at once when the socket can take them.

Theory of operation
-------------------
Measured on this project's reference machine (``docs/performance.md``), one
``WebSocketConnection.send_message`` costs 25-40 µs of CPU: wsproto builds the frame, a
``StrictFIFOLock`` yields, ``send_all`` yields again, and a sender task has to be scheduled for
every event. A plain write of the same bytes to the socket costs about 1 µs. So the hub keeps
trio-websocket for the handshake, the reader and the close handshake, and writes data frames
itself:

- A server frame is never masked and trioconn negotiates no extension, so a text message has
  exactly one encoding on the wire, identical for every client. ``frame()`` builds it with
  wsproto's own ``FrameProtocol`` (no hand-rolled framing) and remembers the last one it built,
  so a publication fanned out to N subscribers is framed once.
- ``SocketWriter.write_nowait`` writes a frame straight to the socket (``os.write`` on the
  non-blocking descriptor) when nothing else is writing: no task switch, no lock, no await.
  What the kernel does not take stays in ``pending``; the connection's sender task then writes it
  with ``send_all`` under trio-websocket's own stream lock, which also orders our writes with the
  pongs and close frames trio-websocket sends.
- trio-websocket writes too (pongs to the client's pings, close frames) from its reader task, and
  it may do so after a direct write left bytes ``pending`` but before the sender took them: its
  frame would land inside ours and corrupt the stream. So the writer hands its pending bytes to
  the connection's ``ServerProtocol`` (``listener.py``), which puts them in front of whatever
  trio-websocket sends next; trio-websocket then writes both under its lock, in order.
- This relies on three private attributes of ``trio_websocket.WebSocketConnection``
  (``_stream``, ``_stream_lock`` and ``_wsproto``, present since 0.9). ``SocketWriter.attach``
  checks them and returns None when they are missing or the stream is not a plain TCP socket
  (TLS, in-memory streams); the connection then uses ``send_message``, which is correct, only
  slower. A test asserts that the fast path is in use over TCP, so an upgrade that removes them
  is noticed.
"""

from __future__ import annotations

import os

import trio
import trio_websocket
from wsproto.frame_protocol import FrameProtocol

from .listener import ServerProtocol

__all__ = ["SocketWriter", "frame"]

_FRAMER = FrameProtocol(client=False, extensions=[])
_last: tuple[str | None, bytes] = (None, b"")


def frame(message: str) -> bytes:
    """The wire bytes of text ``message`` as one unmasked, final server frame.

    The last result is kept: a publication is the same ``str`` object for every subscriber.
    """
    global _last
    text, data = _last
    if message is not text:
        data = bytes(_FRAMER.send_data(message, fin=True))
        _last = (message, data)
    return data


class SocketWriter:
    """Writes frames to one TCP client, directly when possible. See the module docstring."""

    __slots__ = ("_fd", "_lock", "_stream", "busy", "pending")

    def __init__(self, stream: trio.SocketStream, lock: trio.StrictFIFOLock) -> None:
        self._stream = stream
        self._lock = lock
        self._fd = stream.socket.fileno()
        #: bytes the socket did not take yet; the sender writes them before anything else
        self.pending = b""
        #: True while a trio ``send_all`` of ours is under way
        self.busy = False

    @classmethod
    def attach(cls, ws: trio_websocket.WebSocketConnection) -> SocketWriter | None:
        """A writer for ``ws`` if it runs over a plain TCP socket with our protocol, else None."""
        stream = getattr(ws, "_stream", None)
        lock = getattr(ws, "_stream_lock", None)
        protocol = getattr(ws, "_wsproto", None)
        if (
            isinstance(stream, trio.SocketStream)
            and isinstance(lock, trio.StrictFIFOLock)
            and isinstance(protocol, ServerProtocol)
        ):
            writer = cls(stream, lock)
            protocol.send_first = writer.take_pending
            return writer
        return None

    @property
    def idle(self) -> bool:
        """Nothing is pending and nobody is writing: a direct write cannot interleave."""
        return not self.pending and not self.busy and not self._lock.locked()

    def take_pending(self) -> bytes:
        """Hand over the bytes not written yet: the caller writes them before anything else."""
        data, self.pending = self.pending, b""
        return data

    def write_nowait(self, data: bytes) -> None:
        """Write as much of ``data`` as the socket takes now; keep the rest in ``pending``.

        Only call this when ``idle``. Raises ``OSError`` if the peer is gone.
        """
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        self.pending = data[written:] if written < len(data) else b""

    async def send(self, data: bytes) -> None:
        """Write ``pending`` and then ``data``, waiting as long as the socket needs.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: the peer or the socket is gone.
        """
        self.busy = True
        try:
            async with self._lock:
                data, self.pending = self.pending + data, b""
                await self._stream.send_all(data)
        finally:
            self.busy = False
