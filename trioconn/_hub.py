"""The server hub: accepts WebSocket clients, keeps topics, fans publications out.

Theory of operation
-------------------
``Hub.serve`` accepts sockets itself (``_listener.py``: counted from accept, limited before the
handshake, bad requests answered there) and hands each valid upgrade request to
``_handle_request``; each accepted client becomes a ``ServerConnection`` whose nursery lives
inside the serving task, so cancelling ``serve`` ends every connection (each sends 1001 on its way
out). The handshake is where policy applies: origin, authentication and the connection limit are
checked before any connection state exists. A ``serve`` call that is shutting down refuses the
handshakes that complete meanwhile (503), so its shutdown waits only for the connections it had.

Publishing goes through the hub's ``Broker``. With the default ``MemoryBroker`` it is synchronous
underneath: ``publish_nowait`` writes to the topic registry, which encodes the event once and
appends it to each subscriber's outbox. Publishers never wait for subscribers; a subscriber that
cannot keep up is closed with 4001 and resumes from history. With a shared broker (Redis, see
``docs/scaling.md``) ``await publish`` stores the write there and the broker's task applies every
process's writes to this hub's registry. That task runs while at least one ``serve`` or
``running()`` holds it (``_BrokerRunner``): it lives in the nursery of one of them, and moves to
another holder's nursery when that one ends.
"""

from __future__ import annotations

import inspect
import logging
import math
import secrets
import ssl
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
import trio_websocket

from ._broker import Broker, MemoryBroker
from ._connection import CLOSE_TIMEOUT, ConnectionStatistics, ServerConnection
from ._exceptions import HandshakeRejected, HubStopped
from ._groups import unwrap_group
from ._listener import SocketGate, open_listeners, remote, serve_listeners
from ._listener import serve_stream as serve_one_stream
from ._protocol import MAX_HEARTBEAT, MIN_HEARTBEAT
from ._threads import HubThreadHandle
from ._topics import Subscriber, TopicRegistry, TopicStatistics

__all__ = ["HandshakeRequest", "Hub", "HubConfig", "HubStatistics"]

logger = logging.getLogger("trioconn")


@attrs.frozen
class HandshakeRequest:
    """What ``authenticate`` sees of a client's opening handshake.

    Attributes:
        path: the request target without the query string.
        query: query-string parameters (the last value wins).
        headers: request headers, names lower-cased.
        token: the bearer token, from ``?token=`` or ``Authorization: Bearer``.
        remote: the peer's address, for logs.
    """

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    token: str | None
    remote: str


Authenticate = Callable[[HandshakeRequest], Any]
Authorize = Callable[[Any, str, str], "bool | Awaitable[bool]"]


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


def _optional_callable(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None")

    return check


@attrs.frozen(kw_only=True)
class HubConfig:
    """A hub's settings, validated once. Defaults and the reasons for them: ``docs/server.md``."""

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
    allowed_origins: frozenset[str] | None = attrs.field(default=None)
    authenticate: Authenticate | None = attrs.field(
        default=None, validator=_optional_callable("authenticate")
    )
    authorize: Authorize | None = attrs.field(default=None, validator=_optional_callable("authorize"))

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


class Hub:
    """Serves live topics to WebSocket clients.

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
        authorize: ``(identity, topic, action) -> bool`` (sync or async), action being
            ``"subscribe"`` or ``"publish"``. Without it, subscribing is allowed and client
            publishing is refused.
        broker: where topics are stored. The default ``MemoryBroker`` keeps them in this
            process; ``trioconn.redis.RedisBroker(url)`` shares them between processes (its
            background task runs inside ``serve`` or ``running()``). One broker per hub.

    Raises:
        ValueError, TypeError: a setting is invalid; the message says which and why.
    """

    def __init__(
        self,
        *,
        heartbeat_interval: float = 15.0,
        heartbeat_timeout: float = 45.0,
        history_size: int = 2000,
        history_bytes: int = 1 << 20,
        idle_retention: float = 3600.0,
        max_topics: int = 100_000,
        outbox_size: int = 500,
        outbox_bytes: int = 2 << 20,
        max_frame_size: int = 65536,
        max_batch_bytes: int = 65536,
        send_timeout: float = 10.0,
        drain_timeout: float = 5.0,
        handshake_timeout: float = 10.0,
        max_handshakes: int = 1024,
        max_sockets: int | None = None,
        ended_retention: float = 300.0,
        max_connections: int | None = None,
        max_subscriptions: int = 1000,
        allowed_origins: Collection[str] | None = None,
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
        broker: Broker | None = None,
    ) -> None:
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins must be a collection of origins, not a single string")
        self.config = HubConfig(
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            history_size=history_size,
            history_bytes=history_bytes,
            idle_retention=idle_retention,
            max_topics=max_topics,
            outbox_size=outbox_size,
            outbox_bytes=outbox_bytes,
            max_frame_size=max_frame_size,
            max_batch_bytes=max_batch_bytes,
            send_timeout=send_timeout,
            drain_timeout=drain_timeout,
            handshake_timeout=handshake_timeout,
            max_handshakes=max_handshakes,
            max_sockets=max_sockets,
            ended_retention=ended_retention,
            max_connections=max_connections,
            max_subscriptions=max_subscriptions,
            allowed_origins=None if allowed_origins is None else frozenset(allowed_origins),
            authenticate=authenticate,
            authorize=authorize,
        )
        self._registry = TopicRegistry(
            history_size=history_size,
            ended_retention=ended_retention,
            history_bytes=history_bytes,
            idle_retention=idle_retention,
            max_topics=max_topics,
        )
        if broker is not None and not isinstance(broker, Broker):
            raise TypeError(f"broker must be a trioconn Broker, not {type(broker).__name__}")
        self._broker: Broker = MemoryBroker() if broker is None else broker
        self._broker.bind(self._registry, self._slow_consumer)
        self._broker_runner = _BrokerRunner(self._broker)
        self._gate = SocketGate(self.config.max_handshakes, self.config.max_sockets)
        self._connections: dict[str, ServerConnection] = {}
        self._disconnects: Counter[str] = Counter()
        self._accepted = 0
        self._serve_scopes: set[trio.CancelScope] = set()
        self._all = _Group()
        self._stopping = False
        self._stopped = False

    # -- serving -------------------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept WebSocket clients on ``host:port`` until cancelled or ``aclose()``.

        Use ``port = await nursery.start(hub.serve, host, 0)``: the bound port comes back through
        ``task_status``. Cancelling this task closes every connection with 1001. A hub can be
        served again after ``serve`` returns (its topics stay), and served on several ports at
        once; not after ``aclose()``.

        Raises:
            OSError: the address cannot be bound (e.g. the port is in use), or accepting failed
                for a reason other than running out of descriptors or memory.
        """
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
        self._check_running()
        config = self.config
        listeners = await open_listeners(host, port)
        try:
            ports = {listener.socket.getsockname()[1] for listener in listeners}
            if len(ports) != 1:
                raise RuntimeError(
                    f"{host!r} resolved to several addresses that got different ports {sorted(ports)}: "
                    "give a numeric address, or a port other than 0"
                )
            (bound,) = ports

            async def listen(outer: trio.Nursery, handlers: trio.Nursery, group: _Group) -> None:
                outer.start_soon(
                    partial(
                        serve_listeners,
                        listeners,
                        self._gate,
                        handlers,
                        partial(self._handle_request, group=group),
                        self._count,
                        ssl_context=ssl_context,
                        handshake_timeout=config.handshake_timeout,
                        max_message_size=config.max_frame_size,
                    )
                )
                logger.info("serving on %s:%d", host, bound)
                task_status.started(bound)
                try:
                    await trio.sleep_forever()
                finally:
                    # Let go of the port at once (it can be served again while we shut down);
                    # the accept loops end.
                    for listener in listeners:
                        await trio.aclose_forcefully(listener)

            with trio.CancelScope() as scope:
                self._serve_scopes.add(scope)
                try:
                    async with self.running():
                        await self._run_guarded(listen)
                finally:
                    self._serve_scopes.discard(scope)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Hub]:
        """Run the broker's background task for the duration of the block.

        ``serve`` does this by itself. Use it to publish through a shared broker without
        serving (a process that only publishes), or around ``serve_stream``::

            async with hub.running():
                await hub.publish("jobs/42", {"pct": 10})

        The broker runs while at least one ``running()`` block or ``serve`` call is active,
        whichever ends first. With the default ``MemoryBroker`` there is nothing to run.
        An exception raised in the block comes out of it unchanged.
        """
        self._check_running()
        with unwrap_group():
            async with trio.open_nursery() as nursery:
                await self._broker_runner.hold(nursery)
                try:
                    yield self
                finally:
                    await self._broker_runner.release(nursery, hand_over=not self._stopping)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one already-connected stream (e.g. one end of ``trio.testing.memory_stream_pair``).

        Returns when that connection has ended. This is what in-memory tests use: no sockets,
        and it runs under ``trio.testing.MockClock``. The handshake is checked as ``serve``
        checks it. Cancelling it closes with 1001.
        """
        self._check_running()

        async def one(outer: trio.Nursery, handlers: trio.Nursery, group: _Group) -> None:
            done = trio.Event()

            async def handle() -> None:
                try:
                    await serve_one_stream(
                        stream,
                        partial(self._handle_request, group=group),
                        self._count,
                        handshake_timeout=self.config.handshake_timeout,
                        max_message_size=self.config.max_frame_size,
                    )
                finally:
                    done.set()

            handlers.start_soon(handle)
            await done.wait()

        try:
            await self._run_guarded(one)
        finally:
            await trio.aclose_forcefully(stream)

    async def _run_guarded(
        self, body: Callable[[trio.Nursery, trio.Nursery, _Group], Awaitable[None]]
    ) -> None:
        """Run ``body`` with a handler nursery that outside cancellation does not reach directly.

        trio-websocket's reader task lives in the handler nursery; if a cancellation killed it,
        no close handshake could complete and every connection would wait out its close
        timeout. Instead, when ``body`` ends for any reason (cancellation included), accepting
        stops, the connections it started are closed gracefully with 1001 — queued frames first,
        each bounded by ``drain_timeout`` and the close timeout — while handshakes that complete
        meanwhile are refused with 503, and only then is the handler nursery cancelled (which
        also ends handshakes still in progress). Every step is bounded.
        """
        group = _Group()
        with unwrap_group():
            async with trio.open_nursery() as outer:
                handlers, handlers_scope = await outer.start(_shielded_nursery)
                try:
                    await body(outer, handlers, group)
                finally:
                    outer.cancel_scope.cancel()  # stop accepting; the handler nursery is shielded
                    with trio.CancelScope(shield=True):
                        await group.close_all()
                    handlers_scope.cancel()

    def _count(self, cause: str) -> None:
        """A handshake that ended before any connection existed (refused, timed out)."""
        self._disconnects[cause] += 1

    async def _handle_request(self, request: trio_websocket.WebSocketRequest, *, group: _Group) -> None:
        # Runs once per valid upgrade request: an exception here would end only this client, but
        # it would be a bug, so everything but cancellation ends here, logged.
        try:
            if self._stopping or group.closing:
                self._disconnects["refused-503"] += 1
                await request.reject(503, body=b"server shutting down")
                return
            info = _handshake_info(request)
            refusal = self._check_origin(info, request.headers)
            identity = None
            if refusal is None:
                identity, refusal = await self._authenticate(info)
            if refusal is None and (self._stopping or group.closing):
                refusal = (503, "server shutting down")  # the hook took us into the shutdown
            if refusal is not None:
                self._disconnects[f"refused-{refusal[0]}"] += 1
                logger.info("handshake from %s refused: HTTP %d %s", info.remote, *refusal)
                await request.reject(refusal[0], body=refusal[1].encode())
                return
            ws = await request.accept()
            limit = self.config.max_connections
            stopping = self._stopping or group.closing
            if stopping or (limit is not None and len(self._connections) >= limit):
                reason = "server shutting down" if stopping else "connection limit reached"
                self._disconnects["shutdown" if stopping else "connection-limit"] += 1
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose(1001 if stopping else 1013, reason)
                return
            # From here to conn.run() nothing awaits: the group cannot start closing in between.
            conn = ServerConnection(self, ws, secrets.token_urlsafe(12), identity, info.remote)
            self._all.add(conn)
            group.add(conn)
            conn.groups = (self._all, group)
            self._connections[conn.session] = conn
            self._accepted += 1
            logger.info("connection %s opened from %s", conn.session, info.remote)
            await conn.run()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            logger.debug("client went away during the handshake")
        except Exception:
            logger.exception("handshake failed")

    def _check_origin(
        self, info: HandshakeRequest, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, str] | None:
        allowed = self.config.allowed_origins
        if allowed is None:
            return None
        origins = [value for name, value in headers if name.lower() == b"origin"]
        if len(origins) > 1:
            # A browser sends one; with two, which one a check looks at decides the outcome.
            return 403, "more than one Origin header"
        origin = info.headers.get("origin")
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

    def _release_subscriptions(self, conn: ServerConnection) -> None:
        """Called once by each connection as it starts closing: nothing more is queued for it."""
        now = trio.current_time()
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

    def from_thread(self) -> HubThreadHandle:
        """A handle that worker threads use to publish, set state and end topics.

        Call this from trio code (it remembers the trio run) and hand the result to threads.
        """
        return HubThreadHandle(self, trio.lowlevel.current_trio_token())

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
        return HubStatistics(
            connections=len(self._connections),
            accepted=self._accepted,
            disconnects=dict(self._disconnects),
            sessions=tuple(conn.statistics() for conn in self._connections.values()),
            topics={topic.name: topic.statistics() for topic in self._registry},
            topics_expired=self._registry.expired,
            sockets=self._gate.sockets,
            handshaking=self._gate.handshaking,
        )


class _Group:
    """A set of connections (one ``serve`` call's, or the hub's) that can be closed together."""

    def __init__(self) -> None:
        self._members: set[ServerConnection] = set()
        self._empty = trio.Event()
        self._empty.set()
        #: set by ``close_all``: the hub admits no new member (it refuses the handshake instead)
        self.closing = False

    def add(self, conn: ServerConnection) -> None:
        assert not self.closing, "a closing group takes no new connection"
        if not self._members:
            self._empty = trio.Event()
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
        self._holders: list[trio.Nursery] = []
        self._host: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._lock = trio.Lock()

    async def hold(self, nursery: trio.Nursery) -> None:
        """Register ``nursery``'s holder; start the broker in it if it is not running yet."""
        self._holders.append(nursery)
        try:
            async with self._lock:
                if self._host is None:
                    await self._start(nursery)
        except BaseException:
            self._holders.remove(nursery)
            raise

    async def release(self, nursery: trio.Nursery, *, hand_over: bool) -> None:
        """Unregister; if the broker runs in ``nursery``, stop it and move it to another holder.

        Shielded and bounded: this runs as a ``serve`` call shuts down, cancelled or not.
        """
        self._holders.remove(nursery)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _HANDOVER_TIMEOUT) as scope:
            async with self._lock:
                if self._host is not nursery:
                    return
                self._scope.cancel()
                await self._stopped.wait()
                self._host = None
                if hand_over and self._holders:
                    await self._start(self._holders[0])
        if scope.cancelled_caught:
            logger.error("the broker did not restart within %gs; publishing will fail", _HANDOVER_TIMEOUT)

    async def _start(self, nursery: trio.Nursery) -> None:
        scope, stopped = trio.CancelScope(), trio.Event()
        await nursery.start(self._run, scope, stopped)
        self._host, self._scope, self._stopped = nursery, scope, stopped

    async def _run(
        self, scope: trio.CancelScope, stopped: trio.Event, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            with scope:
                await self._broker.run(task_status=task_status)
        finally:
            stopped.set()


#: How long moving the broker to another holder may take (stopping it, starting it again).
_HANDOVER_TIMEOUT = 10.0


async def _shielded_nursery(
    *, task_status: trio.TaskStatus[tuple[trio.Nursery, trio.CancelScope]] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as nursery:
            task_status.started((nursery, scope))
            await trio.sleep_forever()


def _handshake_info(request: trio_websocket.WebSocketRequest) -> HandshakeRequest:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
    target = urllib.parse.urlsplit(request.path)
    query = dict(urllib.parse.parse_qsl(target.query))
    token = query.get("token")
    auth = headers.get("authorization", "")
    if token is None and auth[:7].lower() == "bearer ":
        token = auth[7:].strip() or None
    return HandshakeRequest(target.path or "/", query, headers, token, remote(request))
