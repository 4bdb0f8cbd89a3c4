"""Frames built once: the wire bytes of a server text message, shared by every subscriber.

Theory of operation
-------------------
A server frame is never masked and trioconn negotiates no extension, so a text message has
exactly one encoding on the wire, identical for every client. ``frame()`` builds it with
wsproto's own ``FrameProtocol`` (no hand-rolled framing) and remembers the last one it built, so
a publication fanned out to N subscribers is framed once; ``socket.py`` writes those bytes
straight to each client's socket when nothing else is writing.

Measured on this project's reference machine (``docs/performance.md``), sending through a
general-purpose WebSocket connection object costs 25-40 µs per message (framing, a lock, two
yields, a task switch); a plain write of pre-built bytes about 1 µs.
"""

from __future__ import annotations

from wsproto.frame_protocol import FrameProtocol

__all__ = ["frame"]

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
