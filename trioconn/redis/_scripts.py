"""Redis keys, Lua scripts and URL forms shared by ``RedisBroker`` (coredis, anyio) and
``SyncPublisher`` (redis-py, no trio). No I/O here: the scripts are text, the rest turns replies
into values.

Theory of operation
-------------------
Every write runs as one Lua script, so it is atomic on the server: the topic's offset is a
counter in its hash (``HINCRBY``: +1 per write, whoever writes), its epoch is set in the same hash
when the topic is created, a stream topic's event goes to its history stream with the explicit
entry id ``0-<offset>`` (``XADD ... MAXLEN <history_size>``), a state topic's value to the hash,
and the write is published on the topic's own channel (``PUBLISH``, or ``SPUBLISH`` on a Redis
Cluster) as ``<epoch> <offset> <kind> <data JSON>``: only the hubs that follow the topic receive
it. Keys (``P`` is the prefix, ``trioconn`` by default)::

    {P:<name>}:topic     hash: epoch, offset, kind, state (JSON), ended
    {P:<name>}:history   stream: id 0-<offset>, field d = the event's data as JSON
    {P:<name>}:live      the channel every write of the topic is published on

The braces are a Redis Cluster hash tag: every key of one topic hashes to one slot, so each
script touches one slot (one cluster node) and stays atomic. (A name containing ``}`` ends the tag
early, but at the same place in all three names, so they still share a slot.)

A topic nobody wrote to yet (created by a subscriber, so that every hub reports the same epoch)
expires after ``unwritten_ttl``; an ended topic after the retention. Without persistence a Redis
restart loses everything: the next use of a topic creates a new epoch, and clients get ``reset``.
"""

from __future__ import annotations

import math
import secrets
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from .._core.exceptions import TopicEnded
from .._core.protocol import encode_data, validate_topic
from .._server.topics import TopicKind, TopicSnapshot

__all__ = [
    "END",
    "LOAD",
    "WRITE",
    "Keys",
    "Target",
    "end_args",
    "new_epoch",
    "parse_message",
    "parse_snapshot",
    "parse_url",
    "write_args",
    "write_result",
]

#: KEYS: topic hash, history, channel. ARGV: kind, data JSON, new epoch, history size, publish
#: command. Returns {'ok', epoch, offset} | {'ended', epoch} | {'kind', kind}.
WRITE: Final = """
local meta, history = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', history)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
end
if redis.call('HEXISTS', meta, 'ended') == 1 then return {'ended', epoch} end
local kind = redis.call('HGET', meta, 'kind')
if kind and kind ~= ARGV[1] then return {'kind', kind} end
redis.call('PERSIST', meta)
local offset = redis.call('HINCRBY', meta, 'offset', 1)
redis.call('HSET', meta, 'kind', ARGV[1])
if ARGV[1] == 'state' then
  redis.call('HSET', meta, 'state', ARGV[2])
else
  redis.call('XADD', history, 'MAXLEN', ARGV[4], '0-' .. offset, 'd', ARGV[2])
end
redis.call(ARGV[5], KEYS[3], epoch .. ' ' .. offset .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
return {'ok', epoch, offset}
"""

#: KEYS: topic hash, history, channel. ARGV: new epoch, retention (s), publish command.
#: Idempotent. Returns {'ok', epoch, final offset}.
END: Final = """
local meta, history = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', history)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
end
local offset = tonumber(redis.call('HGET', meta, 'offset'))
if redis.call('HEXISTS', meta, 'ended') == 1 then return {'ok', epoch, offset} end
redis.call('HSET', meta, 'ended', 1)
redis.call('EXPIRE', meta, ARGV[2])
redis.call('EXPIRE', history, ARGV[2])
redis.call(ARGV[3], KEYS[3], epoch .. ' ' .. offset .. ' end')
return {'ok', epoch, offset}
"""

#: KEYS: topic hash, history. ARGV: new epoch, history size, unwritten TTL (s).
#: Returns {flat hash, newest history entries first}; creates an unwritten topic if missing.
LOAD: Final = """
local meta, history = KEYS[1], KEYS[2]
if redis.call('HSETNX', meta, 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', meta, 'offset', 0)
  redis.call('EXPIRE', meta, ARGV[3])
elseif redis.call('HEXISTS', meta, 'kind') == 0 and redis.call('HEXISTS', meta, 'ended') == 0 then
  redis.call('EXPIRE', meta, ARGV[3])
end
local events = {}
if redis.call('HGET', meta, 'kind') == 'stream' then
  events = redis.call('XREVRANGE', history, '+', '-', 'COUNT', ARGV[2])
end
return {redis.call('HGETALL', meta), events}
"""

_SCHEMES: Final = {
    "redis": ("redis", False),
    "rediss": ("rediss", False),
    "unix": ("unix", False),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
}


@attrs.frozen
class Target:
    """Where Redis is, from a trioconn Redis URL.

    Attributes:
        url: the URL the client library understands (``+cluster`` removed).
        cluster: True for a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``).
    """

    url: str
    cluster: bool

    def cluster_node(self) -> tuple[str, int, str | None, str | None, bool]:
        """A cluster URL's host, port, user name, password and whether it uses TLS."""
        parts = urllib.parse.urlsplit(self.url)
        username = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        return parts.hostname or "", parts.port or 6379, username, password, parts.scheme == "rediss"

    @property
    def publish(self) -> str:
        """The command that publishes a write: sharded pub/sub on a cluster, so only the slot's
        node carries it, plain pub/sub on one server (works from Redis 6.2)."""
        return "SPUBLISH" if self.cluster else "PUBLISH"


def parse_url(url: object) -> Target:
    """Check a Redis URL and say whether it names a cluster.

    ``redis://`` / ``rediss://`` (TLS) / ``unix://`` name one server (or a Sentinel-managed
    primary); ``redis+cluster://host:port`` / ``rediss+cluster://`` name any node of a Redis
    Cluster (the client discovers the others), which has only database 0.

    Raises:
        ValueError: the URL has another scheme, no host, or a database other than 0 on a cluster.
    """
    if not isinstance(url, str):
        raise ValueError(f"url must be a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        choices = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ValueError(f"url must start with one of {choices}; got {url!r}")
    base, cluster = _SCHEMES[scheme.lower()]
    plain = f"{base}://{rest}"
    if cluster:
        parts = urllib.parse.urlsplit(plain)
        if not parts.hostname:
            raise ValueError(f"url {url!r} names no host: use {scheme}://host:port")
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError(f"url {url!r}: a Redis Cluster has only database 0")
        if parts.query or parts.fragment:
            raise ValueError(f"url {url!r}: a cluster URL takes no options after the address")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(f"url {url!r} has an invalid port") from None
    return Target(plain, cluster)


def new_epoch() -> str:
    """A fresh epoch, in the same form the in-memory registry uses."""
    return secrets.token_hex(6)


class Keys:
    """The Redis key names under one prefix (see the module docstring for the layout)."""

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty str")
        self.prefix = prefix
        self._head = len(prefix) + 2

    def topic(self, name: str) -> str:
        return f"{{{self.prefix}:{name}}}:topic"

    def history(self, name: str) -> str:
        return f"{{{self.prefix}:{name}}}:history"

    def channel(self, name: str) -> str:
        return f"{{{self.prefix}:{name}}}:live"

    def name_of(self, channel: str) -> str:
        """The topic whose writes ``channel`` carries."""
        return channel[self._head : -len("}:live")]

    def write_keys(self, name: str) -> list[str]:
        return [self.topic(name), self.history(name), self.channel(name)]


def write_args(
    topic: str,
    kind: TopicKind,
    data: Any,
    history_size: int,
    target: Target,
    encode: Callable[[Any], str] = encode_data,
) -> list[Any]:
    """Validate a write and build the ``WRITE`` script's ARGV (raises ValueError / TypeError).

    ``encode`` turns the data into JSON text: the hub's or publisher's ``json_dumps``, checked.
    """
    validate_topic(topic)
    return [kind, encode(data), new_epoch(), history_size, target.publish]


def end_args(retention: float, target: Target) -> list[Any]:
    """The ``END`` script's ARGV."""
    return [new_epoch(), max(1, math.ceil(retention)), target.publish]


def parse_message(data: str) -> tuple[str, int, str, str]:
    """Split a write published on a topic's channel: epoch, offset, kind (``stream``,
    ``state`` or ``end``) and the data JSON (empty for ``end``)."""
    epoch, offset, kind, *rest = data.split(" ", 3)
    return epoch, int(offset), kind, rest[0] if rest else ""


def write_result(topic: str, kind: TopicKind, reply: Sequence[Any]) -> int:
    """Turn the ``WRITE`` script's reply into an offset, or the error the in-memory hub raises."""
    status = _text(reply[0])
    if status == "ended":
        raise TopicEnded(topic)
    if status == "kind":
        other = _text(reply[1])
        verb = "publish" if other == "stream" else "set_state"
        raise ValueError(f"topic {topic!r} is a {other} topic: use {verb}()")
    return int(reply[2])


def parse_snapshot(name: str, reply: Sequence[Any]) -> TopicSnapshot:
    """Turn the ``LOAD`` script's reply into a ``TopicSnapshot``."""
    flat = [_text(item) for item in reply[0]]
    meta: Mapping[str, str] = dict(zip(flat[::2], flat[1::2], strict=True))
    kind = meta.get("kind")
    history = [(int(_text(entry_id).partition("-")[2]), _field(fields, "d")) for entry_id, fields in reply[1]]
    history.reverse()
    return TopicSnapshot(
        name=name,
        epoch=meta["epoch"],
        offset=int(meta.get("offset", 0)),
        kind="stream" if kind == "stream" else "state" if kind == "state" else None,
        state_json=meta.get("state"),
        ended="ended" in meta,
        history=tuple(history),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields: Sequence[Any], name: str) -> str:
    flat = [_text(item) for item in fields]
    return dict(zip(flat[::2], flat[1::2], strict=True))[name]
