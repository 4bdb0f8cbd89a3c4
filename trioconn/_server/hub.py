"""The hub core: topics, publishing, connections' lifetimes and handshake policy, on anyio.

Theory of operation
-------------------
``BaseHub`` is everything a hub is except how it meets the network. Front ends
(``trioconn/_frontends/``: the trio and wsproto server behind ``Hub.serve``, the ASGI app of
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

Application code reacts to clients in-process through four doors, each a small module of its
own: ``subscribe`` follows a topic like a client (``follow.py``), ``publications`` reads what
clients publish (``publications.py``), ``on_request`` answers their requests (``requests.py``),
and ``presence``/``presence_changes`` tell who is subscribed (``presence.py``). All of them
touch the hub's state, so, like publishing, they belong to the hub's event loop thread; a call
from another thread is refused with an error that names ``from_thread()``.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup, TaskStatus
from typing_extensions import Unpack

from .._core.codec import JsonCodec
from .._core.exceptions import HandshakeRejected, HubStopped, TrioconnError
from .._core.protocol import validate_topic
from .._core.ratelog import RateLimitedLog
from .broker import Broker, MemoryBroker
from .clock import HeartbeatClock
from .config import HandshakeRequest, HubConfig, HubSettings
from .connection import CLOSE_TIMEOUT, ConnectionStatistics, HubServices, OpenTaskGroup, ServerConnection
from .follow import HubSubscription
from .groups import unwrap_group
from .histogram import Histogram, HistogramSnapshot
from .patterns import TopicPattern
from .presence import Member, Presence, PresenceChanges
from .publications import Publication, Publications
from .requests import RequestHandler, RequestHandlers
from .socket import Accepted, Admission, Refused, ServerSocket
from .threads import HubThreadHandle
from .topics import Subscriber, TopicRegistry, TopicStatistics

H = TypeVar("H", bound=RequestHandler)

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
    #: writes (``publish``, ``set_state``, clients' publications) this hub made since it started
    events_published: int = 0
    #: events and state values queued for subscribers, over every connection so far
    events_delivered: int = 0
    #: events queued for subscribers that were never sent (slow consumers, closes, superseded state)
    events_dropped: int = 0
    #: every ping round-trip time measured, in buckets
    ping_rtt: HistogramSnapshot = attrs.field(factory=HistogramSnapshot)
    #: False while a shared broker cannot reach its store (publishing fails meanwhile)
    broker_connected: bool = True


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

    #: opens each connection's task group; a front end may give a lighter one for its event loop
    _open_task_group: OpenTaskGroup = staticmethod(anyio.create_task_group)

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
        #: sends every connection's pings: one timer per bucket of time, not one per connection
        self._clock = HeartbeatClock(config.heartbeat_interval / CLOCK_BUCKETS)
        self._broker_runner = _BrokerRunner(self._background)
        self._presence = Presence()
        self._requests = RequestHandlers()
        #: open ``publications()`` readers and ``subscribe()`` followers
        self._readers: list[Publications] = []
        self._followers: set[HubSubscription] = set()
        #: the thread of the event loop the hub runs in (set by the first call made there)
        self._loop_thread: int | None = None
        #: counts of connections that have finished, and of writes: ``statistics()`` adds them up
        self._totals: Counter[str] = Counter()
        self._rtt = Histogram()
        self._services = HubServices(
            config=config,
            registry=self._registry,
            broker=self._broker,
            publish=self.publish,
            closing=self._release_subscriptions,
            finished=self._connection_finished,
            presence=self._presence,
            requests=self._requests,
            published=self._published,
            log=RateLimitedLog(logger, anyio.current_time),
            codec=self._codec,
            observe_rtt=self._rtt.observe,
            clock=self._clock,
            open_task_group=self._open_task_group,
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

    async def _background(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """What runs while the hub runs: the heartbeat clock and the broker's task.

        A failing broker comes out as its own exception, not in a group of this task group's.
        """
        with unwrap_group():
            async with anyio.create_task_group() as tasks:
                await tasks.start(self._clock.run)
                await self._broker.run(task_status=task_status)

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
        self._check_running("running")
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
            self._presence.leave(topic, conn.session)
        conn.subscriptions.clear()
        self._disconnects[conn.cause] += 1

    def _connection_finished(self, conn: ServerConnection) -> None:
        """Called once by each connection when its close handshake is over (or timed out)."""
        self._connections.pop(conn.session, None)
        self._totals.update(delivered=conn.events_delivered, dropped=conn.events_dropped)
        for group in conn.groups:
            group.discard(conn)

    # -- publishing ----------------------------------------------------------------------------

    def _check_running(self, call: str = "") -> None:
        """Refuse a call from outside the hub's event loop thread, or after ``aclose``."""
        if threading.get_ident() != self._loop_thread:
            self._enter_thread(call)
        if self._stopping or self._stopped:
            raise HubStopped("the hub has been closed")

    def _enter_thread(self, call: str) -> None:
        """The first call in an event loop claims its thread; a call from elsewhere is refused.

        A thread without an event loop (a worker thread) is always refused: the hub's state
        is not thread-safe. Another event loop's thread may take the hub over only while the
        hub is idle there (nothing served, followed or read), e.g. a second ``trio.run``.
        """
        name = f"hub.{call or 'serve'}()"
        try:
            anyio.lowlevel.current_token()
        except RuntimeError:
            raise TrioconnError(
                f"{name} was called from a thread without an event loop (a worker thread?): the "
                "hub is not thread-safe. Call hub.from_thread() in the hub's event loop and "
                "publish from the thread through that handle (handle.publish/set_state/end)"
            ) from None
        if self._loop_thread is not None and self._busy():
            raise TrioconnError(
                f"{name} was called from another thread's event loop than the one running the "
                "hub: use a handle from hub.from_thread() (made in the hub's event loop) there"
            )
        self._loop_thread = threading.get_ident()

    def _busy(self) -> bool:
        return bool(
            self._connections or self._running or self._serve_scopes or self._followers or self._readers
        )

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
        self._check_running("publish_nowait")
        offset = self._broker.write_nowait(topic, "stream", data)
        self._totals["published"] += 1
        return offset

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
        self._check_running("publish")
        offset = await self._broker.write(topic, "stream", data)
        self._totals["published"] += 1
        return offset

    def set_state_nowait(self, topic: str, value: Any) -> int:
        """Set state topic ``topic`` to ``value``: new subscribers get it as their snapshot.

        A subscriber still holding an unsent older value gets only this one.
        Raises the same errors as ``publish_nowait``.
        """
        self._check_running("set_state_nowait")
        offset = self._broker.write_nowait(topic, "state", value)
        self._totals["published"] += 1
        return offset

    async def set_state(self, topic: str, value: Any) -> int:
        """Like ``set_state_nowait``, awaitable; raises the same errors as ``publish``."""
        self._check_running("set_state")
        offset = await self._broker.write(topic, "state", value)
        self._totals["published"] += 1
        return offset

    def end_nowait(self, topic: str) -> int:
        """End ``topic``: subscribers get ``end`` after what is queued; later ones get it at once.

        Idempotent. Returns the final offset.
        """
        self._check_running("end_nowait")
        return self._broker.end_nowait(topic)

    async def end(self, topic: str) -> int:
        """Like ``end_nowait``, awaitable; raises the same errors as ``publish``."""
        self._check_running("end")
        return await self._broker.end(topic)

    @property
    def synchronous(self) -> bool:
        """True if the ``*_nowait`` methods work: the broker writes without I/O (``MemoryBroker``)."""
        return self._broker.synchronous

    def from_thread(self) -> HubThreadHandle:
        """A handle that worker threads use to publish, set state and end topics.

        Call this in the hub's event loop (trio or asyncio: it remembers which) and hand the
        result to threads.

        Raises:
            TrioconnError: called from a thread without an event loop (call it in the hub's
                event loop and pass the handle to the thread).
        """
        try:
            token = anyio.lowlevel.current_token()
        except RuntimeError:
            raise TrioconnError(
                "hub.from_thread() was called from a thread without an event loop: call it in "
                "the hub's event loop and pass the handle it returns to the worker thread"
            ) from None
        return HubThreadHandle(self, token)

    # -- reacting to clients in-process -------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, last: int | None = None, buffer_size: int = 256
    ) -> AsyncIterator[HubSubscription]:
        """Follow ``topic`` in this process, as a client would, without a socket::

            async with hub.subscribe("jobs/42") as sub:
                async for item in sub:  # SnapshotItem, EventItem, ResetItem
                    ...

        The same items and order as a client subscription: a state topic's value first, the
        ``last`` events of a stream replayed, then every write; iteration ends at the topic's
        end, when the block is left, or when the hub is closed. Publishers never wait for it:
        a follower more than ``buffer_size`` events behind catches up from history when it has
        read its buffer (a ``ResetItem`` if the history no longer reaches back), never with a
        silent gap. ``await sub.ready()`` tells where it started. With a shared broker (Redis)
        the broker must be running (``serve`` or ``running()``).

        Args:
            topic: the topic to follow.
            last: replay up to this many of a stream topic's most recent events first.
            buffer_size: live events held for the consumer before it counts as behind.

        Raises:
            ValueError, TypeError: an invalid argument (the message names it).
            TooManyTopics: the topic is new and the hub holds ``max_topics``.
            BrokerUnavailable: the shared broker cannot load the topic.
            HubStopped: the hub has been closed.
        """
        _check_topic(topic, "topic")
        if last is not None:
            _check_count(last, "last", minimum=0)
        _check_count(buffer_size, "buffer_size", minimum=1)
        self._check_running("subscribe")
        follower = HubSubscription(
            topic,
            last=last,
            buffer_size=buffer_size,
            registry=self._registry,
            broker=self._broker,
            decode=self._codec.decode_item if self._codec.loads is not None else None,
        )
        self._followers.add(follower)
        try:
            await follower._attach(resume=False)
            yield follower
        finally:
            self._followers.discard(follower)
            follower._detach()

    @asynccontextmanager
    async def publications(
        self, topic_or_prefix: str, *, buffer_size: int = 256
    ) -> AsyncIterator[Publications]:
        """Read what clients publish on a topic (or on every topic with a prefix: ``"jobs/*"``)::

            async with hub.publications("jobs/control") as publications:
                async for publication in publications:
                    print(publication.identity, publication.data)

        Each ``Publication`` (topic, data, offset, identity, session) arrives after it was
        stored, only on the hub process whose client published it (with a shared broker, once
        in all). Every open reader gets every matching publication. Clients never wait for a
        reader: one more than ``buffer_size`` behind loses the publications that do not fit,
        and iteration raises ``PublicationsLost(count)`` where they are missing, once, then
        continues. Iteration ends when the hub is closed. Whether a client may publish at all
        is ``authorize``'s decision (action ``"publish"``).

        Raises:
            ValueError, TypeError: an invalid argument (the message names it).
            HubStopped: the hub has been closed.
        """
        pattern = TopicPattern.parse(topic_or_prefix)
        _check_count(buffer_size, "buffer_size", minimum=1)
        self._check_running("publications")
        reader = Publications(pattern, buffer_size)
        self._readers.append(reader)
        try:
            await anyio.lowlevel.checkpoint()
            yield reader
        finally:
            self._readers.remove(reader)
            reader._close()

    def _published(self, publication: Publication) -> None:
        for reader in self._readers:
            if reader.pattern.matches(publication.topic):
                reader._put(publication)

    @overload
    def on_request(self, topic_or_prefix: str) -> Callable[[H], H]: ...

    @overload
    def on_request(self, topic_or_prefix: str, handler: H) -> H: ...

    def on_request(self, topic_or_prefix: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Answer clients' ``request`` on a topic (or on every topic with a prefix: ``"jobs/*"``).

        ``handler(request)`` (async or not) gets a ``Request`` (topic, data, identity,
        session); what it returns (JSON) is the reply. Raising ``RequestRefused(code, message)``
        answers with that error code; any other exception answers ``request-failed`` and is
        logged with its traceback. Each runs in its client's connection (cancelled if the
        client goes), within ``request_timeout``, at most ``max_requests_in_flight`` per
        connection. An exact topic wins over a prefix, a longer prefix over a shorter one.
        Whether a client may ask at all is ``authorize``'s decision (action ``"request"``).
        Works as a decorator too: ``@hub.on_request("jobs/start")``.

        Returns:
            ``handler`` (or, without one, a decorator that registers its function).

        Raises:
            ValueError: the pattern already has a handler, or is not a valid topic.
            TypeError: ``handler`` is not callable.
        """
        pattern = TopicPattern.parse(topic_or_prefix)
        if handler is None:

            def register(function: H) -> H:
                self._requests.add(pattern, function)
                return function

            return register
        self._requests.add(pattern, handler)
        return handler

    def presence(self, topic: str) -> tuple[Member, ...]:
        """The client subscriptions of ``topic`` on this hub process, oldest first.

        Each ``Member`` has the client's ``identity``, ``session``, ``since`` (a Unix time) and
        the ``info`` other subscribers are shown (see ``trioconn.Allow``). In-process followers
        (``hub.subscribe``) are not members. Not shared through a broker: with Redis, each
        process knows its own clients.
        """
        _check_topic(topic, "topic")
        self._check_thread("presence")
        return self._presence.members(topic)

    @asynccontextmanager
    async def presence_changes(
        self, topic_or_prefix: str, *, buffer_size: int = 256
    ) -> AsyncIterator[PresenceChanges]:
        """Read ``Joined``/``Left`` as clients subscribe to a topic (or a prefix's topics) and leave::

            async with hub.presence_changes("rooms/*") as changes:
                async for change in changes:
                    print(type(change).__name__, change.topic, change.identity)

        A subscription leaves when the client unsubscribes, the topic ends, or the connection
        ends in any way. A reader more than ``buffer_size`` changes behind gets the net changes
        (a client that came and went meanwhile is left out), so its view stays right and its
        memory bounded. Iteration ends when the hub is closed.

        Raises:
            ValueError, TypeError: an invalid argument (the message names it).
            HubStopped: the hub has been closed.
        """
        pattern = TopicPattern.parse(topic_or_prefix)
        _check_count(buffer_size, "buffer_size", minimum=1)
        self._check_running("presence_changes")
        reader = PresenceChanges(pattern, buffer_size)
        self._presence.add_reader(reader)
        try:
            await anyio.lowlevel.checkpoint()
            yield reader
        finally:
            self._presence.remove_reader(reader)

    def _check_thread(self, call: str) -> None:
        if threading.get_ident() != self._loop_thread:
            self._enter_thread(call)

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
        for follower in list(self._followers):
            follower._finish()
        for reader in self._readers:
            reader._close()
        self._presence.close_readers()
        self._stopped = True
        logger.info("hub closed")

    def statistics(self) -> HubStatistics:
        """Connections, per-connection counters, disconnects by cause, topics."""
        sockets, handshaking = self._socket_counts()
        live = [conn.statistics() for conn in self._connections.values()]
        return HubStatistics(
            connections=len(self._connections),
            accepted=self._accepted,
            disconnects=dict(self._disconnects),
            sessions=tuple(live),
            topics={
                topic.name: topic.statistics(self._presence.count(topic.name)) for topic in self._registry
            },
            topics_expired=self._registry.expired,
            sockets=sockets,
            handshaking=handshaking,
            events_published=self._totals["published"],
            events_delivered=self._totals["delivered"] + sum(conn.events_delivered for conn in live),
            events_dropped=self._totals["dropped"] + sum(conn.events_dropped for conn in live),
            ping_rtt=self._rtt.snapshot(),
            broker_connected=self._broker.connected,
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
    """Runs the hub's background task (the broker's, the heartbeat clock) while at least one
    ``running()`` block (``serve`` has one) holds it.

    The task lives in the nursery of the holder that started it. When that holder ends while
    others remain, the task is stopped there and started again in the nursery of the oldest
    remaining holder — a nursery that outlives it, so nothing runs unsupervised. The broker picks
    up where it stopped (``RedisBroker`` subscribes again and resynchronises its topics), so
    nothing is missed; a write awaiting the broker at that moment may fail with
    ``BrokerUnavailable``.
    """

    def __init__(self, run: Callable[..., Awaitable[None]]) -> None:
        #: ``run(task_status=...)``: started in a holder's nursery, cancelled to move or stop it
        self._run_background = run
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
                await self._run_background(task_status=task_status)
        finally:
            stopped.set()


#: The heartbeat clock's buckets per heartbeat interval: a ping goes out at most 1/64 of the
#: interval late (0.23 s of the default 15 s), and each bucket's timer pings every connection
#: due within it.
CLOCK_BUCKETS = 64

#: How long moving the broker to another holder may take (stopping it, starting it again).
_HANDOVER_TIMEOUT = 10.0


def _check_topic(topic: object, argument: str) -> None:
    try:
        validate_topic(topic)
    except ValueError as exc:
        message = str(exc).replace("topic", argument, 1)
        raise (TypeError if not isinstance(topic, str) else ValueError)(message) from None


def _check_count(value: object, argument: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argument} must be >= {minimum}, got {value}")
