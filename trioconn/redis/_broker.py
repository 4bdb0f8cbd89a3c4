"""``RedisBroker``: topics shared by several hub processes through Redis or a Redis Cluster
(coredis, on anyio: trio or asyncio).

Theory of operation
-------------------
Writes are Lua scripts (``_scripts``): Redis numbers every write, per topic, stores it, and
publishes it on the topic's own channel. Each hub *follows* only the topics its subscribers use:
its broker keeps one pub/sub feed (``SUBSCRIBE`` on one server, sharded ``SSUBSCRIBE`` on a
cluster, where each channel lives on the node that owns the topic's keys) subscribed to exactly
the channels of the topics in its registry, and applies what arrives to that mirror. A write by
this very hub reaches its subscribers the same way, so all hubs deliver the same events in the
same order. Writes to topics nobody here follows never reach this process.

A subscribe to a topic the hub does not mirror yet awaits ``load``: the topic is marked *loading*
(the feed now keeps, instead of applying, what arrives for it), its channel is subscribed and
Redis has confirmed it, then one Lua script reads the topic's hash and history atomically, the
snapshot is installed, and the kept writes are applied on top, skipping the offsets the snapshot
already had. Anything written before the script ran is in the snapshot; anything after it is
published after the subscription, so it arrives and is kept; offsets remove the overlap. The
connection then answers, replays and registers synchronously, as with the in-memory broker.
When the registry forgets a topic (its last subscriber left), the feed unsubscribes from it.
Subscribing and unsubscribing go through one task, in order, so a topic dropped and followed
again at once is never left unsubscribed.

Failures: every Redis call is bounded by ``timeout``; the feed pings Redis when it has been
quiet for ``block`` seconds. Pub/sub loses nothing on a live connection, so a loss always shows
as a broken link (or, on a cluster, a subscription Redis dropped when a slot moved): the broker
logs, reconnects with exponential backoff and jitter, subscribes again and *resynchronises*
every mirrored topic from Redis — missed events are delivered (the history has them), and a
topic whose epoch changed (Redis lost its data) or whose history no longer reaches gets a
``reset`` frame. A write that does not follow the mirror by exactly one offset triggers the same
resynchronisation of its topic. WebSocket clients stay connected throughout; publishing
meanwhile raises ``BrokerUnavailable``.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any, TypeAlias

import anyio
import attrs
import coredis
import coredis.exceptions
from anyio.abc import TaskStatus
from coredis.commands.script import Script
from coredis.connection import TCPLocation
from coredis.patterns.pubsub import PubSub, ShardedPubSub
from coredis.retry import NoRetryPolicy

from .._core.backoff import Backoff, BackoffPolicy
from .._core.exceptions import BrokerUnavailable
from .._core.protocol import validate_topic
from .._server.broker import Broker, SlowCallback
from .._server.topics import Applied, TopicKind, TopicRegistry, TopicSnapshot
from ._scripts import (
    END,
    LOAD,
    WRITE,
    Keys,
    end_args,
    new_epoch,
    parse_message,
    parse_snapshot,
    parse_url,
    write_args,
    write_result,
)

__all__ = ["RedisBroker"]

logger = logging.getLogger("trioconn.redis")

#: What a lost or broken link to Redis looks like, whatever layer notices it first
#: (``TimeoutError`` is an ``OSError``: an unanswered ping or subscription counts too).
_LINK_ERRORS = (
    coredis.exceptions.RedisError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

_Client: TypeAlias = "coredis.Redis[str] | coredis.RedisCluster[str]"
_Feed: TypeAlias = "PubSub[str] | ShardedPubSub[str]"


class _Lost(Exception):
    """Redis dropped what this hub follows without closing the link: treat the link as dead."""


#: One write as published on a topic's channel: topic, epoch, offset, kind, data JSON.
_Write: TypeAlias = tuple[str, str, int, str, str]


@attrs.define(eq=False)
class _Load:
    """A topic being loaded: the writes the feed kept for it meanwhile."""

    entries: list[_Write] = attrs.Factory(list)
    done: anyio.Event = attrs.Factory(anyio.Event)
    error: BrokerUnavailable | None = None


class RedisBroker(Broker):
    """Share topics between hub processes through Redis: same epochs, offsets, history, state.

    Every process that serves or publishes uses a ``RedisBroker`` with the same ``url`` and
    ``prefix`` (and hubs with the same ``history_size``). Worker processes without trio publish
    with ``trioconn.redis.SyncPublisher``. Each hub receives the writes of the topics its own
    subscribers follow, and no others. Needs Redis >= 6.2 (one server) or >= 7.0 (a cluster:
    sharded pub/sub).

    Args:
        url: one server: ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS) or
            ``unix://``; a Redis Cluster: ``redis+cluster://[[user]:password@]host:port`` or
            ``rediss+cluster://``, naming any node (the others are discovered).
        prefix: namespace of every key, so several applications can share one Redis.
        timeout: seconds any Redis call may take before the link counts as down.
        unwritten_ttl: seconds a topic that was subscribed to but never written lives in Redis.
        backoff: the pause between reconnection attempts (default: ``Backoff(base=0.1, cap=5)``,
            exponential with full jitter). Its ``max_attempts`` is ignored: a hub never gives up
            on Redis, it keeps serving its clients and retries.
        block: seconds the feed may stay quiet before the broker pings Redis to check the link.

    Raises:
        ValueError: a setting is invalid (the message names it).
    """

    synchronous = False

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "trioconn",
        timeout: float = 5.0,
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
        self._target = parse_url(url)
        self.url = url
        self._keys = Keys(prefix)
        self._timeout = float(timeout)
        self._unwritten_ttl = max(1, math.ceil(unwritten_ttl))
        self._backoff = Backoff(base=0.1, cap=5.0) if backoff is None else backoff
        self._rng = random.Random()
        self._block = float(block)
        self._running = False
        self._client: Any = None
        self._scripts: dict[str, Script[str]] = {}
        self._loading: dict[str, _Load] = {}
        #: why the link is down (None: up, or not tried yet)
        self._down: str | None = None
        self._connected = False
        self._session = 0
        self._up: anyio.Event | None = None
        #: topics whose channel the current feed is subscribed to
        self._following: set[str] = set()
        #: topics to subscribe or unsubscribe, and what wakes the task that does it
        self._dirty: set[str] = set()
        self._changed: anyio.Event | None = None
        self._joins: dict[str, anyio.Event] = {}
        #: unsubscriptions sent and not confirmed yet, by channel (any other is Redis's doing)
        self._unsubscribing: Counter[str] = Counter()
        #: Times the broker found Redis again after losing it (for tests and statistics).
        self.reconnects = 0
        #: Topics brought up to date after a reconnect or a detected gap.
        self.resyncs = 0
        #: Writes received from Redis (only those of followed topics reach this process).
        self.received = 0

    @property
    def connected(self) -> bool:
        """True while the broker's feed is subscribed and Redis answers: the link is up."""
        return self._connected

    @property
    def following(self) -> frozenset[str]:
        """The topics whose writes this hub receives from Redis right now."""
        return frozenset(self._following)

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r}, prefix={self._keys.prefix!r})"

    def bind(self, registry: TopicRegistry, on_slow: SlowCallback) -> None:
        super().bind(registry, on_slow)
        registry.mirror = True
        registry.on_forget = self._forget

    # -- running ----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect and follow this hub's topics until cancelled; reconnect with backoff.

        Calls ``task_status.started()`` at once: the hub serves its WebSocket clients whether or
        not Redis is reachable, and writes raise ``BrokerUnavailable`` until it is.
        """
        self._running, self._down = True, None
        self._up, self._changed = anyio.Event(), anyio.Event()
        try:
            task_status.started()
            await self._follow()
        finally:
            self._running = False
            self._went_down("the broker stopped")

    async def _follow(self) -> None:
        failures = 0
        lost_at: float | None = None
        while True:
            lost: BaseException | None = None
            try:
                await self._connected_session(lost_at)
            except* (*_LINK_ERRORS, BrokerUnavailable, _Lost) as group:
                lost = _first(group)
            if self._connected:  # it was up: this is a new loss
                failures, lost_at = 0, None
            self._went_down(str(lost))
            if lost_at is None:
                lost_at = anyio.current_time()
                logger.warning("lost the redis link at %s (%s); reconnecting", self.url, lost)
            failures += 1
            await anyio.sleep(self._backoff.delay(failures, self._rng))

    async def _connected_session(self, lost_at: float | None) -> None:
        """One connection to Redis: follow the wanted topics until the link fails."""
        client = self._new_client()
        async with client, self._new_feed(client) as feed, anyio.create_task_group() as tasks:
            self._scripts = {
                "write": client.register_script(WRITE),
                "end": client.register_script(END),
                "load": client.register_script(LOAD),
            }
            self._client = client
            tasks.start_soon(self._read, feed)
            # The whole mirror joins the feed as one load does: subscribed first, then read.
            await self._subscribe(
                feed, [name for name in self._dirty | self._mirrored() if self._wants(name)]
            )
            count = await self._resync(self._mirrored())
            if count:
                logger.warning("resynchronised %d mirrored topic(s) from redis", count)
            self._connected, self._down = True, None
            assert self._up is not None
            self._up.set()
            logger.info("following %d topic(s) on redis at %s", len(self._following), self.url)
            if lost_at is not None:
                self.reconnects += 1
                elapsed = anyio.current_time() - lost_at
                logger.warning("reconnected to redis at %s after %.1fs", self.url, elapsed)
            await self._keep_following(feed)

    def _new_client(self) -> _Client:
        options: dict[str, Any] = {
            "decode_responses": True,
            "retry_policy": NoRetryPolicy(),  # a retried write could be stored twice
            "connect_timeout": self._timeout,
            "stream_timeout": self._timeout,
        }
        if self._target.cluster:
            # not from_url: coredis 6.9's cluster from_url warns about its own startup node form
            host, port, username, password, ssl = self._target.cluster_node()
            node = TCPLocation(host, port)
            return coredis.RedisCluster(
                startup_nodes=[node], username=username, password=password, ssl=ssl, **options
            )
        return coredis.Redis.from_url(self._target.url, **options)

    def _new_feed(self, client: _Client) -> _Feed:
        options: dict[str, Any] = {
            "retry_policy": NoRetryPolicy(),  # a silent resubscribe would hide lost writes
            "subscription_timeout": self._timeout,
            "max_idle_seconds": self._block,  # then coredis pings, bounded by stream_timeout
        }
        feed: _Feed
        if isinstance(client, coredis.RedisCluster):
            feed = client.sharded_pubsub(**options)
        else:
            feed = client.pubsub(**options)
        return feed

    def _went_down(self, why: str) -> None:
        if self._up is not None and self._up.is_set():
            self._up = anyio.Event()
        self._connected, self._down = False, why
        self._client, self._scripts = None, {}
        self._session += 1
        # subscriptions die with the feed; whatever is still wanted is subscribed again
        self._dirty |= self._following
        self._following = set()
        self._unsubscribing.clear()
        joins, self._joins = self._joins, {}
        for event in joins.values():
            event.set()

    def _mirrored(self) -> set[str]:
        return {topic.name for topic in self.registry if topic.name not in self._loading}

    def _wants(self, name: str) -> bool:
        return name in self._loading or self.registry.get(name) is not None

    def _forget(self, name: str) -> None:
        """The registry dropped ``name`` (nobody here follows it): stop receiving its writes."""
        self._wake(name)

    def _wake(self, name: str) -> None:
        self._dirty.add(name)
        if self._changed is not None:
            self._changed.set()

    async def _keep_following(self, feed: _Feed) -> None:
        """Subscribe and unsubscribe as topics are loaded and forgotten, one change at a time."""
        while True:
            assert self._changed is not None
            if not self._dirty:
                await self._changed.wait()
                self._changed = anyio.Event()
            dirty, self._dirty = self._dirty, set()
            unwanted = [name for name in dirty if name in self._following and not self._wants(name)]
            if unwanted:
                self._following.difference_update(unwanted)
                channels = [self._keys.channel(name) for name in unwanted]
                self._unsubscribing.update(channels)
                await self._bounded(feed.unsubscribe(*channels))
            await self._subscribe(feed, [name for name in dirty if self._wants(name)])

    async def _subscribe(self, feed: _Feed, names: Iterable[str]) -> None:
        new = [name for name in names if name not in self._following]
        if new:
            await self._bounded(feed.subscribe(*(self._keys.channel(name) for name in new)))
            self._following.update(new)
        for name in [name for name in self._joins if name in self._following]:
            self._joins.pop(name).set()

    async def _read(self, feed: _Feed) -> None:
        """Apply what arrives on the feed to the mirror (or keep it for a topic being loaded)."""
        while True:
            message = await feed.get_message()
            if message is None:
                continue
            channel = str(message["channel"])
            kind = message["type"]
            if kind == "message":
                self.received += 1
                name = self._keys.name_of(channel)
                if self._on_write((name, *parse_message(str(message["data"])))) in ("gap", "epoch"):
                    await self._resync([name])
            elif kind in ("unsubscribe", "sunsubscribe"):
                if self._unsubscribing[channel] > 0:
                    self._unsubscribing[channel] -= 1
                elif self._keys.name_of(channel) in self._following:
                    # Redis's own doing: a cluster slot moved to another node.
                    raise _Lost(f"redis dropped the subscription to {channel!r}")

    def _on_write(self, write: _Write) -> Applied | None:
        load = self._loading.get(write[0])
        if load is not None:
            load.entries.append(write)
            return None
        return self._apply(write)

    def _apply(self, write: _Write) -> Applied:
        name, epoch, offset, kind, data = write
        if kind == "end":
            return self.registry.apply_end(name, epoch, offset, anyio.current_time())
        outcome, slow = self.registry.apply(name, epoch, offset, _kind(kind), data)
        self._slow(slow)
        return outcome

    async def _resync(self, names: Iterable[str]) -> int:
        """Bring mirrored topics up to Redis's state; returns how many were checked."""
        count = 0
        for name in sorted(names):
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
                session = await self._join(topic)
                await self._load_into(topic, pending, session)
            except BrokerUnavailable as exc:
                pending.error = exc
                raise
            finally:
                del self._loading[topic]
                pending.done.set()
                if not self.ready(topic):
                    self._wake(topic)  # not loaded after all: unsubscribe again

    async def _join(self, topic: str) -> int:
        """Have the feed subscribed to ``topic``'s channel; returns the session it is on."""
        await self._wait_up()
        session = self._session
        if topic not in self._following:
            joined = self._joins.setdefault(topic, anyio.Event())
            self._wake(topic)
            with anyio.move_on_after(self._timeout):
                await joined.wait()
            if topic not in self._following or session != self._session:
                raise BrokerUnavailable(
                    f"redis at {self.url} did not confirm following {topic!r}: {self._down}"
                )
        return session

    async def _wait_up(self) -> None:
        if self._connected:
            return
        if not self._running:
            raise BrokerUnavailable(
                f"{self!r} is not running: use it inside `hub.serve(...)` or `async with hub.running():`"
            )
        if self._down is None:  # connecting for the first time: give it ``timeout``
            assert self._up is not None
            with anyio.move_on_after(self._timeout):
                await self._up.wait()
        if not self._connected:
            raise BrokerUnavailable(f"redis at {self.url} is unreachable: {self._down or 'no answer'}")

    async def _load_into(self, topic: str, pending: _Load, session: int) -> None:
        for _ in range(3):
            snapshot = await self._fetch(topic)
            if session != self._session:
                # The feed broke while the script ran: what it would have kept is lost.
                raise BrokerUnavailable(f"lost the link to redis at {self.url} while loading {topic!r}")
            self._slow(self.registry.sync(snapshot, anyio.current_time()))
            entries, pending.entries = pending.entries, []
            outcomes = [self._apply(write) for write in entries]
            if "gap" not in outcomes and "epoch" not in outcomes:
                return
        # Still moving under us: what is installed is consistent up to its offset, and the
        # feed notices the next write that does not follow it.

    async def write(self, topic: str, kind: TopicKind, data: Any) -> int:
        args = write_args(
            topic, kind, data, self.registry.history_size, self._target, self.registry.encode_data
        )
        reply = await self._script("write", self._keys.write_keys(topic), args)
        return write_result(topic, kind, reply)

    async def end(self, topic: str) -> int:
        validate_topic(topic)
        args = end_args(self.registry.ended_retention, self._target)
        reply = await self._script("end", self._keys.write_keys(topic), args)
        return int(reply[2])

    # -- talking to Redis -------------------------------------------------------------------------

    async def _fetch(self, topic: str) -> TopicSnapshot:
        keys = [self._keys.topic(topic), self._keys.history(topic)]
        args = [new_epoch(), self.registry.history_size, self._unwritten_ttl]
        return parse_snapshot(topic, await self._script("load", keys, args))

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        if not self._scripts:
            await self._wait_up()  # raises if the broker is not running or Redis is down
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


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf of a (nested) exception group: what to report about a lost link."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _kind(text: str) -> TopicKind:
    return "state" if text == "state" else "stream"
