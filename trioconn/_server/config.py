"""A hub's settings (``HubConfig``, defaults in one place) and the handshake value its policy sees.

No I/O here: a front end turns its upgrade request into a ``HandshakeRequest`` and the hub decides
(origin, ``authenticate``) what happens to it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Literal, TypedDict, get_args

import attrs

from .._core.codec import JsonDumps, JsonLoads
from .._core.protocol import MAX_HEARTBEAT, MIN_HEARTBEAT, encode_data

__all__ = [
    "Allow",
    "Authenticate",
    "Authorize",
    "HandshakeRequest",
    "HubConfig",
    "HubSettings",
    "RefuseWith",
]


def _origins(value: Collection[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError("allowed_origins must be a collection of origins, not a single string")
    origins = frozenset(value)
    for origin in origins:
        if not isinstance(origin, str):
            raise TypeError(f"allowed_origins must hold str, not {type(origin).__name__}")
    return origins


@attrs.frozen
class HandshakeRequest:
    """What ``authenticate`` sees of a client's opening handshake.

    Attributes:
        path: the request target without the query string.
        query: query-string parameters (the last value wins).
        headers: request headers, names lower-cased.
        token: the bearer token, from ``?token=`` or ``Authorization: Bearer``.
        remote: the peer's address, for logs.
        origins: every ``Origin`` header the request carried (a browser sends one).
    """

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    token: str | None
    remote: str
    origins: tuple[str, ...] = ()


def _presence_info(_instance: Any, _attribute: Any, value: Any) -> None:
    try:
        encode_data(value)
    except TypeError as exc:
        raise TypeError(f"Allow(info=...) must be JSON: other subscribers are sent it ({exc})") from None


def _flag(_instance: Any, _attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"Allow(presence=...) must be a bool, not {type(value).__name__}")


@attrs.frozen
class Allow:
    """What ``authorize`` may return instead of ``True`` to allow a subscribe with presence.

    ``return trioconn.Allow(presence=True, info={"name": user.name})`` lets the client in and
    sends it presence for the topic: the current members in its ``subscribed`` answer, then a
    ``join``/``leave`` frame whenever another subscriber comes or goes. ``True`` is the same as
    ``Allow()``: allowed, no presence frames, anonymous.

    Attributes:
        presence: send this subscriber presence frames for the topic.
        info: what *other* subscribers (those with presence) are shown of this one: any JSON.
            None (the default) shows it anonymously. The application always sees the identity
            itself (``hub.presence(topic)``); clients never do.

    For ``"publish"`` and ``"request"`` an ``Allow`` means allowed; its fields are not used.

    Raises:
        TypeError: ``presence`` is not a bool, or ``info`` is not JSON.
    """

    presence: bool = attrs.field(default=False, validator=_flag)
    info: Any = attrs.field(default=None, validator=_presence_info)


Authenticate = Callable[[HandshakeRequest], Any]
Authorize = Callable[[Any, str, str], "bool | Allow | Awaitable[bool | Allow]"]


def _positive(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive, finite number of seconds or items, got {value!r}")

    return check


def _positive_int(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")

    return check


#: How a hub refuses a handshake: an HTTP status, or an accepted upgrade closed at once.
RefuseWith = Literal["http", "close"]


def _refuse_with(_instance: Any, _attribute: Any, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"refuse_with must be a str, 'http' or 'close', not {type(value).__name__}")
    if value not in get_args(RefuseWith):
        raise ValueError(
            f"refuse_with must be 'http' (refuse with an HTTP status) or 'close' (accept, then "
            f"close with a code a browser can see), got {value!r}"
        )


def _optional_callable(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None")

    return check


@attrs.frozen(kw_only=True)
class HubConfig:
    """A hub's settings, validated once: the one place their defaults are written down.

    ``Hub(**settings)`` builds one; the reasons behind every default are in ``docs/server.md``.

    Args:
        heartbeat_interval: seconds between the server's pings; sent to clients in ``welcome``.
        heartbeat_timeout: a connection silent this long is closed with 4000. Must exceed
            twice the interval.
        history_size: events kept per stream topic for clients that resume.
        history_bytes: encoded bytes kept per stream topic, at most (oldest events go first).
        idle_retention: seconds a stream topic with no subscriber and no write is kept; later
            subscribers get ``reset`` (a new epoch).
        max_topics: topics held at most; a write that needs a new one evicts the longest-idle
            stream (or oldest ended) topic, and raises ``TooManyTopics`` if none can go.
        outbox_size: frames that may wait for one client before it counts as slow (4001).
        outbox_bytes: the memory budget of one client: bytes queued for it, whatever they are.
            Answers to its requests may use half (then its requests wait); events that do not
            fit close it with 4001.
        max_frame_size: largest client frame in bytes; larger ones close with 1009.
        max_batch_bytes: about how much one outgoing message carries when frames are queued.
        send_timeout: a single send that takes longer closes the connection with 4001.
        drain_timeout: how long a graceful close (1000, 1001) may take to flush queued frames.
        handshake_timeout: how long a client may take, from accept, to send its upgrade request
            (TLS included); then the socket is closed.
        max_handshakes: at most this many accepted sockets may be waiting for their upgrade
            request; beyond it ``serve`` stops accepting and new clients wait in the kernel's
            listen backlog until one finishes or times out.
        max_sockets: at most this many sockets in all (handshakes, connections, closing ones);
            beyond it ``serve`` stops accepting in the same way. None: limited only by the
            process's descriptors (running out pauses accepts briefly, logged once per 10 s).
        ended_retention: seconds an ended topic is kept so late subscribers see its end.
        max_connections: beyond this many, new clients are accepted and closed with 1013.
        max_subscriptions: per connection.
        allowed_origins: if given, a handshake whose ``Origin`` is not listed gets HTTP 403.
            Clients that send no ``Origin`` (non-browser clients) are not affected.
        authenticate: ``(HandshakeRequest) -> identity`` (sync or async). Returning None
            rejects with HTTP 401; raising ``HandshakeRejected(403)`` rejects with that status.
        refuse_with: how a refused handshake (origin, ``authenticate``, shutting down) is
            answered. ``"http"``: with its HTTP status. ``"close"``: the upgrade is accepted
            and closed at once, before ``welcome``, with a close code (401 → 4401, 403 → 4403,
            503 → 1001, 500 → 1011, other retryable statuses → 1013, others → 1008) and the
            reason; browsers show every refused upgrade as 1006, but they see a close code.
        authorize: ``(identity, topic, action) -> bool | Allow`` (sync or async), action being
            ``"subscribe"``, ``"publish"`` or ``"request"``. Without it, subscribing and
            requests (to topics with a handler) are allowed and client publishing is refused.
            Returning ``Allow(presence=True, info=...)`` for a subscribe sends that client
            presence frames (see ``Allow``).
        request_timeout: seconds a request handler may take; then the client gets
            ``request-timeout`` and the handler is cancelled.
        max_requests_in_flight: requests of one connection that may be unanswered at once;
            more are refused with ``too-many-requests``.
        json_dumps: encodes published data and state values as JSON text, once per write
            (``str`` or UTF-8 ``bytes``, e.g. ``orjson.dumps`` or
            ``functools.partial(json.dumps, default=...)``). None: the standard library, strict.
            Frames stay JSON text encoded by trioconn; the produced text is checked (finite
            numbers, at most 32 levels deep) and a hook that raises makes ``publish`` raise
            ``TypeError``. With ``RedisBroker`` it encodes what this process writes. It also
            encodes what request handlers answer.
        json_loads: decodes what application code reads: the data of clients' ``publish``
            (before it is stored) and ``request`` frames (an exception it raises refuses them
            with ``invalid-field``), and the items of ``hub.subscribe``. None: data as parsed.

    Raises:
        ValueError, TypeError: a setting is invalid; the message says which and why.
    """

    heartbeat_interval: float = attrs.field(default=15.0, validator=_positive("heartbeat_interval"))
    heartbeat_timeout: float = attrs.field(default=45.0, validator=_positive("heartbeat_timeout"))
    history_size: int = attrs.field(default=2000, validator=_positive_int("history_size"))
    history_bytes: int = attrs.field(default=1 << 20, validator=_positive_int("history_bytes"))
    idle_retention: float = attrs.field(default=3600.0, validator=_positive("idle_retention"))
    max_topics: int = attrs.field(default=100_000, validator=_positive_int("max_topics"))
    outbox_size: int = attrs.field(default=500, validator=_positive_int("outbox_size"))
    outbox_bytes: int = attrs.field(default=2 << 20, validator=_positive_int("outbox_bytes"))
    max_frame_size: int = attrs.field(default=65536, validator=_positive_int("max_frame_size"))
    max_batch_bytes: int = attrs.field(default=65536, validator=_positive_int("max_batch_bytes"))
    send_timeout: float = attrs.field(default=10.0, validator=_positive("send_timeout"))
    drain_timeout: float = attrs.field(default=5.0, validator=_positive("drain_timeout"))
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive("handshake_timeout"))
    max_handshakes: int = attrs.field(default=1024, validator=_positive_int("max_handshakes"))
    max_sockets: int | None = attrs.field(default=None)
    ended_retention: float = attrs.field(default=300.0, validator=_positive("ended_retention"))
    max_connections: int | None = attrs.field(default=None)
    max_subscriptions: int = attrs.field(default=1000, validator=_positive_int("max_subscriptions"))
    allowed_origins: frozenset[str] | None = attrs.field(default=None, converter=_origins)
    authenticate: Authenticate | None = attrs.field(
        default=None, validator=_optional_callable("authenticate")
    )
    authorize: Authorize | None = attrs.field(default=None, validator=_optional_callable("authorize"))
    refuse_with: RefuseWith = attrs.field(default="http", validator=_refuse_with)
    request_timeout: float = attrs.field(default=10.0, validator=_positive("request_timeout"))
    max_requests_in_flight: int = attrs.field(default=16, validator=_positive_int("max_requests_in_flight"))
    json_dumps: JsonDumps | None = attrs.field(default=None, validator=_optional_callable("json_dumps"))
    json_loads: JsonLoads | None = attrs.field(default=None, validator=_optional_callable("json_loads"))

    def __attrs_post_init__(self) -> None:
        for name in ("heartbeat_interval", "heartbeat_timeout"):
            value = getattr(self, name)
            if not MIN_HEARTBEAT <= value <= MAX_HEARTBEAT:
                raise ValueError(
                    f"{name} must be from {MIN_HEARTBEAT} to {MAX_HEARTBEAT} seconds, got {value!r}: "
                    "clients refuse a welcome outside these bounds"
                )
        if self.heartbeat_interval >= self.heartbeat_timeout / 2:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be less than half of "
                f"heartbeat_timeout ({self.heartbeat_timeout}s): a client must be able to miss one "
                "ping and still be heard from before the deadline"
            )
        if self.max_connections is not None:
            _positive_int("max_connections")(None, None, self.max_connections)
        if self.max_sockets is not None:
            _positive_int("max_sockets")(None, None, self.max_sockets)


class HubSettings(TypedDict, total=False):
    """The keyword arguments ``Hub(...)`` accepts besides ``broker``: ``HubConfig``'s fields.

    For type checkers only; a test keeps the two in step.
    """

    heartbeat_interval: float
    heartbeat_timeout: float
    history_size: int
    history_bytes: int
    idle_retention: float
    max_topics: int
    outbox_size: int
    outbox_bytes: int
    max_frame_size: int
    max_batch_bytes: int
    send_timeout: float
    drain_timeout: float
    handshake_timeout: float
    max_handshakes: int
    max_sockets: int | None
    ended_retention: float
    max_connections: int | None
    max_subscriptions: int
    allowed_origins: Collection[str] | None
    authenticate: Authenticate | None
    authorize: Authorize | None
    refuse_with: RefuseWith
    request_timeout: float
    max_requests_in_flight: int
    json_dumps: JsonDumps | None
    json_loads: JsonLoads | None
