"""The server socket: what a front end gives the hub for one accepted WebSocket connection.

Theory of operation
-------------------
A front end (``trioconn/_frontends/``) owns the I/O library: it accepts the connection, checks
the upgrade request with the hub (``Hub.admit``) and, once it has accepted, wraps the connection
in a ``ServerSocket`` and hands it to ``Hub.serve_socket``. The connection logic — receiver,
sender and heartbeat tasks, the outbox, the topics — only ever talks to this interface, so it
runs the same over the trio front end (wsproto), an ASGI server or anything else that can carry text messages.

The interface is small on purpose:

- ``receive()`` the next message, ``send()`` one, ``close()`` with a code and reason, and
  ``closed`` for how the peer ended it. Every transport failure comes out as ``SocketClosed``.
- An optional fast path for fan-out: ``ready`` says a pre-built message could be written at
  once without waiting, ``write_nowait`` does it, and ``pending`` counts the bytes the socket
  did not take yet (the next ``send`` or ``flush`` writes them first). Front ends without one
  keep the defaults (never ready), and every message goes through ``send``.

Nothing here imports an I/O library; ``anyio`` is all the hub core needs.
"""

from __future__ import annotations

import abc
from typing import Any, TypeAlias

import attrs

from .._core.exceptions import TrioconnError
from .._core.protocol import refusal_close_code

__all__ = ["Accepted", "Admission", "Closed", "Refused", "ServerSocket", "SocketClosed", "encoded_size"]


def encoded_size(payload: str | bytes) -> int:
    """The bytes ``payload`` takes in a WebSocket message (UTF-8 for text): what ``max_frame_size``
    limits, in every front end."""
    if isinstance(payload, bytes) or payload.isascii():  # isascii() is O(1) for str
        return len(payload)
    return len(payload.encode("utf-8", "surrogatepass"))


@attrs.frozen
class Closed:
    """How a connection ended on the peer's side (or was lost: 1006)."""

    code: int
    reason: str = ""


class SocketClosed(TrioconnError):
    """The connection is gone (closed, reset, or the transport failed); ``ServerSocket.closed`` says how."""


class ServerSocket(abc.ABC):
    """One accepted WebSocket connection, as the hub's connection logic sees it.

    ``receive`` is called by one task and ``send``/``flush`` by another, never concurrently with
    themselves; ``write_nowait`` only from synchronous code when ``ready`` is true.
    """

    __slots__ = ()

    #: the peer's address, for logs and statistics (set by the front end)
    remote: str

    @property
    @abc.abstractmethod
    def closed(self) -> Closed | None:
        """None while open; how it ended once the peer closed it or the link was lost."""

    @abc.abstractmethod
    async def receive(self) -> str | bytes:
        """The next message from the client.

        Raises:
            SocketClosed: the client closed the connection or it was lost (``closed`` says how;
                a message over the front end's size limit closes with 1009).
        """

    @abc.abstractmethod
    async def send(self, message: str) -> None:
        """Send one text message (after any ``pending`` bytes), waiting as long as the peer needs.

        Raises:
            SocketClosed: the connection is gone.
        """

    @abc.abstractmethod
    async def close(self, code: int, reason: str, *, abort: bool = False) -> None:
        """Send a close frame and end the connection; the caller bounds how long it may take.

        ``abort``: a send was interrupted half-way, so no close frame can follow; end the
        transport at once. Never raises ``SocketClosed``.
        """

    # -- the optional fast path ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True if ``write_nowait`` can be called now (nothing pending, nobody writing)."""
        return False

    @property
    def pending(self) -> int:
        """Bytes written with ``write_nowait`` that the transport has not taken yet."""
        return 0

    def write_nowait(self, message: str) -> None:
        """Write ``message`` as far as the transport takes it now; the rest becomes ``pending``.

        Only when ``ready``. Raises ``SocketClosed`` if the peer is gone.
        """
        raise NotImplementedError(f"{type(self).__name__} has no direct write path")

    async def flush(self) -> None:  # noqa: B027 - optional, like the rest of the fast path
        """Write the ``pending`` bytes. Raises ``SocketClosed`` if the peer is gone."""


@attrs.frozen
class Accepted:
    """``Hub.admit``'s answer for a request to accept: ``identity`` is what ``authenticate`` returned."""

    identity: Any


@attrs.frozen
class Refused:
    """``Hub.admit``'s answer for a request to refuse with HTTP ``status`` and ``reason`` as the body.

    A hub with ``refuse_with="close"`` carries the refusal in a close frame instead:
    ``close_code`` and ``close_reason`` (front ends accept the upgrade and close at once).
    """

    status: int
    reason: str

    @property
    def close_code(self) -> int:
        """The close code for this refusal (``refusal_close_code``: 401 → 4401, 403 → 4403 …)."""
        return refusal_close_code(self.status)

    @property
    def close_reason(self) -> str:
        """``reason``, cut to the 123 bytes of UTF-8 a close frame can carry."""
        return self.reason.encode()[:123].decode("utf-8", "ignore")


#: What ``Hub.admit`` decides about an upgrade request.
Admission: TypeAlias = Accepted | Refused
