"""The hub core: topics, publishing, connections' lifetimes and handshake policy, on anyio.

Theory of operation
-------------------
``BaseHub`` is everything a hub is except how it meets the network. Front ends
(``trioconn/_frontends/``: the trio-websocket server behind ``Hub.serve``, the ASGI app of
``trioconn.asgi``) turn each upgrade request into a ``HandshakeRequest``, ask ``admit`` whether to
accept it (origin, ``authenticate``, shutdown), and run each accepted connection with
``serve_socket``, which wraps it in a ``ServerConnection`` — a task group of its own inside the
calling task. Everything a connection had ends with that call, under trio or asyncio alike. The
hub keeps every live connection in a ``_Group`` so ``aclose`` can close them all with 1001.

Publishing goes through the hub's ``Broker``. With the default ``MemoryBroker`` it is synchronous
underneath: ``publish_nowait`` writes to the topic registry, which encodes the event once and
appends it to each subscriber's outbox. Publishers never wait for subscribers; a subscriber that
cannot keep up is closed with 4001 and resumes from history. With a shared broker (Redis, see
``docs/scaling.md``) ``await publish`` stores the write there and the broker's task applies every
process's writes to this hub's registry. That task runs while at least one ``serve`` or
``running()`` holds it (``_BrokerRunner``): it lives in the task group of one of them, and moves to
another holder's when that one ends.
"""

from __future__ import annotations

import inspect
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup, TaskStatus
from typing_extensions import Unpack

from .._core.codec import JsonCodec
from .._core.exceptions import HandshakeRejected, HubStopped
from .broker import Broker, MemoryBroker
from .config import HandshakeRequest, HubConfig, HubSettings
from .connection import CLOSE_TIMEOUT, ConnectionStatistics, HubServices, ServerConnection
from .groups import unwrap_group
from .socket import Accepted, Admission, Refused, ServerSocket
from .threads import HubThreadHandle
from .topics import Subscriber, TopicRegistry, TopicStatistics

__all__ = ["BaseHub", "HubStatistics"]

logger = logging.getLogger("trioconn")


@attrs.frozen
class HubStatistics:
    """A snapshot of a hub, from ``Hub.statistics()``."""

    connections: int
    accepted: int
    disconnects: Mapping[str, int]
    sessions: tuple[ConnectionStatistics, ...]
    topics: Mapping[str, TopicStatistics]
    #: topics dropped after ``idle_retention`` or evicted to stay within ``max_topics``
    topics_expired: int = 0
    #: open TCP sockets of ``serve``, from accept to close (handshakes and connections)
    sockets: int = 0
    #: of those, the ones whose upgrade request has not arrived yet
    handshaking: int = 0


class BaseHub:
    """Serves live topics to WebSocket clients; how they connect is up to a front end.

    ``trioconn.Hub`` adds its own server (``serve``); ``trioconn.asgi.HubApp`` serves a hub from
    an ASGI app. Settings are ``HubConfig``'s fields, as keywords or as one ``config``.

    Args:
        config: all settings at once; or give them as keywords (not both).
        broker: where topics are stored. The default ``MemoryBroker`` keeps them in this
            process; ``trioconn.redis.RedisBroker(url)`` shares them between processes (its
            background task runs inside ``serve`` or ``running()``). One broker per hub.
        **settings: ``HubConfig``'s fields (``heartbeat_interval``, ``authenticate`` …).

    Raises:
        ValueError, TypeError: a setting is invalid; the message says which and why.
    """

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        broker: Broker | None = None,
        **settings: Unpack[HubSettings],
    ) -> None:
        if config is None:
            config = HubConfig(**settings)
        elif not isinstance(config, HubConfig):
            raise TypeError(f"config must be a HubConfig, not {type(config).__name__}")
        elif settings:
            raise TypeError(f"give settings in config or as keywords, not both (got {sorted(settings)})")
        self.config = config
        self._codec = JsonCodec(config.json_dumps, config.json_loads)
        self._registry = TopicRegistry(
            history_size=config.history_size,
            ended_retention=config.ended_retention,
            history_bytes=config.history_bytes,
            idle_retention=config.idle_retention,
            max_topics=config.max_topics,
            encode_data=self._codec.encode,
        )
        if broker is not None and not isinstance(broker, Broker):
            raise TypeError(f"broker must be a trioconn Broker, not {type(broker).__name__}")
        self._broker: Broker = MemoryBroker() if broker is None else broker
        self._broker.bind(self._registry, self._slow_consumer)
        self._broker_runner = _BrokerRunner(self._broker)
        self._services = HubServices(
            config=config,
            registry=self._registry,
            broker=self._broker,
            publish=self._publish_from_client,
            closing=self._release_subscriptions,
            finished=self._connection_finished,
        )
        self._connections: dict[str, ServerConnection] = {}
        self._disconnects: Counter[str] = Counter()
        self._accepted = 0
        #: scopes of serving calls that ``aclose`` cancels (front ends add theirs)
        self._serve_scopes: set[anyio.CancelScope] = set()
        self._all = _Group()
        #: one group per open ``running()`` block, oldest first
        self._running: list[_Group] = []
        self._stopping = False
        self._stopped = False

    # -- what front ends call ------------------------------------------------------------------

    async def admit(self, request: HandshakeRequest, *, closing: bool = False) -> Admission:
        """Decide on an upgrade request: ``Accepted(identity)`` or ``Refused(status, reason)``.

        Applies the hub's policy in order: shutting down (503, also when ``closing`` says the
        front end's own serving call is ending), ``allowed_origins`` (403), ``authenticate``
        (401 / its ``HandshakeRejected`` status / 500 if it raised). Refusals are counted in
        ``statistics().disconnects`` as ``refused-<status>`` and logged. The front end answers a
        refusal as ``config.refuse_with`` says: with its HTTP status, or (``"close"``) by
        accepting and closing at once with ``Refused.close_code``.
        """
        refusal: tuple[int, str] | None = None
        identity = None
        if self._stopping or closing:
            refusal = (503, "server shutting down")
        if refusal is None:
            refusal = self._check_origin(request)
        if refusal is None:
            identity, refusal = await self._authenticate(request)
        if refusal is None and self._stopping:
            refusal = (503, "server shutting down")  # the hook took us into the shutdown
        if refusal is not None:
            self._disconnects[f"refused-{refusal[0]}"] += 1
            logger.info("handshake from %s refused: HTTP %d %s", request.remote, *refusal)
            return Refused(*refusal)
        return Accepted(identity)

    async def serve_socket(
        self, socket: ServerSocket, identity: Any, *, groups: tuple[_Group, ...] = ()
    ) -> None:
        """Run one accepted connection until it ends; its tasks live in a task group of this call.

        Over ``max_connections`` or while shutting down, the socket is closed at once with 1013
        or 1001. Returns after the close handshake (bounded); never raises ``Exception`` once
        the connection runs. ``groups``: sets of connections a front end closes together (one
        per ``Hub.serve`` call, one per ``running()`` block for ASGI); a custom front end may
        pass ``()``.

        Raises:
            TypeError: ``socket`` is not a ``ServerSocket``.
        """
        if not isinstance(socket, ServerSocket):
            raise TypeError(f"socket must be a trioconn.ServerSocket, not {type(socket).__name__}")
        limit = self.config.max_connections
        stopping = self._stopping or any(group.closing for group in groups)
        if stopping or (limit is not None and len(self._connections) >= limit):
            reason = "server shutting down" if stopping else "connection limit reached"
            self._disconnects["shutdown" if stopping else "connection-limit"] += 1
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await socket.close(1001 if stopping else 1013, reason)
            return
        # From here to conn.run() nothing awaits: no group can start closing in between.
        conn = ServerConnection(self._services, socket, secrets.token_urlsafe(12), identity)
        conn.groups = (self._all, *groups)
        for group in conn.groups:
            group.add(conn)
        self._connections[conn.session] = conn
        self._accepted += 1
        logger.info("connection %s opened from %s", conn.session, conn.remote)
        await conn.run()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[BaseHub]:
        """Run the broker's background task for the duration of the block.

        ``serve`` does this by itself. Use it to publish through a shared broker without
        serving (a process that only publishes), around ``serve_stream``, or in the lifespan of
        an ASGI app (``trioconn.asgi``)::

            async with hub.running():
                await hub.publish("jobs/42", {"pct": 10})

        The broker runs while at least one ``running()`` block or ``serve`` call is active,
        whichever ends first. Connections an ASGI front end admits belong to the oldest open
        block: when it ends they are closed with 1001 after their queued frames. With the default
        ``MemoryBroker`` there is nothing to run.
        An exception raised in the block comes out of it unchanged.
        """
        self._check_running()
        group = _Group()
        with unwrap_group():
            async with anyio.create_task_group() as tasks:
                await self._broker_runner.hold(tasks)
                self._running.append(group)
                try:
                    yield self
                finally:
                    self._running.remove(group)
                    with anyio.CancelScope(shield=True):
                        await group.close_all()  # each connection bounds its own close
                    await self._broker_runner.release(tasks, hand_over=not self._stopping)

    def _running_group(self) -> _Group | None:
        """The connections of the oldest open ``running()`` block (None if there is none): a
        front end without a serving call of its own (ASGI) admits into it."""
        return self._running[0] if self._running else None

    def _check_origin(self, request: HandshakeRequest) -> tuple[int, str] | None:
        allowed = self.config.allowed_origins
        if allowed is None:
            return None
        if len(request.origins) > 1:
            # A browser sends one; with two, which one a check looks at decides the outcome.
            return 403, "more than one Origin header"
        origin = request.headers.get("origin")
        if origin is not None and origin not in allowed:
            return 403, f"origin {origin} is not allowed"
        return None

    async def _authenticate(self, info: HandshakeRequest) -> tuple[Any, tuple[int, str] | None]:
        hook = self.config.authenticate
        if hook is None:
            return None, None
        try:
            identity = hook(info)
            if inspect.isawaitable(identity):
                identity = await identity
        except HandshakeRejected as exc:
            return None, (exc.status, exc.body.decode("utf-8", "replace") or "forbidden")
        except Exception:
            logger.exception("the authenticate hook raised; refusing %s with HTTP 500", info.remote)
            return None, (500, "internal error")
        if identity is None:
            return None, (401, "unauthorized")
        return identity, None

    def _count(self, cause: str) -> None:
        """A handshake that ended before any connection existed (refused, timed out)."""
        self._disconnects[cause] += 1

    def _release_subscriptions(self, conn: ServerConnection) -> None:
        """Called once by each connection as it starts closing: nothing more is queued for it."""
        now = anyio.current_time()
        for topic in conn.subscriptions:
            self._registry.unsubscribe(topic, conn, now=now)
        conn.subscriptions.clear()
        self._disconnects[conn.cause] += 1

    def _connection_finished(self, conn: ServerConnection) -> None:
        """Called once by each connection when its close handshake is over (or timed out)."""
        self._connections.pop(conn.session, None)
        for group in conn.groups:
            group.discard(conn)

    # -- publishing ----------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._stopping or self._stopped:
            raise HubStopped("the hub has been closed")

    def _slow_consumer(self, sub: Subscriber) -> None:
        if isinstance(sub, ServerConnection):
            sub.slow_consumer()

    def publish_nowait(self, topic: str, data: Any) -> int:
        """Append ``data`` to stream topic ``topic`` and queue it for every subscriber.

        Never blocks: a subscriber that cannot take it is closed with 4001 and resumes later.

        Returns:
            The event's offset.

        Raises:
            TypeError: ``data`` is not JSON-serializable.
            ValueError: invalid topic name, or ``topic`` is a state topic.
            TopicEnded: the topic has ended.
            TooManyTopics: a new topic is needed, the hub holds ``max_topics`` and none of them
                can be dropped (each is followed or holds state).
            HubStopped: the hub has been closed.
            RuntimeError: the broker cannot write without waiting (``RedisBroker``): use
                ``await publish``. There is deliberately no hidden queue that could lose writes.
        """
        self._check_running()
        return self._broker.write_nowait(topic, "stream", data)

    async def publish(self, topic: str, data: Any) -> int:
        """Append ``data`` to stream topic ``topic``; returns the event's offset.

        With the default broker this is ``publish_nowait`` after a checkpoint. With a shared
        broker it returns once the write is stored there (it reaches this hub's subscribers, and
        every other hub's, through the broker's task).

        Raises:
            BrokerUnavailable: the shared broker cannot be reached; nothing was published (if
                the link failed after the request was sent, the outcome is unknown; the
                message says so).
            TypeError, ValueError, TopicEnded, HubStopped: as ``publish_nowait``.
        """
        self._check_running()
        offset = await self._broker.write(topic, "stream", data)
        return offset

    async def _publish_from_client(self, topic: str, data: Any) -> int:
        """A client's ``publish``: its data goes through ``json_loads`` first (a ``TypeError``
        when the hook refuses it, which the connection answers with ``invalid-field``)."""
        if self._codec.loads is not None:
            try:
                data = self._codec.decode(data)
            except Exception as exc:
                raise TypeError(f"was refused by json_loads: {exc}") from exc
        return await self.publish(topic, data)

    def set_state_nowait(self, topic: str, value: Any) -> int:
        """Set state topic ``topic`` to ``value``: new subscribers get it as their snapshot.

        A subscriber still holding an unsent older value gets only this one.
        Raises the same errors as ``publish_nowait``.
        """
        self._check_running()
        return self._broker.write_nowait(topic, "state", value)

    async def set_state(self, topic: str, value: Any) -> int:
        """Like ``set_state_nowait``, awaitable; raises the same errors as ``publish``."""
        self._check_running()
        return await self._broker.write(topic, "state", value)

    def end_nowait(self, topic: str) -> int:
        """End ``topic``: subscribers get ``end`` after what is queued; later ones get it at once.

        Idempotent. Returns the final offset.
        """
        self._check_running()
        return self._broker.end_nowait(topic)

    async def end(self, topic: str) -> int:
        """Like ``end_nowait``, awaitable; raises the same errors as ``publish``."""
        self._check_running()
        return await self._broker.end(topic)

    @property
    def synchronous(self) -> bool:
        """True if the ``*_nowait`` methods work: the broker writes without I/O (``MemoryBroker``)."""
        return self._broker.synchronous

    def from_thread(self) -> HubThreadHandle:
        """A handle that worker threads use to publish, set state and end topics.

        Call this in the hub's event loop (trio or asyncio: it remembers which) and hand the
        result to threads.
        """
        return HubThreadHandle(self, anyio.lowlevel.current_token())

    # -- control -------------------------------------------------------------------------------

    def close(self, session: str, code: int = 1000, reason: str = "work done") -> bool:
        """Close one client's connection after its queued frames are sent.

        Args:
            session: the session id the client got in ``welcome``.
            code: 1000 (work done, the client will not reconnect) or an application code
                3000-4999.
            reason: a short text, at most 123 bytes in UTF-8.

        Returns:
            False if no such session is connected (it may have just left).
        """
        if isinstance(code, bool) or not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(f"close code must be 1000 or 3000-4999, got {code!r}")
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        if len(reason.encode()) > 123:
            raise ValueError("close reason must be at most 123 bytes in UTF-8")
        conn = self._connections.get(session)
        if conn is None:
            return False
        return conn.close(code, reason, "server-closed", drain=True)

    def sessions(self) -> list[str]:
        """Session ids of the connected clients."""
        return list(self._connections)

    async def aclose(self) -> None:
        """Close every client with 1001 (after its queued frames, within ``drain_timeout``),
        stop serving, and return once every connection task has finished. Safe to call twice."""
        if self._stopped:
            return
        self._stopping = True
        await self._all.close_all()
        for scope in list(self._serve_scopes):
            scope.cancel()
        self._stopped = True
        logger.info("hub closed")

    def statistics(self) -> HubStatistics:
        """Connections, per-connection counters, disconnects by cause, topics."""
        sockets, handshaking = self._socket_counts()
        return HubStatistics(
            connections=len(self._connections),
            accepted=self._accepted,
            disconnects=dict(self._disconnects),
            sessions=tuple(conn.statistics() for conn in self._connections.values()),
            topics={topic.name: topic.statistics() for topic in self._registry},
            topics_expired=self._registry.expired,
            sockets=sockets,
            handshaking=handshaking,
        )

    def _socket_counts(self) -> tuple[int, int]:
        """Open sockets and those still in their handshake, for front ends that count them."""
        return 0, 0


class _Group:
    """A set of connections (one ``serve`` call's, or the hub's) that can be closed together."""

    def __init__(self) -> None:
        self._members: set[ServerConnection] = set()
        self._empty = anyio.Event()
        self._empty.set()
        #: set by ``close_all``: the hub admits no new member (it refuses the handshake instead)
        self.closing = False

    def add(self, conn: ServerConnection) -> None:
        assert not self.closing, "a closing group takes no new connection"
        if not self._members:
            self._empty = anyio.Event()
        self._members.add(conn)

    def discard(self, conn: ServerConnection) -> None:
        self._members.discard(conn)
        if not self._members:
            self._empty.set()

    async def close_all(self) -> None:
        """Close every member with 1001 after its queued frames; return when all have ended.

        Bounded: each connection gives itself ``drain_timeout`` to flush and then the close
        timeout for the handshake; no member joins once this started (``closing``).
        """
        self.closing = True
        for conn in list(self._members):
            conn.close(1001, "server shutting down", "shutdown", drain=True)
        await self._empty.wait()


class _BrokerRunner:
    """Runs the broker's task while at least one ``running()`` block (``serve`` has one) holds it.

    The task lives in the nursery of the holder that started it. When that holder ends while
    others remain, the task is stopped there and started again in the nursery of the oldest
    remaining holder — a nursery that outlives it, so nothing runs unsupervised. The broker picks
    up where it stopped (``RedisBroker`` keeps its firehose position), so nothing is missed; a
    write awaiting the broker at that moment may fail with ``BrokerUnavailable``.
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._holders: list[TaskGroup] = []
        self._host: TaskGroup | None = None
        # Created in the event loop by ``_start``: a hub may be built before any loop runs.
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()
        self._lock = anyio.Lock()

    async def hold(self, nursery: TaskGroup) -> None:
        """Register ``nursery``'s holder; start the broker in it if it is not running yet."""
        self._holders.append(nursery)
        try:
            async with self._lock:
                if self._host is None:
                    await self._start(nursery)
        except BaseException:
            self._holders.remove(nursery)
            raise

    async def release(self, nursery: TaskGroup, *, hand_over: bool) -> None:
        """Unregister; if the broker runs in ``nursery``, stop it and move it to another holder.

        Shielded and bounded: this runs as a ``serve`` call shuts down, cancelled or not.
        """
        self._holders.remove(nursery)
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _HANDOVER_TIMEOUT) as scope:
            async with self._lock:
                if self._host is not nursery or self._scope is None:
                    return
                self._scope.cancel()
                await self._stopped.wait()
                self._host = None
                if hand_over and self._holders:
                    await self._start(self._holders[0])
        if scope.cancelled_caught:
            logger.error("the broker did not restart within %gs; publishing will fail", _HANDOVER_TIMEOUT)

    async def _start(self, nursery: TaskGroup) -> None:
        scope, stopped = anyio.CancelScope(), anyio.Event()
        await nursery.start(self._run, scope, stopped)
        self._host, self._scope, self._stopped = nursery, scope, stopped

    async def _run(
        self, scope: anyio.CancelScope, stopped: anyio.Event, *, task_status: TaskStatus[None]
    ) -> None:
        try:
            with scope:
                await self._broker.run(task_status=task_status)
        finally:
            stopped.set()


#: How long moving the broker to another holder may take (stopping it, starting it again).
_HANDOVER_TIMEOUT = 10.0
