"""The one exception hierarchy of trioconn.

Users never see ``wsproto``, ``trio_websocket`` or ``coredis`` exceptions: they are translated
here, once, at the boundary. trio's distinction is kept: *closed* means a close handshake ended
the connection (with a code); *broken* means the network or the peer went away without one.

    TrioconnError
    ├── ConnectionClosed(code, reason)     a close frame ended the connection
    │   └── ConnectionBroken               no close frame: reset socket, dead link (code 1006)
    │       └── UntrustedCertificate       the server's TLS certificate failed verification
    ├── HandshakeRejected(status, body)    the server answered the opening handshake with 4xx/5xx
    ├── ReconnectFailed(cause)             the client gave up: attempts exhausted or a final code
    ├── ProtocolError(code, message)       a frame broke protocol v1
    ├── ServerError(code, message, ref)    the server answered a client request with ``error``
    ├── RequestTimeout                     ``client.request()`` had no answer within its timeout
    ├── TopicEnded(topic)                  a write to a topic that has been ended
    ├── TooManyTopics(limit)               the hub holds ``max_topics`` and none can be evicted
    ├── HubStopped                         the hub is not running (publishing from a thread)
    ├── BrokerUnavailable                  the broker (Redis) cannot be reached
    ├── RequestRefused(code, message)      a request handler refuses: the client gets that code
    └── PublicationsLost(count)            ``hub.publications()`` fell behind and dropped some
"""

from __future__ import annotations

import re

__all__ = [
    "BrokerUnavailable",
    "ConnectionBroken",
    "ConnectionClosed",
    "HandshakeRejected",
    "HubStopped",
    "ProtocolError",
    "PublicationsLost",
    "ReconnectFailed",
    "RequestRefused",
    "RequestTimeout",
    "ServerError",
    "TooManyTopics",
    "TopicEnded",
    "TrioconnError",
    "UntrustedCertificate",
]


class TrioconnError(Exception):
    """Root of every error trioconn raises on purpose."""


class ConnectionClosed(TrioconnError):
    """A WebSocket close handshake ended the connection.

    Attributes:
        code: the close code (see ``docs/protocol.md`` for the table).
        reason: the close reason, possibly empty.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        code = int(code)  # a plain int, never a library's enum (wsproto's CloseReason is an IntEnum)
        super().__init__(f"connection closed with code {code}" + (f": {reason}" if reason else ""))
        self.code: int = code
        self.reason = reason


class ConnectionBroken(ConnectionClosed):
    """The connection ended without a close frame (the peer or the network failed)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(1006, reason)


class UntrustedCertificate(ConnectionBroken):
    """The server's TLS certificate failed verification: an issuer the client does not trust,
    a name that does not match the host, an expired certificate.

    Retrying cannot fix it, so the client fails at once (the TLS library's error is chained).
    Trust a private CA with ``connect(..., ssl_context=...)``.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.args = ("the server's TLS certificate is not trusted" + (f": {reason}" if reason else ""),)


class HandshakeRejected(TrioconnError):
    """The server refused the WebSocket handshake with an HTTP status (401, 403, 503 …)."""

    def __init__(self, status: int, body: bytes = b"") -> None:
        text = body.decode("utf-8", "replace")[:200]
        super().__init__(f"handshake rejected with HTTP {status}" + (f": {text}" if text else ""))
        self.status = status
        self.body = body


class ReconnectFailed(TrioconnError):
    """The client stopped reconnecting; ``cause`` is the last failure (also ``__cause__``)."""

    def __init__(self, message: str, cause: BaseException | None) -> None:
        super().__init__(message)
        self.cause = cause


class ProtocolError(TrioconnError):
    """A frame that protocol v1 does not allow.

    Attributes:
        code: machine-readable error code, as sent in an ``error`` frame.
        message: what was wrong, for a person.
    """

    def __init__(self, code: str, message: str, ref: object = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref


class ServerError(TrioconnError):
    """The server answered a request (publish, subscribe) with an ``error`` frame."""

    def __init__(self, code: str, message: str, ref: object = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref


class RequestTimeout(TrioconnError):
    """``client.request()`` got no answer within its ``timeout``.

    The message says whether the request was sent (the handler may or may not have run) or
    never left the client (no connection in time). A late answer is ignored.
    """


class TopicEnded(TrioconnError):
    """The topic has been ended; it accepts no more writes."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} has ended and accepts no more writes")
        self.topic = topic


class TooManyTopics(TrioconnError):
    """A new topic was needed but the hub already holds ``max_topics`` that cannot be dropped.

    Writes evict the longest-idle stream topic (or the oldest ended one) before raising this,
    so it means every topic is followed by somebody or holds state.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the hub holds its maximum of {limit} topics and none can be dropped")
        self.limit = limit


class HubStopped(TrioconnError):
    """The hub is not running, so the call cannot reach any subscriber."""


class BrokerUnavailable(TrioconnError):
    """The broker could not be reached; nothing was published."""


_CODE = re.compile(r"[a-z0-9-]{1,64}")


class RequestRefused(TrioconnError):
    """Raised by a request handler to answer the client with an ``error`` of this ``code``.

    The client's ``request`` raises ``ServerError`` with the same ``code`` and ``message``.
    Any other exception from a handler becomes the generic ``request-failed``, so only what the
    handler chose to say reaches the client.

    Args:
        code: 1-64 characters of ``a-z``, ``0-9`` and ``-`` (``"not-found"``, ``"busy"``), so
            clients can match on it.
        message: for a person; sent as is.

    Raises:
        ValueError, TypeError: ``code`` or ``message`` is invalid.
    """

    def __init__(self, code: str, message: str = "") -> None:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if not _CODE.fullmatch(code):
            raise ValueError(f"code must be 1-64 characters of a-z, 0-9 and '-', got {code[:80]!r}")
        if not isinstance(message, str):
            raise TypeError(f"message must be a str, not {type(message).__name__}")
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class PublicationsLost(TrioconnError):
    """``hub.publications()`` fell behind: ``count`` publications were dropped at this point.

    Raised by the iterator where the gap is, once; iterating again continues with the
    publications after it. The publications themselves were stored (their topics have them).
    """

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} publication(s) were dropped: the consumer fell behind")
        self.count = count
