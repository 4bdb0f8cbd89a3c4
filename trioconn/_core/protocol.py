"""Wire protocol v1: frames, their validation, and the close-code table. No I/O, no trio.

Theory of operation
-------------------
Every WebSocket message is one JSON object with a ``"type"``. ``parse_client_frame`` and
``parse_server_frames`` turn text into small frozen frame objects, or raise ``ProtocolError``
with a machine-readable code that the server echoes in an ``error`` frame. Unknown fields are
ignored so that later versions can add them. Each frame class has ``to_json()``; the event path
uses ``encode_event``/``encode_batch`` directly because one publication is encoded once and the
same text goes to every subscriber (a batch is built by joining already-encoded frames).

``CLOSE_CODES`` is the single table of close codes that both the server (which picks a code) and
the client (which decides whether to reconnect) read. See ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias

import attrs

from .exceptions import ProtocolError

__all__ = [
    "CLOSE_CODES",
    "HANDSHAKE_RETRY_STATUSES",
    "PROTOCOL_VERSION",
    "Batch",
    "ClientFrame",
    "CloseAction",
    "CloseCodeInfo",
    "End",
    "Error",
    "ErrorCode",
    "Event",
    "Join",
    "Leave",
    "PresenceMember",
    "Ping",
    "Pong",
    "Publish",
    "Published",
    "Reply",
    "Request",
    "Reset",
    "ServerFrame",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
    "close_action",
    "check_data_json",
    "encode_batch",
    "encode_data",
    "encode_event",
    "encode_event_json",
    "json_depth_exceeds",
    "parse_client_frame",
    "parse_server_frames",
    "refusal_close_code",
    "validate_topic",
]

PROTOCOL_VERSION: Final = 1
MAX_TOPIC_LENGTH: Final = 256
MAX_REF_LENGTH: Final = 128
#: How deeply published data may nest (arrays and objects). Deeper data is refused when it is
#: published (``TypeError`` from the hub, ``invalid-field`` over the wire) and a received frame
#: nested deeper than ``MAX_FRAME_DEPTH`` is ``invalid-json``: deep nesting is never needed for
#: live data, and Python's JSON code recurses, so an unbounded depth is a way to crash a peer.
MAX_DATA_DEPTH: Final = 32
#: A frame adds at most three levels around its data (a ``batch``, its ``frames`` list, an ``event``).
MAX_FRAME_DEPTH: Final = MAX_DATA_DEPTH + 3
#: The heartbeat ``interval`` and ``timeout`` a ``welcome`` may announce, in seconds. A client
#: refuses anything else (``invalid-field``): 0 would make it give up on every link at once, and
#: a huge value would switch dead-link detection off.
MIN_HEARTBEAT: Final = 0.01
MAX_HEARTBEAT: Final = 3600.0

Ref: TypeAlias = "str | int | None"

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _NotFinite(ValueError):
    """A number in received JSON that does not fit a float (``1e999``)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"number {text[:40]} is out of range")
    return value


_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\{\}|\[\]")


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True if JSON ``text`` nests arrays/objects more than ``limit`` deep. Linear, no recursion.

    Counting brackets settles almost every message at C speed; only a message with more
    brackets than ``limit`` is stripped of its strings and peeled one level per regex pass.
    Malformed text is left for the JSON parser to refuse.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    for _ in range(limit):
        peeled = _INNERMOST.sub("", brackets)
        if len(peeled) == len(brackets):
            return False  # unbalanced: not valid JSON, the parser says so
        brackets = peeled
        if not brackets:
            return False
    return True


def dumps(obj: Any) -> str:
    """Encode ``obj`` as compact JSON; raise ``TypeError`` for anything JSON cannot carry."""
    try:
        return _dumps(obj)
    except ValueError as exc:  # NaN / Infinity
        raise TypeError(f"data is not JSON-serializable: {exc}") from None
    except RecursionError:
        raise TypeError(f"data is nested more than {MAX_DATA_DEPTH} levels deep") from None


def encode_data(data: Any) -> str:
    """Encode published data; ``TypeError`` if JSON cannot carry it or it nests too deep.

    Every path that stores a write (hub, thread handle, Redis broker, client ``publish``) goes
    through here, so nothing is stored that a peer would refuse to parse.
    """
    text = dumps(data)
    if json_depth_exceeds(text, MAX_DATA_DEPTH):
        raise TypeError(f"data is nested more than {MAX_DATA_DEPTH} levels deep")
    return text


def check_data_json(text: str) -> str:
    """Return ``text`` if it is data ``encode_data`` could have made, else raise ``TypeError``.

    For data encoded by someone else (a ``json_dumps`` hook): one JSON value, finite numbers
    only, nested at most ``MAX_DATA_DEPTH`` deep, so nothing reaches a peer that it would refuse.
    """
    if json_depth_exceeds(text, MAX_DATA_DEPTH):
        raise TypeError(f"data is nested more than {MAX_DATA_DEPTH} levels deep")
    try:
        _loads(text)
    except ValueError as exc:  # NaN, Infinity, 1e999, not JSON at all
        raise TypeError(f"data is not strict JSON: {exc}") from None
    return text


class ErrorCode(enum.StrEnum):
    """Machine-readable codes carried by ``error`` frames."""

    INVALID_JSON = "invalid-json"
    NOT_AN_OBJECT = "not-an-object"
    UNKNOWN_TYPE = "unknown-type"
    INVALID_FIELD = "invalid-field"
    BINARY_FRAME = "binary-frame"
    FORBIDDEN = "forbidden"
    NOT_SUBSCRIBED = "not-subscribed"
    ALREADY_SUBSCRIBED = "already-subscribed"
    TOPIC_ENDED = "topic-ended"
    WRONG_KIND = "wrong-kind"
    TOO_MANY_SUBSCRIPTIONS = "too-many-subscriptions"
    TOO_MANY_TOPICS = "too-many-topics"
    INTERNAL = "internal"
    #: a ``request`` to a topic that has no request handler
    NO_HANDLER = "no-handler"
    #: the request handler raised an unexpected exception (details only in the server's log)
    REQUEST_FAILED = "request-failed"
    #: the request handler did not answer within the hub's ``request_timeout``
    REQUEST_TIMEOUT = "request-timeout"
    #: more than ``max_requests_in_flight`` requests of one connection are unanswered
    TOO_MANY_REQUESTS = "too-many-requests"


# --------------------------------------------------------------------------------------------
# Close codes


class CloseAction(enum.Enum):
    """What a client does when the connection closes with a given code."""

    #: The work is done: end normally, never reconnect.
    DONE = "done"
    #: A final failure (policy, auth, protocol): raise, never reconnect.
    FAIL = "fail"
    #: Transient: reconnect with backoff and resume subscriptions.
    RECONNECT = "reconnect"
    #: Credentials expired: reconnect once with a fresh token if a provider exists, else fail.
    REAUTH = "reauth"


@attrs.frozen
class CloseCodeInfo:
    """One row of the close-code table."""

    code: int
    name: str
    action: CloseAction
    meaning: str


def _table(*rows: CloseCodeInfo) -> Mapping[int, CloseCodeInfo]:
    return {row.code: row for row in rows}


_D, _F, _R, _A = CloseAction.DONE, CloseAction.FAIL, CloseAction.RECONNECT, CloseAction.REAUTH

#: The one close-code table. RFC 6455 reserves 4000-4999 for applications.
CLOSE_CODES: Final[Mapping[int, CloseCodeInfo]] = _table(
    CloseCodeInfo(1000, "normal", _D, "work done; the client ends and does not reconnect"),
    CloseCodeInfo(1001, "going-away", _R, "server shutting down; reconnect to another or later"),
    CloseCodeInfo(1002, "protocol-error", _F, "WebSocket protocol violation"),
    CloseCodeInfo(1003, "unsupported-data", _F, "data the endpoint cannot accept"),
    CloseCodeInfo(1006, "abnormal", _R, "no close frame: reset socket, dead link (never sent)"),
    CloseCodeInfo(1007, "invalid-payload", _F, "text frame that is not UTF-8"),
    CloseCodeInfo(1008, "policy", _F, "policy violation, e.g. origin refused"),
    CloseCodeInfo(1009, "too-big", _F, "frame larger than the configured maximum"),
    CloseCodeInfo(1011, "internal-error", _R, "server error; reconnect"),
    CloseCodeInfo(1012, "restart", _R, "server restarting; reconnect"),
    CloseCodeInfo(1013, "try-again-later", _R, "overloaded (connection limit); back off"),
    CloseCodeInfo(4000, "heartbeat-timeout", _R, "no frame within the heartbeat timeout"),
    CloseCodeInfo(4001, "slow-consumer", _R, "client fell behind; reconnect and resume"),
    CloseCodeInfo(4401, "unauthorized", _A, "credentials expired or missing"),
    CloseCodeInfo(4403, "forbidden", _F, "identity not allowed"),
)


def close_action(code: int, overrides: Mapping[int, CloseAction] | None = None) -> CloseAction:
    """Look up what a client does after close ``code``.

    Codes outside the table: 1xxx codes the RFC calls errors fail, 4xxx application codes and
    anything else reconnect (an unknown code is not evidence that retrying is futile).
    """
    if overrides and code in overrides:
        return overrides[code]
    info = CLOSE_CODES.get(code)
    if info is not None:
        return info.action
    if 1000 <= code < 3000:
        return CloseAction.FAIL
    return CloseAction.RECONNECT


#: Handshake statuses that say "later" rather than "no": timeouts, overload, server errors.
#: Every other refusal (401, 403, 404 …) is final: retrying cannot fix it.
HANDSHAKE_RETRY_STATUSES: Final = frozenset({408, 425, 429} | set(range(500, 600)))


def refusal_close_code(status: int) -> int:
    """The close code that carries a refused handshake's HTTP ``status`` to a browser.

    A hub with ``refuse_with="close"`` accepts a handshake it refuses and closes it at once
    with this code, because a browser shows every refused upgrade as 1006. The code is chosen
    so that a client following ``CLOSE_CODES`` decides as it would on the status, except that
    401 becomes 4401 (a fresh token is worth one try):

    - 401 → 4401 (reauth), 403 → 4403 (fail);
    - 503 (shutting down) → 1001, 500 (the ``authenticate`` hook raised) → 1011,
      408, 425, 429 and every other 5xx → 1013 (all reconnect with backoff);
    - any other status → 1008 (policy: fail).
    """
    if status == 401:
        return 4401
    if status == 403:
        return 4403
    if status == 503:
        return 1001
    if status == 500:
        return 1011
    if status in HANDSHAKE_RETRY_STATUSES:
        return 1013
    return 1008


# --------------------------------------------------------------------------------------------
# Field validation


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name, else raise ``ValueError`` saying why."""
    if not isinstance(topic, str):
        raise ValueError(f"topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("topic must not be empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise ValueError(f"topic is longer than {MAX_TOPIC_LENGTH} characters")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in topic):
        raise ValueError("topic must not contain control characters")
    return topic


def _bad(field: str, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD.value, f"field {field!r} {why}")


def _topic(obj: Mapping[str, Any], field: str = "topic") -> str:
    try:
        return validate_topic(obj.get(field))
    except ValueError as exc:
        raise _bad(field, str(exc).removeprefix("topic ")) from None


def _int(obj: Mapping[str, Any], field: str, *, required: bool = True) -> int | None:
    value = obj.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(field, "must be a non-negative integer")
    return value


def _seconds(obj: Mapping[str, Any], field: str, low: float, high: float) -> float:
    """A duration within [low, high]; compared before any float conversion, so a 400-digit
    integer is refused instead of raising ``OverflowError``."""
    value = obj.get(field)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(field, f"must be a number of seconds from {low:g} to {high:g}")
    return float(value)


def _str(obj: Mapping[str, Any], field: str, *, required: bool = True) -> str | None:
    value = obj.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    return value


def _ref(obj: Mapping[str, Any]) -> Ref:
    ref = obj.get("ref")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise _bad("ref", "must be a string or an integer")
    if isinstance(ref, str) and len(ref) > MAX_REF_LENGTH:
        raise _bad("ref", f"must be at most {MAX_REF_LENGTH} characters")
    return ref


def _with(obj: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """Add the optional fields that are not None; the wire omits absent values."""
    for key, value in optional.items():
        if value is not None:
            obj[key] = value
    return obj


# --------------------------------------------------------------------------------------------
# Client → server frames


@attrs.frozen
class Subscribe:
    """Start following ``topic``; resume after ``offset`` of ``epoch``, or replay ``last`` events."""

    topic: str
    ref: Ref = None
    epoch: str | None = None
    offset: int | None = None
    last: int | None = None

    def to_json(self) -> str:
        resume = None if self.epoch is None else {"epoch": self.epoch, "offset": self.offset or 0}
        return dumps(
            _with({"type": "subscribe", "topic": self.topic}, ref=self.ref, resume=resume, last=self.last)
        )


@attrs.frozen
class Unsubscribe:
    """Stop following ``topic``."""

    topic: str
    ref: Ref = None

    def to_json(self) -> str:
        return dumps(_with({"type": "unsubscribe", "topic": self.topic}, ref=self.ref))


@attrs.frozen
class Pong:
    """Answer to the server's ``ping`` with the same ``id``."""

    id: int

    def to_json(self) -> str:
        return dumps({"type": "pong", "id": self.id})


@attrs.frozen
class Publish:
    """Publish ``data`` to stream ``topic``; allowed only if the server's authorize hook says so."""

    topic: str
    data: Any
    ref: Ref = None

    def to_json(self, *, data_json: str | None = None) -> str:
        """Encode the frame; ``data_json`` is the data as already-encoded JSON (``data`` unused)."""
        if data_json is None:
            return dumps(_with({"type": "publish", "topic": self.topic, "data": self.data}, ref=self.ref))
        return (
            dumps(_with({"type": "publish", "topic": self.topic}, ref=self.ref))[:-1]
            + ',"data":'
            + data_json
            + "}"
        )


@attrs.frozen
class Request:
    """Ask the server's request handler for ``topic``; answered by ``reply`` or ``error`` with
    the same ``ref`` (required: it is how the client matches the answer)."""

    topic: str
    data: Any
    ref: str | int

    def to_json(self, *, data_json: str | None = None) -> str:
        """Encode the frame; ``data_json`` is the data as already-encoded JSON (``data`` unused)."""
        if data_json is None:
            return dumps({"type": "request", "topic": self.topic, "data": self.data, "ref": self.ref})
        head = dumps({"type": "request", "topic": self.topic, "ref": self.ref})
        return head[:-1] + ',"data":' + data_json + "}"


ClientFrame: TypeAlias = Subscribe | Unsubscribe | Pong | Publish | Request


def _parse_subscribe(obj: Mapping[str, Any]) -> Subscribe:
    topic, ref = _topic(obj), _ref(obj)
    resume = obj.get("resume")
    epoch = offset = None
    if resume is not None:
        if not isinstance(resume, dict):
            raise _bad("resume", "must be an object with 'epoch' and 'offset'")
        epoch = _str(resume, "epoch")
        offset = _int(resume, "offset")
    last = _int(obj, "last", required=False)
    return Subscribe(topic, ref, epoch, offset, last)


def _parse_publish(obj: Mapping[str, Any]) -> Publish:
    if "data" not in obj:
        raise _bad("data", "is required")
    return Publish(_topic(obj), obj["data"], _ref(obj))


def _parse_request(obj: Mapping[str, Any]) -> Request:
    topic, ref = _topic(obj), _ref(obj)
    if ref is None:
        raise _bad("ref", "is required: the answer carries it")
    return Request(topic, obj.get("data"), ref)


_CLIENT_PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], ClientFrame]]] = {
    "subscribe": _parse_subscribe,
    "unsubscribe": lambda o: Unsubscribe(_topic(o), _ref(o)),
    "pong": lambda o: Pong(_int(o, "id") or 0),
    "publish": _parse_publish,
    "request": _parse_request,
}


def _load_object(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes | bytearray):
        raise ProtocolError(ErrorCode.BINARY_FRAME.value, "binary frames are not part of protocol v1")
    if json_depth_exceeds(text, MAX_FRAME_DEPTH):
        raise ProtocolError(
            ErrorCode.INVALID_JSON.value, f"frame is nested more than {MAX_FRAME_DEPTH} levels deep"
        )
    try:
        obj = _loads(text)
    except _NotFinite as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD.value, f"numbers must be finite: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON.value, f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            ErrorCode.NOT_AN_OBJECT.value, f"frame must be a JSON object, not {type(obj).__name__}"
        )
    return obj


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse one client→server message.

    Raises:
        ProtocolError: with ``code`` from ``ErrorCode`` and, when the frame carried one, ``ref``.
    """
    obj = _load_object(text)
    kind = obj.get("type")
    parser = _CLIENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        error = ProtocolError(ErrorCode.UNKNOWN_TYPE.value, f"unknown frame type {kind!r}")
    else:
        try:
            return parser(obj)
        except ProtocolError as exc:
            error = exc
    ref = obj.get("ref")
    error.ref = ref if isinstance(ref, str | int) and not isinstance(ref, bool) else None
    raise error


# --------------------------------------------------------------------------------------------
# Server → client frames


@attrs.frozen
class Welcome:
    """First frame on every connection: who we are and the heartbeat the client must follow."""

    session: str
    heartbeat_interval: float
    heartbeat_timeout: float
    max_frame_size: int
    version: int = PROTOCOL_VERSION

    def to_json(self) -> str:
        return dumps(
            {
                "type": "welcome",
                "version": self.version,
                "session": self.session,
                "heartbeat": {"interval": self.heartbeat_interval, "timeout": self.heartbeat_timeout},
                "max_frame_size": self.max_frame_size,
            }
        )


@attrs.frozen
class Ping:
    """Heartbeat probe; answer with ``Pong(id)``. ``rtt`` is the last measured round trip (s)."""

    id: int
    rtt: float | None = None

    def to_json(self) -> str:
        return dumps(_with({"type": "ping", "id": self.id}, rtt=self.rtt))


@attrs.frozen
class PresenceMember:
    """One subscriber of a topic as other subscribers see it (``subscribed.presence``).

    Attributes:
        info: what the server's ``authorize`` chose to show of this subscriber (any JSON;
            None for an anonymous one). Never the server's identity object itself.
        session: the subscriber's session id (one per connection; a person with two tabs is
            two members).
        since: when it subscribed, as a Unix time in seconds.
    """

    info: Any
    session: str
    since: float

    def to_obj(self) -> dict[str, Any]:
        return {"info": self.info, "session": self.session, "since": self.since}


@attrs.frozen
class Subscribed:
    """Answer to ``subscribe``: the topic's position and, for state topics, its current value.

    ``kind`` is None while nothing has been written to the topic. ``replayed`` events follow
    this frame; ``ended`` means an ``end`` frame follows them. ``presence`` (the current
    members) is present only when the server sends presence to this subscriber.
    """

    topic: str
    epoch: str
    offset: int
    kind: str | None = None
    snapshot: Any = None
    has_snapshot: bool = False
    replayed: int = 0
    ended: bool = False
    ref: Ref = None
    presence: tuple[PresenceMember, ...] | None = None

    _type = "subscribed"

    def to_json(self, *, snapshot_json: str | None = None) -> str:
        """Encode the frame; ``snapshot_json`` is the snapshot as already-encoded JSON.

        A state topic's value is encoded once per write and spliced in here, so a thousand
        subscribes to a large value never encode it a thousand times.
        """
        obj: dict[str, Any] = {
            "type": self._type,
            "topic": self.topic,
            "epoch": self.epoch,
            "offset": self.offset,
            "kind": self.kind,
            "replayed": self.replayed,
            "ended": self.ended,
        }
        if self.has_snapshot and snapshot_json is None:
            obj["snapshot"] = self.snapshot
        if self.presence is not None:
            obj["presence"] = [member.to_obj() for member in self.presence]
        text = dumps(_with(obj, ref=self.ref))
        if snapshot_json is None:
            return text
        return text[:-1] + ',"snapshot":' + snapshot_json + "}"


@attrs.frozen
class Reset(Subscribed):
    """Answer to ``subscribe`` whose resume point is gone (other epoch, or older than history).

    The subscription is active from ``offset``; ``snapshot`` (if any) is the current state. The
    events between the resume point and ``offset`` are not available: the consumer is told.
    """

    _type = "reset"


@attrs.frozen
class Event:
    """One publication on ``topic`` at ``offset`` (offsets increase by one per write)."""

    topic: str
    offset: int
    data: Any

    def to_json(self) -> str:
        return encode_event(self.topic, self.offset, self.data)


@attrs.frozen
class End:
    """The topic has ended at ``offset``; the subscription is over, normally."""

    topic: str
    offset: int

    def to_json(self) -> str:
        return dumps({"type": "end", "topic": self.topic, "offset": self.offset})


@attrs.frozen
class Unsubscribed:
    """Answer to ``unsubscribe``."""

    topic: str
    ref: Ref = None

    def to_json(self) -> str:
        return dumps(_with({"type": "unsubscribed", "topic": self.topic}, ref=self.ref))


@attrs.frozen
class Published:
    """Answer to ``publish``: the event was stored at ``offset``."""

    topic: str
    offset: int
    ref: Ref = None

    def to_json(self) -> str:
        return dumps(_with({"type": "published", "topic": self.topic, "offset": self.offset}, ref=self.ref))


@attrs.frozen
class Error:
    """A request could not be honoured; ``ref`` names the client frame it answers, if any."""

    code: str
    message: str
    ref: Ref = None
    topic: str | None = None

    def to_json(self) -> str:
        return dumps(
            _with(
                {"type": "error", "code": self.code, "message": self.message}, ref=self.ref, topic=self.topic
            )
        )


@attrs.frozen
class Reply:
    """Answer to ``request``: what the server's handler returned."""

    ref: str | int
    data: Any

    def to_json(self, *, data_json: str | None = None) -> str:
        """Encode; ``TypeError`` if ``data`` cannot be sent (see ``encode_data``). ``data_json``
        is the data as already-encoded JSON (``data`` unused)."""
        data_json = encode_data(self.data) if data_json is None else data_json
        return '{"type":"reply","ref":' + dumps(self.ref) + ',"data":' + data_json + "}"


@attrs.frozen
class Join:
    """Presence: a subscriber joined ``topic`` (sent to subscribers that get presence)."""

    topic: str
    info: Any
    session: str
    since: float

    def to_json(self) -> str:
        return dumps(
            {
                "type": "join",
                "topic": self.topic,
                "info": self.info,
                "session": self.session,
                "since": self.since,
            }
        )


@attrs.frozen
class Leave:
    """Presence: that subscription of ``topic`` ended (unsubscribed, or its connection ended)."""

    topic: str
    info: Any
    session: str

    def to_json(self) -> str:
        return dumps({"type": "leave", "topic": self.topic, "info": self.info, "session": self.session})


@attrs.frozen
class Batch:
    """Several server frames in one message, in order (only used on the wire)."""

    frames: tuple[ServerFrame, ...]

    def to_json(self) -> str:
        return encode_batch(frame.to_json() for frame in self.frames)


ServerFrame: TypeAlias = (
    Welcome
    | Ping
    | Subscribed
    | Reset
    | Event
    | End
    | Unsubscribed
    | Published
    | Error
    | Reply
    | Join
    | Leave
    | Batch
)


def encode_event(topic: str, offset: int, data: Any) -> str:
    """Encode an ``event`` frame (``TypeError`` if ``data`` cannot be sent: see ``encode_data``)."""
    return encode_event_json(topic, offset, encode_data(data))


def encode_event_json(topic: str, offset: int, data_json: str) -> str:
    """Encode an ``event`` frame around already-encoded ``data_json`` (from a broker).

    Gives the same text as ``encode_event(topic, offset, json.loads(data_json))`` when
    ``data_json`` was made by ``dumps``, without decoding and encoding the data again.
    """
    head = '{"type":"event","topic":' + dumps(topic)
    return head + ',"offset":' + str(offset) + ',"data":' + data_json + "}"


def encode_batch(encoded_frames: Iterable[str]) -> str:
    """Join already-encoded frames into one ``batch`` frame without decoding them again."""
    return '{"type":"batch","frames":[' + ",".join(encoded_frames) + "]}"


def _parse_subscribed(obj: Mapping[str, Any], cls: type[Subscribed]) -> Subscribed:
    kind = obj.get("kind")
    if kind not in (None, "stream", "state"):
        raise _bad("kind", "must be 'stream', 'state' or null")
    return cls(
        topic=_topic(obj),
        epoch=_str(obj, "epoch") or "",
        offset=_int(obj, "offset") or 0,
        kind=kind,
        snapshot=obj.get("snapshot"),
        has_snapshot="snapshot" in obj,
        replayed=_int(obj, "replayed", required=False) or 0,
        ended=bool(obj.get("ended", False)),
        ref=_ref(obj),
        presence=_presence(obj),
    )


def _since(obj: Mapping[str, Any]) -> float:
    value = obj.get("since")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e12:
        raise _bad("since", "must be a Unix time in seconds")
    return float(value)


def _session(obj: Mapping[str, Any]) -> str:
    session = _str(obj, "session") or ""
    if len(session) > MAX_REF_LENGTH:
        raise _bad("session", f"must be at most {MAX_REF_LENGTH} characters")
    return session


def _presence(obj: Mapping[str, Any]) -> tuple[PresenceMember, ...] | None:
    members = obj.get("presence")
    if members is None:
        return None
    if not isinstance(members, list):
        raise _bad("presence", "must be a list of {info, session, since}")
    parsed = []
    for member in members:
        if not isinstance(member, dict):
            raise _bad("presence", "must be a list of {info, session, since}")
        parsed.append(PresenceMember(member.get("info"), _session(member), _since(member)))
    return tuple(parsed)


def _parse_reply(obj: Mapping[str, Any]) -> Reply:
    ref = _ref(obj)
    if ref is None:
        raise _bad("ref", "is required")
    return Reply(ref, obj.get("data"))


def _parse_welcome(obj: Mapping[str, Any]) -> Welcome:
    heartbeat = obj.get("heartbeat")
    if not isinstance(heartbeat, dict):
        raise _bad("heartbeat", "must be an object with 'interval' and 'timeout'")
    version = _int(obj, "version") or 0
    if version != PROTOCOL_VERSION:
        raise _bad("version", f"is {version}; this client speaks version {PROTOCOL_VERSION}")
    return Welcome(
        session=_str(obj, "session") or "",
        heartbeat_interval=_seconds(heartbeat, "interval", MIN_HEARTBEAT, MAX_HEARTBEAT),
        heartbeat_timeout=_seconds(heartbeat, "timeout", MIN_HEARTBEAT, MAX_HEARTBEAT),
        max_frame_size=_int(obj, "max_frame_size") or 0,
        version=version,
    )


def _rtt(value: object) -> float | None:
    """The informational ``ping.rtt``: a sane number of seconds, or None (never an error)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_HEARTBEAT:
        return float(value)
    return None


def _parse_error(obj: Mapping[str, Any]) -> Error:
    topic = obj.get("topic")
    return Error(
        _str(obj, "code") or "",
        _str(obj, "message") or "",
        _ref(obj),
        topic if isinstance(topic, str) else None,
    )


_SERVER_PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], ServerFrame]]] = {
    "welcome": _parse_welcome,
    "ping": lambda o: Ping(_int(o, "id") or 0, _rtt(o.get("rtt"))),
    "subscribed": lambda o: _parse_subscribed(o, Subscribed),
    "reset": lambda o: _parse_subscribed(o, Reset),
    "event": lambda o: Event(_topic(o), _int(o, "offset") or 0, o.get("data")),
    "end": lambda o: End(_topic(o), _int(o, "offset") or 0),
    "unsubscribed": lambda o: Unsubscribed(_topic(o), _ref(o)),
    "published": lambda o: Published(_topic(o), _int(o, "offset") or 0, _ref(o)),
    "error": _parse_error,
    "reply": _parse_reply,
    "join": lambda o: Join(_topic(o), o.get("info"), _session(o), _since(o)),
    "leave": lambda o: Leave(_topic(o), o.get("info"), _session(o)),
}


def _parse_server_object(obj: Any, *, nested: bool) -> ServerFrame:
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_AN_OBJECT.value, "frame must be a JSON object")
    kind = obj.get("type")
    parser = _SERVER_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None or (nested and kind == "welcome"):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE.value, f"unknown frame type {kind!r}")
    return parser(obj)


def parse_server_frames(text: str | bytes) -> list[ServerFrame]:
    """Parse one server→client message into frames (a ``batch`` becomes its frames, in order).

    Raises:
        ProtocolError: the message is not a valid protocol v1 server frame.
    """
    obj = _load_object(text)
    if obj.get("type") != "batch":
        return [_parse_server_object(obj, nested=False)]
    frames = obj.get("frames")
    if not isinstance(frames, list):
        raise _bad("frames", "must be a list of frames")
    return [_parse_server_object(item, nested=True) for item in frames]
