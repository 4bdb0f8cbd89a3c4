"""One open connection (after ``welcome``): sending, the read loop, the heartbeat watchdog.

Theory of operation
-------------------
A ``Link`` lives inside one attempt's nursery and dies with it. ``run`` re-sends every live
subscription, then reads until the connection ends, inside a cancel scope (the *watchdog*) whose
deadline moves ``timeout + interval`` ahead on every received message: the server pings every
``interval`` and gives up on us after ``timeout``, so by then it has either pinged (the link is
alive) or stopped answering (the link is dead). Both numbers come from ``welcome``.

A received close frame always decides how the connection ended (the client reads it from the
WebSocket after the link ends, see ``client.py``); so a send that fails because the connection
is already closing raises the internal ``LinkClosing`` ("nothing was sent"), which the read loop
ignores: the close frame is next in line. ``LinkClosing`` never reaches a user: ``publish``
waits for the next link, subscribe and unsubscribe leave the work to the next connection.

Sending: a frame interrupted half-way would corrupt the WebSocket stream, so each send is
shielded from cancellation and bounded instead by the server's heartbeat timeout; when that
expires the link is declared dead (``fail(..., dead=True)``) and abandoned.

Events for a subscription are ignored until the answer to *this* connection's ``subscribe``
arrived: ``answered`` is per link, so a new connection starts with none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, NoReturn

import trio
import trio_websocket

from .._core.exceptions import ConnectionBroken, ProtocolError, ServerError, TrioconnError
from .._core.items import JoinItem, LeaveItem
from .._core.protocol import (
    End,
    Error,
    Event,
    Join,
    Leave,
    Ping,
    Pong,
    Published,
    Reply,
    Reset,
    ServerFrame,
    Subscribed,
    Welcome,
    parse_server_frames,
)
from .._core.ratelog import RateLimitedLog
from .state import Counters
from .subscription import Feed, Item

__all__ = ["Link", "LinkClosing", "Pending", "RateLimitedLog"]


#: How many refs of abandoned requests a link remembers (their late answers are not logged).
_ABANDONED: Final = 1024


class LinkClosing(Exception):
    """Internal: the connection was already closing, so nothing was sent and retrying is safe.

    Deliberately not a ``TrioconnError``: it must never reach a user or a ``StateChange``.
    """


class Pending:
    """A publish waiting for its ``published``, or a request for its ``reply``; or an ``error``.

    ``lost`` is what the caller is told if the link drops before the answer.
    """

    __slots__ = ("data", "done", "error", "lost", "offset")

    def __init__(self, lost: str) -> None:
        self.done = trio.Event()
        self.offset = 0
        self.data: Any = None
        self.error: BaseException | None = None
        self.lost = lost


class Link:
    """One open connection; see the module docstring.

    Args:
        ws: the open WebSocket.
        welcome: the server's ``welcome``.
        subs: the client's feeds, one per subscribed topic (shared: the link ends the ones
            whose topic ended or that the server refused).
        counters: the client's counters.
        next_ref: gives the ``ref`` of the next request.
        log: where oddities from the server are reported.
    """

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        welcome: Welcome,
        *,
        subs: dict[str, Feed],
        counters: Counters,
        next_ref: Callable[[], int],
        log: RateLimitedLog,
    ) -> None:
        self.ws = ws
        self.welcome = welcome
        #: silence longer than this means the link is dead (see the module docstring).
        self.window = welcome.heartbeat_timeout + welcome.heartbeat_interval
        self.alive = True
        self.pending: dict[int, Pending] = {}
        #: refs of requests given up on (timed out, cancelled): their late answers are expected.
        self.abandoned: dict[int, None] = {}
        #: feeds whose ``subscribe`` this connection answered.
        self.answered: set[Feed] = set()
        self.failure: TrioconnError | None = None
        #: the peer stopped answering: abandon the socket, no closing handshake.
        self.dead = False
        #: the close frame we end the link with (only when the peer is alive), once decided.
        self.close_with: tuple[int, str] | None = None
        self._watchdog: trio.CancelScope | None = None
        self._subs = subs
        self._counters = counters
        self._next_ref = next_ref
        self._log = log

    def abandon(self, ref: int) -> None:
        """The caller stopped waiting for the answer to ``ref``; ignore it when it comes."""
        pending = self.pending.pop(ref, None)
        if pending is not None and not pending.done.is_set():
            self.abandoned[ref] = None
            if len(self.abandoned) > _ABANDONED:
                del self.abandoned[next(iter(self.abandoned))]

    def fail(
        self, failure: TrioconnError, *, close_with: tuple[int, str] | None = None, dead: bool = False
    ) -> None:
        """End the link from any task: the read loop stops and raises ``failure``."""
        if self.failure is None:
            self.failure = failure
            self.close_with = close_with
            self.dead = dead
        self.alive = False
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def send(self, text: str) -> None:
        """Send one frame, whole or not at all.

        Raises:
            LinkClosing: the link was already closing; nothing was sent.
            ConnectionBroken: the link is down; the frame may have been sent in part.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.alive or self.ws.closed is not None:
            self.alive = False
            raise LinkClosing
        timeout = self.welcome.heartbeat_timeout
        with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout) as scope:
            try:
                await self.ws.send_message(text)
            except trio_websocket.ConnectionClosed as exc:
                self.alive = False
                if exc.reason is not None and exc.reason.code != 1006:
                    # trio-websocket checks for a close before it writes a byte
                    raise LinkClosing from None
                raise ConnectionBroken("connection lost while sending") from exc
        if scope.cancelled_caught:
            failure = ConnectionBroken(f"could not send a frame within the heartbeat timeout ({timeout:g} s)")
            self.fail(failure, dead=True)
            raise failure

    async def subscribe(self, feed: Feed) -> None:
        """Send ``feed``'s ``subscribe`` (a resume after the first connection)."""
        await self.send(feed.subscribe_frame(self._next_ref()).to_json())

    def drop(self) -> None:
        """The link is over: fail the publishes and requests that waited on it."""
        self.alive = False
        for pending in self.pending.values():
            if not pending.done.is_set():
                pending.error = ConnectionBroken(pending.lost)
                pending.done.set()
        self.pending.clear()

    async def run(self) -> NoReturn:
        """Re-send the subscriptions, then read until the link ends; raise why it ended.

        Raises:
            ConnectionBroken: nothing heard for ``timeout + interval`` (``dead`` is set), or the
                transport failed.
            ProtocolError: a frame from the server broke protocol v1.
            TrioconnError: the failure given to ``fail``.
            trio_websocket.ConnectionClosed: the connection closed (translated by the client).
        """
        with trio.CancelScope(deadline=trio.current_time() + self.window) as watchdog:
            self._watchdog = watchdog
            try:
                for feed in list(self._subs.values()):
                    await self.subscribe(feed)
            except LinkClosing:
                pass  # the frame that closed the connection is read below
            while True:
                message = await self.ws.get_message()
                watchdog.deadline = trio.current_time() + self.window
                for frame in parse_server_frames(message):
                    await self._dispatch(frame)
        if self.failure is not None:
            raise self.failure
        self.dead = True
        self.alive = False
        raise ConnectionBroken(
            f"heartbeat: nothing from the server for {self.window:g} s "
            f"(its timeout {self.welcome.heartbeat_timeout:g} s + one ping interval)"
        )

    async def _deliver(self, feed: Feed, items: list[Item]) -> None:
        """Queue ``items`` for every local subscription of ``feed`` that wants them, in turn."""
        for item in items:
            for sub in feed.receivers(item):
                if sub._send_nowait(item):
                    continue
                # The consumer is behind. While we wait for it the silence is ours, not the
                # server's, so the watchdog pauses.
                assert self._watchdog is not None
                self._watchdog.deadline = math.inf
                await sub._send_item(item)
                self._watchdog.deadline = trio.current_time() + self.window

    async def _dispatch(self, frame: ServerFrame) -> None:
        counters = self._counters
        subs = self._subs
        if isinstance(frame, Event):
            counters.events_received += 1
            feed = subs.get(frame.topic)
            if feed is not None and feed in self.answered:
                item = feed.on_event(frame)
                if item is not None:
                    await self._deliver(feed, [item])
        elif isinstance(frame, Ping):
            try:
                await self.send(Pong(frame.id).to_json())
            except LinkClosing:
                return  # the close frame is next in line
            counters.pings_answered += 1
            if frame.rtt is not None:
                counters.last_rtt = frame.rtt
        elif isinstance(frame, Subscribed):  # also Reset
            feed = subs.get(frame.topic)
            if feed is None or not feed.matches(frame.ref):
                return
            self.answered.add(feed)
            if isinstance(frame, Reset):
                counters.resets += 1
            await self._deliver(feed, feed.on_answer(frame))
        elif isinstance(frame, End):
            feed = subs.get(frame.topic)
            if feed is not None and feed in self.answered:
                del subs[frame.topic]
                feed.finish()
        elif isinstance(frame, Join | Leave):
            # Like events, ignored until this connection answered: its member list decides.
            feed = subs.get(frame.topic)
            if feed is not None and feed in self.answered:
                if isinstance(frame, Join):
                    items = feed.on_join(JoinItem(frame.topic, frame.info, frame.session, frame.since))
                else:
                    items = feed.on_leave(LeaveItem(frame.topic, frame.info, frame.session))
                await self._deliver(feed, items)
        elif isinstance(frame, Error):
            self._on_error(frame)
        elif isinstance(frame, Published):
            pending = self.pending.get(frame.ref) if isinstance(frame.ref, int) else None
            if pending is not None:
                pending.offset = frame.offset
                pending.done.set()
        elif isinstance(frame, Reply):
            pending = self.pending.get(frame.ref) if isinstance(frame.ref, int) else None
            if pending is not None:
                pending.data = frame.data
                pending.done.set()
            elif isinstance(frame.ref, int):
                self.abandoned.pop(frame.ref, None)
        elif isinstance(frame, Welcome):
            raise ProtocolError("unexpected-frame", "a second 'welcome' on the same connection")

    def _on_error(self, frame: Error) -> None:
        error = ServerError(frame.code, frame.message, frame.ref)
        pending = self.pending.get(frame.ref) if isinstance(frame.ref, int) else None
        if pending is not None:
            pending.error = error
            pending.done.set()
            return
        if isinstance(frame.ref, int) and frame.ref in self.abandoned:
            del self.abandoned[frame.ref]  # the late answer to a request given up on
            return
        for topic, feed in self._subs.items():
            if frame.ref is not None and feed.ref == frame.ref:
                del self._subs[topic]
                feed.finish(error)
                return
        self._log.warning(
            "unmatched-error", "error frame from the server that answers nothing we sent: %s", error
        )
