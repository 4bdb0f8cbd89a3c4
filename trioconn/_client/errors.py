"""The client's boundary: third-party exceptions become trioconn exceptions here, and only here.

trio-websocket, wsproto, h11, trio and the OS raise their own types, sometimes several at once inside
an ``ExceptionGroup`` from a nursery. ``translate`` maps one failure of one connection to the one
trioconn exception that describes it. ``redact`` keeps a token out of every message built here:
a server may echo the request (and its ``?token=``) in a refusal, and a foreign exception may
quote a header value, so any text taken from outside is scrubbed, and a foreign exception whose
text holds the token is not chained.
"""

from __future__ import annotations

import ssl
from typing import NoReturn

import h11
import trio
import trio_websocket
import wsproto.utilities

from .._core.exceptions import (
    ConnectionBroken,
    ConnectionClosed,
    HandshakeRejected,
    TrioconnError,
    UntrustedCertificate,
)

__all__ = ["certificate_error", "leaves", "redact", "reraise", "translate", "unwrap_nursery_group"]

REDACTED = "<redacted>"


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced."""
    if secret and secret in text:
        return text.replace(secret, REDACTED)
    return text


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc`` (trio raises ``BrokenResourceError``
    from it), or None: followed through ``__cause__`` and ``__context__``, a few links deep."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def _translate_one(exc: BaseException, secret: str | None) -> BaseException:
    if isinstance(exc, TrioconnError):
        return exc
    new: TrioconnError
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = exc.body or b""
        if secret:
            body = body.replace(secret.encode(), REDACTED.encode())
        new = HandshakeRejected(exc.status_code, body)
    elif isinstance(exc, trio_websocket.ConnectionClosed):
        reason = exc.reason
        if reason is None or reason.code == 1006:
            new = ConnectionBroken(redact((reason.reason if reason else None) or "connection lost", secret))
        else:
            new = ConnectionClosed(int(reason.code), redact(reason.reason or "", secret))
    elif isinstance(exc, wsproto.utilities.ProtocolError | h11.ProtocolError):
        # trio-websocket lets these escape, e.g. for an answer to the handshake that is not
        # HTTP (it then fails sending a refusal, as a server would): name what the peer did.
        origin = (
            exc.__context__ if isinstance(exc.__context__, wsproto.utilities.RemoteProtocolError) else exc
        )
        new = ConnectionBroken(redact(f"WebSocket protocol error: {origin}", secret))
    elif isinstance(
        exc,
        OSError | trio.BrokenResourceError | trio.ClosedResourceError | trio_websocket.HandshakeError,
    ):
        bad = certificate_error(exc)
        if bad is not None:
            # Final, unlike other transport failures (see EndKind.CERTIFICATE); chain the TLS error.
            exc, new = bad, UntrustedCertificate(redact(str(bad), secret))
        else:
            new = ConnectionBroken(redact(str(exc) or type(exc).__name__, secret))
    else:
        return exc
    if secret and secret in f"{exc!s}{exc!r}":
        new.__suppress_context__ = True  # the original quotes the token: do not carry it along
    else:
        new.__cause__ = exc
    return new


def translate(exc: BaseException, secret: str | None = None) -> BaseException:
    """Map one connection's failure (possibly inside an ExceptionGroup) to a trioconn exception.

    A group whose only non-``Cancelled`` member is one error becomes that error: the
    ``Cancelled`` siblings come from the nursery reacting to it. Several failures of one
    connection that all translate become the most specific one (a refusal or a close code
    wins over the "broken" that followed it). Anything unknown (a bug) comes back unchanged.

    Args:
        exc: what the connection's nursery raised.
        secret: the token of this attempt, kept out of every message.
    """
    real = [leaf for leaf in leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    if not real:
        return exc
    translated = [_translate_one(leaf, secret) for leaf in real]
    if len(translated) == 1:
        return translated[0]
    known = [t for t in translated if isinstance(t, TrioconnError)]
    if len(known) == len(translated):
        return min(known, key=lambda error: isinstance(error, ConnectionBroken))
    return exc


def unwrap_nursery_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Undo the one level of grouping that ``connect()``'s own nursery adds.

    If exactly one member is not a ``Cancelled``, that member comes back as it is, even when it
    is itself an ``ExceptionGroup`` the user's code raised. With no such member, the first
    ``Cancelled``; with several, the group.
    """
    real = [sub for sub in group.exceptions if not all(isinstance(x, trio.Cancelled) for x in leaves(sub))]
    if len(real) == 1:
        return real[0]
    if not real:
        return leaves(group)[0]
    return group


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` without chaining the group it was found in as its context."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
