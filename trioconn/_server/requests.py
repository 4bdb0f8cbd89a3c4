"""Request handlers: a client's ``request`` answered by application code, ``hub.on_request``.

Theory of operation
-------------------
A ``request`` frame names a topic and carries a ``ref``. The connection checks ``authorize``
(action ``"request"``), finds the handler (``RequestHandlers.find``: the exact topic first,
then the longest matching prefix), and runs it as a task of the connection's own task group
(``answer``), so a handler never outlives the connection that asked: when the client goes, its
handlers are cancelled. Each handler is bounded by ``request_timeout`` and each connection by
``max_requests_in_flight``. What the handler returns becomes the ``reply``; a
``RequestRefused`` it raises becomes an ``error`` with its code; anything else it raises is a bug
in the handler: the client gets the generic ``request-failed`` and the server's log gets the
traceback (at most one line per handler per 10 s). No I/O but anyio's cancel scopes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from .._core.exceptions import RequestRefused
from .._core.protocol import Error, ErrorCode, Reply, encode_data
from .._core.protocol import Request as RequestFrame
from .._core.ratelog import RateLimitedLog
from .patterns import TopicPattern

__all__ = ["Request", "RequestHandler", "RequestHandlers", "answer"]


@attrs.frozen
class Request:
    """A client's request, as a handler receives it.

    Attributes:
        topic: the topic the client named (a handler for a prefix sees which one).
        data: the JSON value the client sent (None if it sent none).
        identity: the client's identity, as ``authenticate`` returned it.
        session: the client's session id.
    """

    topic: str
    data: Any
    identity: Any
    session: str


#: ``async def handler(request: Request) -> Any`` (a plain function works too): the JSON value
#: it returns is the reply.
RequestHandler = Callable[[Request], Any]


class RequestHandlers:
    """The handlers of one hub, by topic pattern (see ``patterns``)."""

    def __init__(self) -> None:
        self._exact: dict[str, tuple[TopicPattern, RequestHandler]] = {}
        #: longest prefix first, so the most specific handler wins
        self._prefixes: list[tuple[TopicPattern, RequestHandler]] = []

    def add(self, pattern: TopicPattern, handler: RequestHandler) -> None:
        """Register ``handler``; ``ValueError`` if ``pattern`` already has one."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        taken = (
            pattern.text in self._exact
            if not pattern.prefix
            else any(p == pattern for p, _ in self._prefixes)
        )
        if taken:
            raise ValueError(f"{str(pattern)!r} already has a request handler")
        if pattern.prefix:
            self._prefixes.append((pattern, handler))
            self._prefixes.sort(key=lambda entry: len(entry[0].text), reverse=True)
        else:
            self._exact[pattern.text] = (pattern, handler)

    def find(self, topic: str) -> tuple[TopicPattern, RequestHandler] | None:
        """The handler for ``topic`` and the pattern it was registered with, or None."""
        found = self._exact.get(topic)
        if found is not None:
            return found
        for pattern, handler in self._prefixes:
            if pattern.matches(topic):
                return pattern, handler
        return None


async def answer(
    frame: RequestFrame,
    request: Request,
    found: tuple[TopicPattern, RequestHandler],
    *,
    seconds: float,
    log: RateLimitedLog,
    encode: Callable[[Any], str] = encode_data,
) -> str:
    """Run the handler within ``seconds`` (``request_timeout``); return the ``reply`` or ``error``.

    ``encode`` turns the handler's answer into JSON text (the hub's ``json_dumps``, checked); an
    answer it cannot encode is ``request-failed``, like a handler that raised.

    Cancellation from outside (the connection ended) propagates: there is nobody to answer.
    """
    pattern, handler = found
    result: Any = None
    try:
        with anyio.move_on_after(seconds) as scope:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
        if scope.cancelled_caught:
            return Error(
                ErrorCode.REQUEST_TIMEOUT.value,
                f"the request was not answered within {seconds:g}s",
                frame.ref,
                frame.topic,
            ).to_json()
        return Reply(frame.ref, None).to_json(data_json=encode(result))
    except RequestRefused as exc:
        return Error(exc.code, exc.message, frame.ref, frame.topic).to_json()
    except Exception:
        log.exception(
            f"request {pattern}",
            "the request handler for %r failed on topic %r (the client got request-failed)",
            str(pattern),
            frame.topic,
        )
        return Error(ErrorCode.REQUEST_FAILED.value, "the request failed", frame.ref, frame.topic).to_json()
