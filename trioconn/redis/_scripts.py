"""Redis keys and Lua scripts shared by ``RedisBroker`` (coredis, trio) and ``SyncPublisher``
(redis-py, no trio). No I/O here: the scripts are text, the rest turns replies into values.

Theory of operation
-------------------
Every write runs as one Lua script, so it is atomic on the server: the topic's offset is a
counter in its hash (``HINCRBY``: +1 per write, whoever writes), its epoch is set in the same hash
when the topic is created, a stream topic's event goes to its history stream with the explicit
entry id ``0-<offset>`` (``XADD ... MAXLEN <history_size>``), a state topic's value to the hash,
and every write also goes to the *firehose*, one stream that all hubs follow, with a global
sequence number (``INCR``) so that a hub notices a lost firehose entry. Keys
(``P`` is the prefix, ``trioconn`` by default)::

    P:topic:<name>     hash: epoch, offset, kind, state (JSON), ended
    P:history:<name>   stream: id 0-<offset>, field d = the event's data as JSON
    P:firehose         stream: s=seq t=topic e=epoch o=offset k=stream|state|end d=data JSON
    P:seq              counter for the firehose's ``s``

A topic nobody wrote to yet (created by a subscriber, so that every hub reports the same epoch)
expires after ``unwritten_ttl``; an ended topic after the retention. Without persistence a Redis
restart loses everything: the next use of a topic creates a new epoch, and clients get ``reset``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .._core.exceptions import TopicEnded
from .._core.protocol import encode_data, validate_topic
from .._server.topics import TopicKind, TopicSnapshot

__all__ = [
    "END",
    "LOAD",
    "WRITE",
    "Keys",
    "new_epoch",
    "parse_snapshot",
    "write_args",
    "write_result",
]

#: KEYS: topic hash, history, firehose, seq. ARGV: topic, kind, data JSON, new epoch,
#: history size, firehose size. Returns {'ok', epoch, offset} | {'ended', epoch} | {'kind', kind}.
WRITE: Final = """
local meta, history = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', history)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
end
if redis.call('HEXISTS', meta, 'ended') == 1 then return {'ended', epoch} end
local kind = redis.call('HGET', meta, 'kind')
if kind and kind ~= ARGV[2] then return {'kind', kind} end
redis.call('PERSIST', meta)
local offset = redis.call('HINCRBY', meta, 'offset', 1)
redis.call('HSET', meta, 'kind', ARGV[2])
if ARGV[2] == 'state' then
  redis.call('HSET', meta, 'state', ARGV[3])
else
  redis.call('XADD', history, 'MAXLEN', ARGV[5], '0-' .. offset, 'd', ARGV[3])
end
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*',
  's', seq, 't', ARGV[1], 'e', epoch, 'o', offset, 'k', ARGV[2], 'd', ARGV[3])
return {'ok', epoch, offset}
"""

#: KEYS: topic hash, history, firehose, seq. ARGV: topic, new epoch, retention (s), firehose
#: size. Idempotent. Returns {'ok', epoch, final offset}.
END: Final = """
local meta, history = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', history)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
end
local offset = tonumber(redis.call('HGET', meta, 'offset'))
if redis.call('HEXISTS', meta, 'ended') == 1 then return {'ok', epoch, offset} end
redis.call('HSET', meta, 'ended', 1)
redis.call('EXPIRE', meta, ARGV[3])
redis.call('EXPIRE', history, ARGV[3])
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
  's', seq, 't', ARGV[1], 'e', epoch, 'o', offset, 'k', 'end')
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


def new_epoch() -> str:
    """A fresh epoch, in the same form the in-memory registry uses."""
    return secrets.token_hex(6)


class Keys:
    """The Redis key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty str")
        self.prefix = prefix
        self.firehose = f"{prefix}:firehose"
        self.seq = f"{prefix}:seq"

    def topic(self, name: str) -> str:
        return f"{self.prefix}:topic:{name}"

    def history(self, name: str) -> str:
        return f"{self.prefix}:history:{name}"

    def write_keys(self, name: str) -> list[str]:
        return [self.topic(name), self.history(name), self.firehose, self.seq]


def write_args(
    topic: str,
    kind: TopicKind,
    data: Any,
    history_size: int,
    firehose_size: int,
    encode: Callable[[Any], str] = encode_data,
) -> list[Any]:
    """Validate a write and build the ``WRITE`` script's ARGV (raises ValueError / TypeError).

    ``encode`` turns the data into JSON text: the hub's or publisher's ``json_dumps``, checked.
    """
    validate_topic(topic)
    return [topic, kind, encode(data), new_epoch(), history_size, firehose_size]


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
