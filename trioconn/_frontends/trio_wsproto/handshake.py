"""The opening handshake on wsproto: read an upgrade request, then refuse or accept it.

Theory of operation
-------------------
wsproto's ``H11Handshake`` parses the request (with h11) and builds the answer; this module only
moves bytes. ``read_request`` feeds it what the client sends until it yields a ``Request``
(wsproto checked the method, ``Upgrade``, ``Connection``, the version and the key's presence),
answering the requests wsproto refuses itself with the status it chose (400, or 426 naming
version 13). ``check_request`` adds what RFC 6455 4.2.1 requires and wsproto does not check.

``UpgradeRequest.accept`` sends the 101 answer and keeps only wsproto's ``Connection`` for the
WebSocket that follows: the handshake objects (the h11 connection and its buffers) are dropped
with the request, so an open connection holds no HTTP state.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import urllib.parse

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

__all__ = ["RECEIVE_SIZE", "Refusal", "UpgradeRequest", "check_request", "read_request", "receive_some"]

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536


class Refusal(Exception):
    """The request cannot be accepted: answer with HTTP ``status`` (already sent if ``answered``)."""

    def __init__(self, status: int, reason: str, *, answered: bool = False) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.answered = answered


class UpgradeRequest:
    """A client's upgrade request, read and parsed; not answered yet."""

    __slots__ = ("_handshake", "headers", "http_version", "path", "remote", "stream")

    def __init__(self, stream: trio.abc.Stream, handshake: H11Handshake, event: Request, remote: str) -> None:
        #: the client's stream, which the WebSocket goes on over once accepted
        self.stream = stream
        self._handshake: H11Handshake | None = handshake
        #: the request target (path and query)
        self.path = event.target
        #: the request's headers as (lower-case name, value) byte pairs, ``Host`` first
        self.headers: list[tuple[bytes, bytes]] = [(b"host", event.host.encode("idna")), *event.extra_headers]
        #: ``b"1.1"`` (or whatever the request line said; None if unknown)
        self.http_version = _http_version(handshake)
        self.remote = remote

    async def accept(self) -> Connection:
        """Send the 101 answer; returns wsproto's connection for the frames that follow.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: the client is gone.
        """
        handshake = self._handshake
        assert handshake is not None, "the request was answered already"
        data = handshake.send(AcceptConnection())
        connection = handshake.connection
        assert connection is not None
        # The HTTP side is done: let it go now, not when the connection ends (the request
        # object lives as long as the task serving it).
        self._handshake = None
        await self.stream.send_all(data)
        return connection

    async def reject(self, status: int, body: str) -> None:
        """Answer with HTTP ``status`` and ``body`` (plain text); the caller closes the stream.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: the client is gone.
        """
        assert self._handshake is not None, "the request was answered already"
        await self.stream.send_all(_rejection(self._handshake, status, body.encode()))


async def read_request(stream: trio.abc.Stream, remote: str) -> UpgradeRequest | None:
    """Read until the upgrade request is complete; None if the client left before sending one.

    Raises:
        Refusal: wsproto refused the request (``answered``: its HTTP answer was sent).
    """
    handshake = H11Handshake(ConnectionType.SERVER)
    while True:
        for event in handshake.events():
            if isinstance(event, Request):
                return UpgradeRequest(stream, handshake, event, remote)
        data = await receive_some(stream, RECEIVE_SIZE)
        if not data:
            return None
        try:
            handshake.receive_data(data)
        except RemoteProtocolError as exc:
            hint = exc.event_hint if isinstance(exc.event_hint, RejectConnection) else RejectConnection()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(handshake.send(hint))
            raise Refusal(hint.status_code, str(exc), answered=True) from None


def check_request(request: UpgradeRequest) -> Refusal | None:
    """What RFC 6455 4.2.1 requires of an upgrade request and wsproto does not check."""
    if request.http_version is not None and request.http_version < b"1.1":
        return Refusal(400, "a WebSocket handshake needs HTTP/1.1")
    try:
        urllib.parse.urlsplit(request.path)
    except ValueError:
        return Refusal(400, "the request target cannot be parsed")
    keys = [value for name, value in request.headers if name == b"sec-websocket-key"]
    if len(keys) != 1 or not _is_key(keys[0]):
        return Refusal(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value")
    return None


def _is_key(value: bytes) -> bool:
    try:
        return len(base64.b64decode(value.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _http_version(handshake: H11Handshake) -> bytes | None:
    # wsproto does not pass the HTTP version on; its h11 connection knows it.
    h11_connection = getattr(handshake, "_h11_connection", None)
    version = getattr(h11_connection, "their_http_version", None)
    return version if isinstance(version, bytes) else None


async def receive_some(stream: trio.abc.Stream, size: int) -> bytes:
    """Up to ``size`` bytes from ``stream``; ``b""`` once the peer or the stream is gone."""
    try:
        return bytes(await stream.receive_some(size))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


def _rejection(handshake: H11Handshake, status: int, body: bytes) -> bytes:
    if not body:  # wsproto adds "content-length: 0" itself
        return handshake.send(RejectConnection(status_code=status))
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    data = handshake.send(RejectConnection(status_code=status, headers=headers, has_body=True))
    return data + handshake.send(RejectData(data=body))
