"""``RedisBroker``: topics shared by several hub processes through Redis (coredis on trio).

Theory of operation
-------------------
Writes are Lua scripts (``_scripts``): Redis numbers every write, per topic, and appends it
to the firehose stream. Each hub runs one *follower* task (``run``) that reads the firehose with
``XREAD BLOCK`` and applies every write to the topics this hub mirrors — the topics its clients
follow. A write by this very hub reaches its subscribers the same way, so all hubs deliver the
same events in the same order.

A subscribe to a topic the hub does not mirror yet awaits ``load``: the topic is marked *loading*
(the follower now keeps, instead of skipping, the firehose entries for it), then one Lua script
reads the topic's hash and history atomically, the snapshot is installed, and the kept entries
are applied on top, skipping the offsets the snapshot already had. Anything written before the
script ran is in the snapshot; anything after it reaches the follower after the topic was marked,
so nothing falls in between, and the offsets remove the overlap. The connection then answers,
replays and registers synchronously, as with the in-memory broker.

Failures: every Redis call is bounded by ``timeout``. When the follower loses Redis it logs,
retries with exponential backoff and jitter, and on reconnecting *resynchronises* every mirrored
topic from Redis: missed events are delivered (they are in the history), and a topic whose epoch
changed (Redis lost its data) or whose history no longer reaches gets a ``reset`` frame. A firehose
sequence number that jumps, or a write that does not follow the mirror by exactly one offset,
triggers the same resynchronisation. WebSocket clients stay connected throughout; publishing
meanwhile raises ``BrokerUnavailable``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import attrs
import coredis
import coredis.exceptions
from anyio.abc import TaskStatus
from coredis.commands.script import Script
from coredis.retry import NoRetryPolicy

from .._core.backoff import Backoff, BackoffPolicy
from .._core.exceptions import BrokerUnavailable
from .._core.protocol import validate_topic
from .._server.broker import Broker
from .._server.topics import Applied, TopicKind, TopicSnapshot
from ._scripts import END, LOAD, WRITE, Keys, new_epoch, parse_snapshot, write_args, write_result

__all__ = ["RedisBroker"]

logger = logging.getLogger("trioconn.redis")

#: What a lost or broken link to Redis looks like, whatever layer notices it first.
_LINK_ERRORS = (
    coredis.exceptions.RedisError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class _Lost(Exception):
    """The follower's read did not come back in time: treat the link as dead."""


@attrs.define(eq=False)
class _Load:
    """A topic being loaded: the firehose entries the follower kept for it meanwhile."""

    entries: list[Mapping[str, str]] = attrs.Factory(list)
    done: anyio.Event = attrs.Factory(anyio.Event)
    error: BrokerUnavailable | None = None


class RedisBroker(Broker):
    """Share topics between hub processes through Redis: same epochs, offsets, history, state.

    Every process that serves or publishes uses a ``RedisBroker`` with the same ``url`` and
    ``prefix`` (and hubs with the same ``history_size``). Worker processes without trio publish
    with ``trioconn.redis.SyncPublisher``. Needs Redis >= 6.2 (streams, ``XADD`` with ids);
    one Redis server (or a Sentinel-managed primary), not Redis Cluster: a write touches the
    topic's keys and the firehose in one script.

    Args:
        url: ``redis://[[user]:password@]host:port/db`` or ``rediss://`` (TLS).
        prefix: namespace of every key, so several applications can share one Redis.
        timeout: seconds any Redis call may take before the link counts as down.
        firehose_size: about how many writes the firehose keeps (``MAXLEN ~``) for hubs that
            fall behind; a hub further behind resynchronises its topics instead.
        unwritten_ttl: seconds a topic that was subscribed to but never written lives in Redis.
        backoff: the pause between reconnection attempts (default: ``Backoff(base=0.1, cap=5)``,
            exponential with full jitter). Its ``max_attempts`` is ignored: a hub never gives up
            on Redis, it keeps serving its clients and retries.
        block: seconds one firehose read waits for new entries before asking again.

    Raises:
        ValueError: a setting is invalid.
    """

    synchronous = False

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "trioconn",
        timeout: float = 5.0,
        firehose_size: int = 100_000,
        unwritten_ttl: float = 86_400.0,
        backoff: BackoffPolicy | None = None,
        block: float = 5.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("timeout", timeout),
            ("unwritten_ttl", unwritten_ttl),
            ("block", block),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(firehose_size, bool) or not isinstance(firehose_size, int) or firehose_size <= 0:
            raise ValueError(f"firehose_size must be a positive int, got {firehose_size!r}")
        self.url = url
        self._keys = Keys(prefix)
        self._timeout = float(timeout)
        self._firehose_size = firehose_size
        self._unwritten_ttl = max(1, math.ceil(unwritten_ttl))
        self._backoff = Backoff(base=0.1, cap=5.0) if backoff is None else backoff
        self._rng = random.Random()
        self._block = float(block)
        self._client: coredis.Redis[str] | None = None
        self._scripts: dict[str, Script[str]] = {}
        self._loading: dict[str, _Load] = {}
        self._connected = False
        #: the last firehose entry applied (id and sequence number), kept across runs
        self._position: str | None = None
        self._seq: int | None = None
        self._resync_pending = False
        #: Times the follower found Redis again after losing it (for tests and statistics).
        self.reconnects = 0
        #: Topics brought up to date after a reconnect or a detected gap.
        self.resyncs = 0

    @property
    def connected(self) -> bool:
        """True while the follower is reading Redis's firehose: the link is up."""
        return self._connected

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r}, prefix={self._keys.prefix!r})"

    # -- running ----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect and follow the firehose until cancelled; reconnect with backoff when Redis goes.

        Calls ``task_status.started()`` at once: the hub serves its WebSocket clients whether or
        not Redis is reachable, and writes raise ``BrokerUnavailable`` until it is.
        """
        client: coredis.Redis[str] = coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),  # a retried write could be stored twice
            connect_timeout=self._timeout,
        )
        async with client:
            self._scripts = {
                "write": client.register_script(WRITE),
                "end": client.register_script(END),
                "load": client.register_script(LOAD),
            }
            self._client = client
            try:
                task_status.started()
                await self._follow(client)
            finally:
                self._client = None
                self._connected = False

    async def _follow(self, client: coredis.Redis[str]) -> None:
        # The position is the broker's, not this run's: when the hub moves the broker's task
        # (one of several ``serve`` calls ended) or serves again later, the follower goes on
        # from the last entry it applied, so no write falls between two runs. If the firehose
        # was trimmed meanwhile, the sequence numbers jump and the mirror is resynchronised.
        position, seq = self._position, self._seq
        resync = self._resync_pending
        failures = 0
        lost_at: float | None = None
        while True:
            try:
                if position is None:
                    position = self._position = await self._bounded(self._tail(client))
                if resync:
                    count = await self._resync(list(self._mirrored()))
                    resync = self._resync_pending = False
                    logger.warning("resynchronised %d mirrored topic(s) from redis", count)
                if not self._connected:  # the calls above went through: the link is up
                    self._connected = True
                    logger.info("following the redis firehose at %s", self.url)
                    if lost_at is not None:
                        self.reconnects += 1
                        elapsed = anyio.current_time() - lost_at
                        logger.warning("reconnected to redis at %s after %.1fs", self.url, elapsed)
                    lost_at, failures = None, 0
                with anyio.move_on_after(self._block + self._timeout) as scope:
                    reply = await client.xread(
                        {self._keys.firehose: position}, count=1000, block=int(self._block * 1000)
                    )
                if scope.cancelled_caught:
                    raise _Lost(f"no answer from redis within {self._block + self._timeout:.1f}s")
            except (*_LINK_ERRORS, BrokerUnavailable, _Lost) as exc:
                if lost_at is None:
                    lost_at = anyio.current_time()
                    logger.warning("lost the redis link at %s (%s); reconnecting", self.url, exc)
                self._connected = False
                # whatever was written meanwhile is in Redis, not in the firehose we saw
                resync = self._resync_pending = True
                failures += 1
                await anyio.sleep(self._backoff.delay(failures, self._rng))
                continue
            stale: set[str] = set()
            for entry in (reply or {}).get(self._keys.firehose, ()):
                position = self._position = str(entry.identifier)
                fields = {str(key): str(value) for key, value in entry.field_values.items()}
                number = int(fields["s"])
                if seq is not None and number != seq + 1:
                    # a firehose entry we never saw (trimmed, or Redis lost data)
                    resync = self._resync_pending = True
                seq = self._seq = number
                if self._apply(fields) in ("gap", "epoch"):
                    stale.add(fields["t"])
            if stale and not resync:
                self._resync_pending = True  # if this run ends during the resync, the next one does it
                try:
                    await self._resync(sorted(stale))
                except BrokerUnavailable:
                    resync = True
                else:
                    self._resync_pending = False

    async def _tail(self, client: coredis.Redis[str]) -> str:
        newest = await client.xrevrange(self._keys.firehose, count=1)
        return str(newest[0].identifier) if newest else "0-0"

    def _mirrored(self) -> Iterable[str]:
        return [topic.name for topic in self.registry if topic.name not in self._loading]

    def _apply(self, fields: Mapping[str, str]) -> Applied | None:
        name = fields["t"]
        load = self._loading.get(name)
        if load is not None:
            load.entries.append(fields)
            return None
        return self._apply_now(fields)

    def _apply_now(self, fields: Mapping[str, str]) -> Applied:
        name, epoch, offset, kind = fields["t"], fields["e"], int(fields["o"]), fields["k"]
        if kind == "end":
            return self.registry.apply_end(name, epoch, offset, anyio.current_time())
        outcome, slow = self.registry.apply(name, epoch, offset, _kind(kind), fields["d"])
        self._slow(slow)
        return outcome

    async def _resync(self, names: list[str]) -> int:
        """Bring mirrored topics up to Redis's state; returns how many were checked."""
        count = 0
        for name in names:
            if self.registry.get(name) is None or name in self._loading:
                continue
            snapshot = await self._fetch(name)
            if self.registry.get(name) is not None:  # still followed after the await
                self._slow(self.registry.sync(snapshot, anyio.current_time()))
                count += 1
        self.resyncs += count
        return count

    # -- the Broker surface -----------------------------------------------------------------------

    def ready(self, topic: str) -> bool:
        return topic not in self._loading and self.registry.get(topic) is not None

    async def load(self, topic: str) -> None:
        validate_topic(topic)
        while not self.ready(topic):
            pending = self._loading.get(topic)
            if pending is not None:
                await pending.done.wait()
                if pending.error is not None:
                    raise pending.error
                continue
            pending = self._loading[topic] = _Load()
            try:
                await self._load_into(topic, pending)
            except BrokerUnavailable as exc:
                pending.error = exc
                raise
            finally:
                del self._loading[topic]
                pending.done.set()

    async def _load_into(self, topic: str, pending: _Load) -> None:
        for _ in range(3):
            snapshot = await self._fetch(topic)
            self._slow(self.registry.sync(snapshot, anyio.current_time()))
            entries, pending.entries = pending.entries, []
            outcomes = [self._apply_now(fields) for fields in entries]
            if "gap" not in outcomes and "epoch" not in outcomes:
                return
        # Still moving under us: what is installed is consistent up to its offset, and the
        # follower notices the next write that does not follow it.

    async def write(self, topic: str, kind: TopicKind, data: Any) -> int:
        args = write_args(
            topic, kind, data, self.registry.history_size, self._firehose_size, self.registry.encode_data
        )
        reply = await self._script("write", self._keys.write_keys(topic), args)
        return write_result(topic, kind, reply)

    async def end(self, topic: str) -> int:
        validate_topic(topic)
        retention = max(1, math.ceil(self.registry.ended_retention))
        args = [topic, new_epoch(), retention, self._firehose_size]
        reply = await self._script("end", self._keys.write_keys(topic), args)
        return int(reply[2])

    # -- talking to Redis -------------------------------------------------------------------------

    async def _fetch(self, topic: str) -> TopicSnapshot:
        keys = [self._keys.topic(topic), self._keys.history(topic)]
        args = [new_epoch(), self.registry.history_size, self._unwritten_ttl]
        return parse_snapshot(topic, await self._script("load", keys, args))

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        if self._client is None:
            raise BrokerUnavailable(
                f"{self!r} is not running: publish inside `hub.serve(...)` or `async with hub.running():`"
            )
        script = self._scripts[name]
        reply = await self._bounded(script(keys=keys, args=args))
        assert isinstance(reply, list)
        return reply

    async def _bounded(self, call: Any) -> Any:
        """Await a coredis call within ``timeout``, translating every link failure."""
        try:
            with anyio.fail_after(self._timeout):
                return await call
        except TimeoutError:
            raise BrokerUnavailable(
                f"redis at {self.url} did not answer within {self._timeout:g}s "
                "(if this was a write, it may or may not have been stored)"
            ) from None
        except _LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis at {self.url} is unreachable: {exc}") from exc


def _kind(text: str) -> TopicKind:
    return "state" if text == "state" else "stream"
