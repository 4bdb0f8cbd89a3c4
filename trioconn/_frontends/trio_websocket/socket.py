"""``ServerSocket`` over a trio-websocket connection, with the direct write path of ``writer.py``."""

from __future__ import annotations

import trio
import trio_websocket

from ..._server.socket import Closed, ServerSocket, SocketClosed
from .writer import SocketWriter, frame

__all__ = ["TrioWebSocketSocket"]

#: What trio-websocket and trio raise when the peer or the stream is gone.
_GONE = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class TrioWebSocketSocket(ServerSocket):
    """One accepted trio-websocket connection. Over plain TCP, frames are written directly."""

    __slots__ = ("_writer", "_ws", "remote")

    def __init__(self, ws: trio_websocket.WebSocketConnection, remote: str) -> None:
        self._ws = ws
        self._writer = SocketWriter.attach(ws)
        self.remote = remote

    @property
    def direct(self) -> bool:
        """True if frames are written straight to the socket (plain TCP), not via ``send_message``."""
        return self._writer is not None

    @property
    def closed(self) -> Closed | None:
        closed = self._ws.closed
        if closed is None:
            return None
        return Closed(closed.code, closed.reason or "")

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed:
            raise SocketClosed from None

    async def send(self, message: str) -> None:
        try:
            if self._writer is not None:  # pending bytes first, then this message
                await self._writer.send(frame(message))
            else:
                await self._ws.send_message(message)
        except _GONE:
            raise SocketClosed from None

    async def flush(self) -> None:
        if self._writer is not None and self._writer.pending:
            try:
                await self._writer.send(b"")
            except _GONE:
                raise SocketClosed from None

    async def close(self, code: int, reason: str, *, abort: bool = False) -> None:
        with trio.CancelScope() as scope:
            if abort:
                # Closing in a cancelled scope makes trio-websocket skip to closing the socket.
                scope.cancel()
            await self._ws.aclose(code, reason)

    @property
    def ready(self) -> bool:
        writer = self._writer
        return writer is not None and writer.idle and self._ws.closed is None

    @property
    def pending(self) -> int:
        return len(self._writer.pending) if self._writer is not None else 0

    def write_nowait(self, message: str) -> None:
        assert self._writer is not None
        try:
            self._writer.write_nowait(frame(message))
        except OSError:
            raise SocketClosed from None
