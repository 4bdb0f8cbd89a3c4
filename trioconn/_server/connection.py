"""One server-side connection: a nursery with a receiver, a sender and a heartbeat task.

Theory of operation
-------------------
``ServerConnection.run`` owns everything the connection has — its subscriptions, outbox and
tasks — inside one cancel scope and one nursery. Whatever ends the connection (the client closes,
the socket resets, the heartbeat deadline passes, the reader is too slow, the hub shuts down, a
bug), the ``finally`` clause of ``run`` is the one place that unsubscribes it, removes it from the
hub and sends the close frame. Nothing about a connection outlives its nursery.

- The **receiver** reads frames; every frame pushes the heartbeat deadline ``timeout`` ahead. It
  runs as the body of the connection's task group (the task that started the connection), so a
  connection costs three tasks, not four.
- The **heartbeat** task holds a cancel scope whose deadline the receiver keeps moving; when it
  passes, the connection is closed with 4000. A ``ping`` goes out every ``interval``: sent by
  the hub's ``HeartbeatClock`` (``clock.py``), whose one timer pings every connection due in the
  same 1/64 of the interval, or by the heartbeat task itself while no clock runs.
- Each ``request`` the client sends runs its handler as one more task of the same nursery
  (``requests.py``), at most ``max_requests_in_flight`` at once, so a handler ends with the
  connection that asked.
- The **sender** is the only task that writes to the socket. It takes whatever is queued and sends
  it as one message (a ``batch`` if several). An outbox overflow closes the connection with 4001.
  A send that takes longer than ``send_timeout`` (the peer stopped reading and TCP is full) also
  means a slow consumer, but a close frame cannot get through a full buffer: the socket is
  closed and the client sees 1006, which it also answers by reconnecting and resuming.

``close(code, drain=True)`` lets the sender flush what is queued (bounded by ``drain_timeout``)
before the close frame, so "work done" (1000) arrives after the last event.

Memory budget
-------------
Everything queued for a client counts against ``outbox_bytes``, whoever queued it. Answers to
the client's own requests (subscribe answers, replays, snapshots, errors) may use half of it:
beyond that the receiver stops reading requests until the sender has brought the outbox back
under half (TCP then pushes back on the client). Live events may use the whole budget; one that
does not fit closes the connection with 4001. A client that is paused for ``send_timeout`` in all
without its outbox ever becoming empty in between — one that keeps asking for more than it
reads, however steadily it reads — is closed with 4001 too. So no client, reading or not, can
hold more than about ``outbox_bytes`` (plus one answer and the message being written) of the
hub's memory, or keep it for long.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import attrs

from .._core.codec import JsonCodec
from .._core.exceptions import BrokerUnavailable, ProtocolError, TooManyTopics, TopicEnded
from .._core.protocol import (
    Error,
    ErrorCode,
    Ping,
    Pong,
    Publish,
    Published,
    Request,
    Subscribe,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    encode_batch,
    parse_client_frame,
)
from .._core.ratelog import RateLimitedLog
from .broker import Broker
from .clock import HeartbeatClock
from .config import Allow, HubConfig
from .outbox import Outbox
from .patterns import TopicPattern
from .presence import Presence
from .publications import Publication
from .requests import Request as HandlerRequest
from .requests import RequestHandler, RequestHandlers, answer
from .socket import ServerSocket, SocketClosed
from .topics import TopicRegistry

__all__ = ["ConnectionStatistics", "HubServices", "ServerConnection"]

logger = logging.getLogger("trioconn")

#: what ``_decode`` returns for data the hub's ``json_loads`` refused
_REFUSED: Any = object()

#: How long the close handshake may take once the connection's tasks are done.
CLOSE_TIMEOUT = 2.0


#: Opens a task group: an async context manager whose value has ``start_soon(fn, *args)``.
OpenTaskGroup = Callable[[], AbstractAsyncContextManager[Any]]


@attrs.frozen
class HubServices:
    """What a connection needs of its hub, handed over explicitly (the connection does not know ``Hub``)."""

    config: HubConfig
    registry: TopicRegistry
    broker: Broker
    #: ``Hub.publish``: a client's publication goes through the same checks as the application's
    publish: Callable[[str, Any], Awaitable[int]]
    #: called once as the connection starts closing (nothing more is queued for it)
    closing: Callable[[ServerConnection], None]
    #: called once when its close handshake is over (or timed out)
    finished: Callable[[ServerConnection], None]
    #: the members of each topic (``presence.py``)
    presence: Presence
    #: the application's request handlers
    requests: RequestHandlers
    #: hands a stored client publication to the application's readers (``publications.py``)
    published: Callable[[Publication], None]
    #: where failing request handlers are logged, at most once per handler per 10 s
    log: RateLimitedLog
    #: the hub's ``json_dumps``/``json_loads``: what clients publish and request is decoded
    #: with it before application code sees it, and replies are encoded with it
    codec: JsonCodec = attrs.field(factory=JsonCodec)
    #: called with every ping round-trip time measured (seconds), for the hub's histogram
    observe_rtt: Callable[[float], None] = lambda _seconds: None
    #: sends every connection's pings from one timer while the hub runs (``clock.py``)
    clock: HeartbeatClock = attrs.field(factory=lambda: HeartbeatClock(1.0))
    #: opens the task group of a connection's tasks (anyio's; a front end may give a lighter one)
    open_task_group: OpenTaskGroup = anyio.create_task_group


@attrs.frozen
class ConnectionStatistics:
    """One connection as seen by ``Hub.statistics()``."""

    session: str
    remote: str
    identity: Any
    opened_at: float
    last_seen: float
    pings_sent: int
    pongs_seen: int
    rtt: float | None
    messages_sent: int
    frames_sent: int
    events_dropped: int
    queued: int
    subscriptions: tuple[str, ...]
    #: bytes queued for the client (outbox and what the socket has not taken yet)
    queued_bytes: int = 0
    #: events and state values queued for this client (those later dropped count in both)
    events_delivered: int = 0


class ServerConnection:
    """A client connection of a hub. Created and run by ``Hub``; not public."""

    __slots__ = (
        "_alive",
        "_config",
        "_drained",
        "_draining",
        "_dropped",
        "_has_work",
        "_in_flight",
        "_next_ping",
        "_paused_for",
        "_ping_id",
        "_ping_sent_at",
        "_scope",
        "_send_broken",
        "_services",
        "_socket",
        "_tasks",
        "cause",
        "close_code",
        "close_reason",
        "events_delivered",
        "frames_sent",
        "groups",
        "identity",
        "last_seen",
        "messages_sent",
        "opened_at",
        "outbox",
        "pings_sent",
        "pongs_seen",
        "remote",
        "rtt",
        "session",
        "subscriptions",
    )

    def __init__(self, services: HubServices, socket: ServerSocket, session: str, identity: Any) -> None:
        self._services = services
        self.session = session
        self.identity = identity
        self.remote = socket.remote
        self.subscriptions: set[str] = set()
        #: the connection sets it belongs to (the hub's, its serve call's); set by the hub
        self.groups: tuple[Any, ...] = ()
        self._socket = socket
        self._config = services.config
        self.outbox = Outbox(self._config.outbox_size, self._config.outbox_bytes)
        self._has_work = anyio.Event()
        #: set by the sender each time it takes frames, while the receiver waits for room
        self._drained: anyio.Event | None = None
        #: seconds the receiver has been paused since the outbox was last empty
        self._paused_for = 0.0
        self._scope = anyio.CancelScope()
        self._alive = anyio.CancelScope()
        self._draining = False
        self._send_broken = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.cause = ""
        now = anyio.current_time()
        self.opened_at = self.last_seen = now
        self._ping_id = 0
        #: when the next ping is due
        self._next_ping = now
        self._ping_sent_at: float | None = None
        self.pings_sent = self.pongs_seen = self.messages_sent = self.frames_sent = 0
        self._dropped = 0
        self.events_delivered = 0
        self.rtt: float | None = None
        #: the connection's task group (anyio's, or what the front end opened instead)
        self._tasks: Any = None
        self._in_flight = 0

    # -- Subscriber (called synchronously by the topic registry) -------------------------------

    def deliver(self, topic: str, encoded: str, *, state: bool) -> bool:
        if self.close_code is not None:
            return True  # already closing; the client resumes from history
        ok = self.outbox.put_state(topic, encoded) if state else self.outbox.put(encoded)
        self.events_delivered += ok
        self._wake()
        return ok

    def deliver_end(self, topic: str, encoded: str) -> None:
        self.subscriptions.discard(topic)
        self._services.presence.leave(topic, self.session, quiet=True)
        self._queue(encoded)

    def deliver_presence(self, encoded: str) -> None:
        """A ``join``/``leave`` frame: queued like an event, since other clients cause them."""
        if self.close_code is not None:
            return
        if not self.outbox.put(encoded):
            self.slow_consumer()
            return
        self._wake()

    def deliver_reset(self, topic: str, encoded: str) -> None:
        self.outbox.put_control(topic, encoded)
        self._wake()

    def _queue(self, *frames: str) -> None:
        self.outbox.put_unbounded(list(frames))
        self._wake()

    def _wake(self) -> None:
        """Send what is queued: straight to the socket if it can take it now, else via the sender.

        The direct write (``ServerSocket.write_nowait``, where the front end has one) spares a
        task switch and a lock per message; it only happens when nothing else is writing, so
        bytes never interleave.
        """
        socket = self._socket
        if not socket.ready or self.close_code is not None or socket.closed is not None:
            self._has_work.set()
            return
        frames = self.outbox.take(self._config.max_batch_bytes)
        if not frames:
            return
        try:
            socket.write_nowait(_message(frames))
        except SocketClosed:
            self._dropped += len(frames)
            self._peer_closed()
            return
        self.messages_sent += 1
        self.frames_sent += len(frames)
        self._taken()
        if socket.pending or self.outbox:
            self._has_work.set()

    def _taken(self) -> None:
        """Frames left the outbox: wake a paused receiver; an empty outbox forgives past pauses."""
        if self._drained is not None:
            self._drained.set()
        if not self.outbox and not self._socket.pending:
            self._paused_for = 0.0

    # -- closing -------------------------------------------------------------------------------

    def close(self, code: int, reason: str, cause: str, *, drain: bool) -> bool:
        """Start closing with ``code``; the first call wins. Returns False if already closing."""
        if self.close_code is not None:
            return False
        self.close_code, self.close_reason, self.cause = code, reason, cause
        if drain:
            self._draining = True
            self._has_work.set()
            self._scope.deadline = min(
                self._scope.deadline, anyio.current_time() + self._config.drain_timeout
            )
        else:
            self._dropped += self.outbox.clear()
            self._scope.cancel()
        return True

    @property
    def events_dropped(self) -> int:
        return self._dropped + self.outbox.superseded

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            session=self.session,
            remote=self.remote,
            identity=self.identity,
            opened_at=self.opened_at,
            last_seen=self.last_seen,
            pings_sent=self.pings_sent,
            pongs_seen=self.pongs_seen,
            rtt=self.rtt,
            messages_sent=self.messages_sent,
            frames_sent=self.frames_sent,
            events_dropped=self.events_dropped,
            queued=len(self.outbox),
            subscriptions=tuple(sorted(self.subscriptions)),
            queued_bytes=self.outbox.bytes + self._socket.pending,
            events_delivered=self.events_delivered,
        )

    # -- the connection's life -----------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends, then clean up and close. Never raises Exception."""
        config = self._config
        self._queue(
            Welcome(
                self.session, config.heartbeat_interval, config.heartbeat_timeout, config.max_frame_size
            ).to_json()
        )
        try:
            with self._scope:
                async with self._services.open_task_group() as tasks:
                    self._tasks = tasks
                    tasks.start_soon(self._sender)
                    tasks.start_soon(self._heartbeat)
                    # The receiver is the task group's own body: one task fewer per connection.
                    await self._receiver()
            if self._scope.cancelled_caught and self.close_code is None:
                self.close(1001, "server shutting down", "shutdown", drain=False)
        except Exception:  # a bug: in a task group it arrives as a group of one
            logger.exception("connection %s failed", self.session)
            self.close(1011, "internal error", "internal-error", drain=False)
        finally:
            # Whatever interrupts this (a KeyboardInterrupt can land in any task), the hub must
            # hear that the connection finished: its shutdown waits for every connection.
            try:
                if self.close_code is None:  # cancelled from outside: the hub is going away
                    self.close(1001, "server shutting down", "shutdown", drain=False)
                self._services.closing(self)
                with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLOSE_TIMEOUT):
                    # A send cancelled half-way, or bytes the transport never took: no close
                    # frame can follow them on this stream.
                    abort = self._send_broken or self._socket.pending > 0
                    await self._socket.close(self.close_code or 1001, self.close_reason, abort=abort)
                logger.info(
                    "connection %s closed: %s (code %s%s) after %.1fs",
                    self.session,
                    self.cause,
                    self.close_code,
                    f", {self.close_reason}" if self.close_reason else "",
                    anyio.current_time() - self.opened_at,
                )
            finally:
                self._services.finished(self)

    async def _receiver(self) -> None:
        timeout = self._config.heartbeat_timeout
        requests_budget = self._config.outbox_bytes // 2
        self._alive.deadline = anyio.current_time() + timeout
        while True:
            if self.outbox.bytes > requests_budget:
                if not await self._wait_for_room(requests_budget):
                    return
                self._alive.deadline = anyio.current_time() + timeout
            try:
                message = await self._socket.receive()
            except SocketClosed:
                self._peer_closed()
                return
            self.last_seen = anyio.current_time()
            self._alive.deadline = self.last_seen + timeout
            try:
                frame = parse_client_frame(message)
            except ProtocolError as exc:
                self._queue(Error(exc.code, exc.message, _ref(exc.ref)).to_json())
                continue
            await self._handle(frame)

    async def _wait_for_room(self, budget: int) -> bool:
        """Stop reading requests until the outbox is back under ``budget``; False if closed.

        While we do not read, the client's pongs wait in TCP: its heartbeat deadline is
        suspended, and what counts instead is the pause, bounded by ``send_timeout`` in all
        since the outbox was last empty.
        """
        self._alive.deadline = math.inf
        started = anyio.current_time()
        with anyio.CancelScope(deadline=started + self._config.send_timeout - self._paused_for) as scope:
            while self.outbox.bytes > budget:
                self._drained = anyio.Event()
                await self._drained.wait()
        self._drained = None
        self._paused_for += anyio.current_time() - started
        if scope.cancelled_caught:
            self.close(4001, "slow consumer: requests beyond the memory budget", "slow-consumer", drain=False)
            return False
        return True

    def _peer_closed(self) -> None:
        closed = self._socket.closed
        code = closed.code if closed is not None else 1006
        reason = closed.reason if closed is not None else ""
        if code == 1009:
            cause = "frame-too-big"  # the front end closed it for us: over max_frame_size
        elif code in _PROTOCOL_FAILURES:
            cause = _PROTOCOL_FAILURES[code]  # wsproto could not parse the client's frames
        elif code == 1006:
            cause = "connection-lost"
        else:
            cause = "client-closed"
        if not self.close(code, reason, cause, drain=False):
            self._scope.cancel()  # we were already closing, but there is nobody left to wait for

    async def _handle(self, frame: Subscribe | Unsubscribe | Pong | Publish | Request) -> None:
        if isinstance(frame, Pong):
            self.pongs_seen += 1
            if frame.id == self._ping_id and self._ping_sent_at is not None:
                self.rtt = anyio.current_time() - self._ping_sent_at
                self._services.observe_rtt(self.rtt)
            return
        if isinstance(frame, Unsubscribe):
            if self._services.registry.unsubscribe(frame.topic, self, now=anyio.current_time()):
                self.subscriptions.discard(frame.topic)
                self._services.presence.leave(frame.topic, self.session)
                self._queue(Unsubscribed(frame.topic, frame.ref).to_json())
            else:
                self._refuse(frame, ErrorCode.NOT_SUBSCRIBED, "not subscribed to this topic")
            return
        action = _ACTIONS[type(frame)]
        allowed = await self._authorized(frame.topic, action)
        if allowed is None:
            self._refuse(frame, ErrorCode.FORBIDDEN, f"{action} not allowed on this topic")
        elif isinstance(frame, Subscribe):
            await self._subscribe(frame, allowed)
        elif isinstance(frame, Publish):
            await self._publish(frame)
        else:
            self._request(frame)

    def _request(self, frame: Request) -> None:
        """Start the handler for ``frame`` in this connection's nursery (it answers by itself)."""
        found = self._services.requests.find(frame.topic)
        if found is None:
            self._refuse(frame, ErrorCode.NO_HANDLER, "no request handler for this topic")
            return
        limit = self._config.max_requests_in_flight
        if self._in_flight >= limit:
            self._refuse(
                frame, ErrorCode.TOO_MANY_REQUESTS, f"at most {limit} requests may wait for an answer"
            )
            return
        if self._tasks is None or self.close_code is not None:
            return  # closing: nobody is left to answer
        data = self._decode(frame)
        if data is _REFUSED:
            return
        self._in_flight += 1
        request = HandlerRequest(frame.topic, data, self.identity, self.session)
        self._tasks.start_soon(self._answer, frame, request, found)

    async def _answer(
        self, frame: Request, request: HandlerRequest, found: tuple[TopicPattern, RequestHandler]
    ) -> None:
        try:
            encoded = await answer(
                frame,
                request,
                found,
                seconds=self._config.request_timeout,
                log=self._services.log,
                encode=self._services.codec.encode,
            )
            self._queue(encoded)
        finally:
            self._in_flight -= 1

    async def _subscribe(self, frame: Subscribe, allowed: Allow) -> None:
        if frame.topic in self.subscriptions:
            self._refuse(frame, ErrorCode.ALREADY_SUBSCRIBED, "already subscribed to this topic")
            return
        if len(self.subscriptions) >= self._config.max_subscriptions:
            self._refuse(
                frame,
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self._config.max_subscriptions} subscriptions per connection",
            )
            return
        registry = self._services.registry
        if registry.get(frame.topic) is None and registry.full:
            self._refuse(frame, ErrorCode.TOO_MANY_TOPICS, str(TooManyTopics(int(registry.max_topics))))
            return
        broker = self._services.broker
        if not broker.ready(frame.topic):
            # A shared broker must first load the topic into this hub's mirror. From here to
            # the end, nothing awaits: the answer, the replay and the registration are one step.
            try:
                await broker.load(frame.topic)
            except BrokerUnavailable as exc:
                self._refuse(frame, ErrorCode.INTERNAL, str(exc))
                return
        presence = self._services.presence
        member, members = presence.prepare(
            frame.topic, self.identity, self.session, allowed.info, listed=allowed.presence
        )
        frames = registry.subscribe(
            frame.topic,
            self,
            now=anyio.current_time(),
            epoch=frame.epoch,
            offset=frame.offset,
            last=frame.last,
            ref=frame.ref,
            presence=members,
        )
        topic = registry.get(frame.topic)
        if topic is not None and self in topic.subscribers:
            self.subscriptions.add(frame.topic)
            presence.join(frame.topic, member, self, receives=allowed.presence)
        self._queue(*frames)

    def _decode(self, frame: Publish | Request) -> Any:
        """The frame's data through the hub's ``json_loads``, or ``_REFUSED`` (the client was
        answered ``invalid-field``) when the hook raised."""
        codec = self._services.codec
        if codec.loads is None:
            return frame.data
        try:
            return codec.decode(frame.data)
        except Exception as exc:
            self._refuse(frame, ErrorCode.INVALID_FIELD, f"field 'data' was refused by json_loads: {exc}")
            return _REFUSED

    async def _publish(self, frame: Publish) -> None:
        data = self._decode(frame)
        if data is _REFUSED:
            return
        try:
            offset = await self._services.publish(frame.topic, data)
        except TopicEnded as exc:
            self._refuse(frame, ErrorCode.TOPIC_ENDED, str(exc))
        except TooManyTopics as exc:
            self._refuse(frame, ErrorCode.TOO_MANY_TOPICS, str(exc))
        except TypeError as exc:  # data nested too deep to be stored (see MAX_DATA_DEPTH)
            self._refuse(frame, ErrorCode.INVALID_FIELD, f"field 'data' {exc}")
        except ValueError as exc:
            self._refuse(frame, ErrorCode.WRONG_KIND, str(exc))
        except BrokerUnavailable as exc:
            self._refuse(frame, ErrorCode.INTERNAL, str(exc))
        else:
            self._queue(Published(frame.topic, offset, frame.ref).to_json())
            self._services.published(Publication(frame.topic, data, offset, self.identity, self.session))

    async def _authorized(self, topic: str, action: str) -> Allow | None:
        """What ``authorize`` says: an ``Allow`` (``True`` is ``Allow()``), or None if refused.

        Without the hook, subscribing and requests are allowed (a request reaches only a
        handler the application registered) and publishing is not.
        """
        hook: Callable[[Any, str, str], bool | Allow | Awaitable[bool | Allow]] | None = (
            self._config.authorize
        )
        if hook is None:
            return None if action == "publish" else _ALLOWED
        result = hook(self.identity, topic, action)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Allow):
            return result
        return _ALLOWED if result else None

    def _refuse(
        self, frame: Subscribe | Unsubscribe | Publish | Request, code: ErrorCode, message: str
    ) -> None:
        self._queue(Error(code.value, message, frame.ref, frame.topic).to_json())

    async def _sender(self) -> None:
        config = self._config
        socket = self._socket
        while True:
            while not self.outbox and not socket.pending:
                if self._draining:
                    self._scope.cancel()
                    return
                await self._has_work.wait()
                self._has_work = anyio.Event()
            if socket.closed is not None:
                self._peer_closed()
                return
            frames = self.outbox.take(config.max_batch_bytes)
            # Until the send completes the stream holds part of a frame: if this task is
            # cancelled meanwhile (timeout, slow consumer, shutdown), no close frame may follow.
            self._send_broken = True
            with anyio.move_on_after(config.send_timeout) as scope:
                try:
                    if frames:  # the socket writes its pending bytes first
                        await socket.send(_message(frames))
                    else:
                        await socket.flush()
                except SocketClosed:
                    self._peer_closed()
                    return
            if scope.cancelled_caught:
                self._dropped += len(frames)
                self.close(4001, "slow consumer: send timed out", "slow-consumer", drain=False)
                return
            self._send_broken = False
            if frames:
                self.messages_sent += 1
                self.frames_sent += len(frames)
            self._taken()

    async def _heartbeat(self) -> None:
        interval = self._config.heartbeat_interval
        clock = self._services.clock
        self._next_ping = anyio.current_time() + interval
        with self._alive:
            while True:
                if clock.running and clock.stopped is not None:
                    # The hub's clock pings for us (``ping_due``); this task only holds the
                    # dead-link deadline, until the clock stops.
                    stopped = clock.stopped
                    clock.schedule(self._next_ping, self)
                    try:
                        await stopped.wait()
                    finally:
                        clock.unschedule(self)
                else:
                    await anyio.sleep_until(self._next_ping)
                    self.ping_due()
        if self._alive.cancelled_caught:
            self.close(4000, "heartbeat timeout", "heartbeat-timeout", drain=False)

    def ping_due(self) -> float | None:
        """Queue the ping that is due; returns when the next one is (None once closing)."""
        if self.close_code is not None:
            return None
        self._ping_id += 1
        now = self._ping_sent_at = anyio.current_time()
        self.pings_sent += 1
        self._queue(Ping(self._ping_id, self.rtt).to_json())
        following = self._next_ping + self._config.heartbeat_interval
        self._next_ping = following if following > now else now + self._config.heartbeat_interval
        return self._next_ping

    def slow_consumer(self) -> None:
        """The outbox overflowed: close without draining so the client resumes from history."""
        self.close(4001, "slow consumer: outbox full", "slow-consumer", drain=False)


#: Close codes of a connection that failed because of its frames (wsproto's ParseFailed; the
#: front end answers them with a close frame carrying the code). A client that itself closes
#: with one of them reports a protocol error too, and is counted the same way.
_PROTOCOL_FAILURES = {1002: "protocol-error", 1007: "invalid-utf8"}


_ALLOWED = Allow()
#: what ``authorize`` is asked about, per client frame
_ACTIONS: dict[type, str] = {Subscribe: "subscribe", Publish: "publish", Request: "request"}


def _message(frames: list[str]) -> str:
    """One frame as itself, several as one ``batch``."""
    return frames[0] if len(frames) == 1 else encode_batch(frames)


def _ref(ref: object) -> str | int | None:
    return ref if isinstance(ref, str | int) and not isinstance(ref, bool) else None
