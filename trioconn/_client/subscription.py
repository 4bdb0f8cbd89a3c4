"""A client's subscriptions: the shared wire subscription of a topic, and the local ones on it.

Theory of operation
-------------------
A client keeps at most one subscription per topic on the wire: a ``Feed``. Every
``client.subscribe(topic)`` makes a local ``Subscription`` with its own buffer; the first one
of a topic creates the feed (and sends ``subscribe``), the last one to leave removes it (and
sends ``unsubscribe``). The feed decides what is delivered; each local subscription receives
every item the feed delivers from the moment it joined, in order.

The feed outlives connections. It remembers the ``epoch`` and the ``offset`` of the last item
it delivered; after a reconnect the client re-sends ``subscribe`` with that resume point. The
server answers ``subscribed`` (the events after the resume point follow: no gap) or ``reset``
(the resume point is gone: the consumer gets a ``ResetItem``, never a silent gap). On every
connection, events are ignored until the answer to *this* connection's ``subscribe`` arrived
(matched by ``ref``; the link keeps the set of answered feeds, so a new connection starts with
none), and the feed drops any event whose offset is not beyond the last one delivered in the
same epoch, so a duplicate can never reach a consumer.

A local subscription that joins a feed already answered starts at the feed's position: first
the latest value of a state topic (a ``SnapshotItem``), or up to ``last`` recent events of a
stream topic from the feed's small cache (it keeps the last ``max(last)`` events of its open
local subscriptions), then everything after. Those start items wait in the subscription's own
backlog, so joining never waits for a consumer.

The reader task of the connection pushes items into each local subscription's bounded trio
memory channel in turn. When a consumer falls behind, the reader waits for it (backpressure
reaches the server through TCP, and the server's slow-consumer policy takes over), so memory
stays bounded; the other local subscriptions of the connection wait too.

Presence: the server sends ``join``/``leave`` frames and a member list in its answers when its
``authorize`` hook turned presence on for this subscriber. The feed keeps the member list
(``members``); only local subscriptions made with ``presence=True`` receive ``JoinItem`` and
``LeaveItem``. A new member list (after a reconnect) replaces the old one, and the difference
is delivered as joins and leaves, so a consumer's view built from the items stays right.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self

import trio

from .._core.exceptions import TrioconnError
from .._core.items import (
    EventItem,
    JoinItem,
    LeaveItem,
    PresenceItem,
    ResetItem,
    SnapshotItem,
    Subscribed,
    SubscriptionItem,
)
from .._core.protocol import Event, Reset, Subscribe, validate_topic
from .._core.protocol import Subscribed as SubscribedFrame
from .._core.resume import ResumePosition

__all__ = [
    "EventItem",
    "Feed",
    "JoinItem",
    "LeaveItem",
    "PresenceItem",
    "ResetItem",
    "SnapshotItem",
    "Subscribed",
    "Subscription",
    "SubscriptionItem",
]

Item = SubscriptionItem | PresenceItem


class Subscription:
    """A live subscription to one topic; iterate it with ``async for``.

    Obtain one with ``client.subscribe(topic)`` and use it as an async context manager. Leaving
    the block unsubscribes (the wire subscription ends when the last local subscription of the
    topic leaves). Iteration yields ``EventItem``, ``SnapshotItem`` and ``ResetItem`` objects
    (and ``JoinItem``/``LeaveItem`` with ``presence=True``) and ends normally when the topic
    ends or the client closes normally (code 1000).

    Raises (from iteration and ``ready()``):
        ServerError: the server refused the subscription (e.g. ``forbidden``).
    """

    def __init__(
        self,
        topic: str,
        *,
        last: int | None,
        buffer_size: int,
        presence: bool = False,
        register: Callable[[Subscription], Awaitable[None]],
        unregister: Callable[[Subscription], Awaitable[None]],
        decode: Callable[[Item], Item] | None = None,
    ) -> None:
        self.topic = validate_topic(topic)
        if last is not None:
            if isinstance(last, bool) or not isinstance(last, int):
                raise TypeError(f"last must be an int or None, not {type(last).__name__}")
            if last < 0:
                raise ValueError(f"last must be >= 0, got {last!r}")
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int):
            raise TypeError(f"buffer_size must be an int, not {type(buffer_size).__name__}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size!r}")
        if not isinstance(presence, bool):
            raise TypeError(f"presence must be a bool, not {type(presence).__name__}")
        self.last = last
        self.presence = presence
        self._register = register
        self._unregister = unregister
        #: the client's ``json_loads`` applied to each item's data as the consumer takes it
        self._decode = decode
        self._send, self._receive = trio.open_memory_channel[Item](buffer_size)
        #: items queued when the subscription joined an answered feed (read before the channel).
        self._backlog: deque[Item] = deque()
        self._entered = False
        self._exited = False
        self._feed: Feed | None = None
        #: the feed's first answer as this subscription sees it (see ``ready``).
        self._subscribed: Subscribed | None = None
        self._ready = trio.Event()
        #: replayed events of the feed's first answer at or below this offset (in this epoch)
        #: are beyond this subscription's own ``last``: skipped.
        self._skip: tuple[str, int] | None = None
        self._finished = False
        #: set when the subscription is over: None = normal end, else the error to raise.
        self._error: BaseException | None = None
        self._ready_error: BaseException | None = None

    # ---------------------------------------------------------------------------- public face

    @property
    def epoch(self) -> str | None:
        """The epoch of the last delivered item (None before the server answered)."""
        return self._feed.epoch if self._feed is not None else None

    @property
    def offset(self) -> int | None:
        """The offset of the last delivered item: the resume point."""
        return self._feed.offset if self._feed is not None else None

    @property
    def kind(self) -> str | None:
        """``"stream"``, ``"state"`` or None (unknown, or nothing written yet)."""
        return self._feed.kind if self._feed is not None else None

    @property
    def members(self) -> tuple[JoinItem, ...]:
        """The topic's current members, in the order they joined (presence; see ``docs/client.md``).

        Empty unless the server sends presence for this subscriber (its ``authorize`` hook
        decides). It is the client's view, updated as ``join``/``leave`` frames arrive (for
        every local subscription of the topic, whether it asked for presence items or not).
        """
        return tuple(self._feed.members.values()) if self._feed is not None else ()

    async def ready(self) -> Subscribed:
        """Wait for the server's answer to the subscription and return where it starts.

        A subscription to a topic nobody has written yet yields nothing until the first write;
        ``ready()`` tells "subscribed and waiting" from "not subscribed yet". For a subscription
        that joined another one of the same topic on this client, it returns at once with the
        shared subscription's current position.

        Returns:
            ``Subscribed(topic, epoch, offset, kind)``.

        Raises:
            ServerError: the server refused the subscription.
            ConnectionClosed: the client closed before the server answered.
            ReconnectFailed: the client failed before the server answered.
            TrioconnError: the subscription was closed before the server answered.
        """
        if not self._entered:
            raise RuntimeError("use 'async with client.subscribe(topic) as sub:' before ready()")
        await self._ready.wait()
        if self._subscribed is None:
            if self._ready_error is not None:
                raise self._ready_error
            raise TrioconnError(f"the subscription to {self.topic!r} ended before the server answered")
        return self._subscribed

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Subscription can be entered only once")
        self._entered = True
        await self._register(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unsubscribe and stop iteration; safe to call twice."""
        if self._exited:
            return
        self._exited = True
        self._receive.close()
        self._backlog.clear()
        await self._unregister(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        if not self._entered:
            raise RuntimeError("use 'async with client.subscribe(topic) as sub:' before iterating")
        if self._backlog:
            await trio.lowlevel.checkpoint()
            item = self._backlog.popleft()
            return item if self._decode is None else self._decode(item)
        try:
            item = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        return item if self._decode is None else self._decode(item)

    # ------------------------------------------------------- driven by the feed and the client

    def _wants(self, item: Item) -> bool:
        """Whether ``item`` (delivered by the feed) is for this subscription."""
        if isinstance(item, JoinItem | LeaveItem):
            return self.presence
        if self._skip is not None and isinstance(item, EventItem):
            epoch, through = self._skip
            if item.epoch == epoch and item.offset <= through:
                return False
            if item.epoch != epoch or item.offset > through:
                self._skip = None  # past the replay
        return True

    def _answered(self, info: Subscribed) -> None:
        if self._subscribed is None:
            self._subscribed = info
            self._ready.set()

    def _send_nowait(self, item: Item) -> bool:
        """Queue ``item`` without waiting; False if the buffer is full."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the consumer left; the unsubscribe is on its way
        return True

    async def _send_item(self, item: Item) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._send.send(item)  # the consumer left: drop

    def _finish(self, error: BaseException | None = None, ready_error: BaseException | None = None) -> None:
        """End iteration after the queued items: normally, or by raising ``error``.

        ``ready()`` raises ``error``, else ``ready_error`` (why the client closed), if the
        server had not answered.
        """
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._ready_error = error or ready_error
        self._ready.set()
        self._send.close()

    @property
    def _active(self) -> bool:
        return not self._finished and not self._exited


class Feed(ResumePosition):
    """The one wire subscription of a topic on a client, shared by its local subscriptions.

    Its resume point (``epoch``, ``offset``, ``kind``) is a ``ResumePosition``: the same rules
    as the hub's in-process followers.
    """

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic
        #: ref of the ``subscribe`` sent on the current connection.
        self.ref: int | None = None
        self.locals: list[Subscription] = []
        #: the first answer (``ready()``).
        self.info: Subscribed | None = None
        #: the latest value of a state topic, for a local subscription that joins later.
        self.latest: SnapshotItem | None = None
        #: the last events, for a later local subscription's ``last`` (and the latest event
        #: of a topic whose kind is not known yet).
        self.recent: deque[EventItem] = deque(maxlen=1)
        #: presence: session → the member's join, in the order they joined.
        self.members: dict[str, JoinItem] = {}
        self.finished = False

    # -- local subscriptions

    def add(self, sub: Subscription) -> None:
        """``sub`` joins; if the feed was answered, it gets its start items and its ``ready``."""
        sub._feed = self
        self.locals.append(sub)
        self._size_cache()
        if self.info is None or self.epoch is None:
            return  # it waits for the answer with the others
        sub._backlog.extend(self._start_items(sub))
        sub._answered(Subscribed(self.topic, self.epoch, self.offset or 0, self.kind))

    def remove(self, sub: Subscription) -> bool:
        """``sub`` leaves; True if it was the last one (the wire subscription should end)."""
        with contextlib.suppress(ValueError):
            self.locals.remove(sub)
        self._size_cache()
        return not self.locals

    def _size_cache(self) -> None:
        size = max([1, *(sub.last or 0 for sub in self.locals)])
        if size != self.recent.maxlen:
            self.recent = deque(self.recent, maxlen=size)

    def _start_items(self, sub: Subscription) -> list[Item]:
        items: list[Item] = []
        if self.kind == "state":
            if self.latest is not None:
                items.append(self.latest)
        else:
            # A stream topic: up to ``last`` cached events. While the kind is unknown (nothing
            # had been written when the feed was answered), the latest event may be a state
            # topic's value, so it is given in any case.
            count = sub.last or 0
            if self.kind is None:
                count = max(count, 1)
            if count:
                items.extend(list(self.recent)[-count:])
        if sub.presence:
            items.extend(self.members.values())
        return items

    def receivers(self, item: Item) -> list[Subscription]:
        """The local subscriptions ``item`` goes to, now (a copy: delivering may wait)."""
        return [sub for sub in self.locals if sub._active and sub._wants(item)]

    def finish(self, error: BaseException | None = None, ready_error: BaseException | None = None) -> None:
        self.finished = True
        for sub in self.locals:
            sub._finish(error, ready_error)

    # -- the wire

    @property
    def last(self) -> int | None:
        """The ``last`` of the wire subscription: the largest asked for, if any."""
        asked = [sub.last for sub in self.locals if sub.last is not None]
        return max(asked) if asked else None

    def subscribe_frame(self, ref: int) -> Subscribe:
        """The ``subscribe`` for a new connection: resume if we have a position, else ``last``."""
        self.ref = ref
        if self.epoch is not None:
            return Subscribe(self.topic, ref, epoch=self.epoch, offset=self.offset or 0)
        return Subscribe(self.topic, ref, last=self.last)

    def matches(self, ref: object) -> bool:
        return ref is None or ref == self.ref

    def on_answer(self, frame: SubscribedFrame) -> list[Item]:
        """Take the ``subscribed``/``reset`` answer; return the items to deliver."""
        items: list[Item] = list(self.take_answer(frame))
        if isinstance(frame, Reset):
            self.recent.clear()
            self.latest = None
            if frame.has_snapshot:
                self.latest = SnapshotItem(frame.topic, frame.epoch, frame.offset, frame.snapshot)
        for item in items:
            if isinstance(item, SnapshotItem):
                self.latest = item
        if frame.presence is not None:
            members = (JoinItem(frame.topic, m.info, m.session, m.since) for m in frame.presence)
            items += self.on_members(members)
        elif frame.ref is not None and self.members:
            # The answer to our own subscribe without a member list: presence is off for us now.
            # (An unasked ``reset`` from a shared broker carries none either: nothing changed.)
            items += self.on_members(())
        if self.info is None:
            self.info = Subscribed(frame.topic, frame.epoch, frame.offset, frame.kind)
            for sub in self.locals:
                if sub.last is not None and sub.last < frame.replayed:
                    sub._skip = (frame.epoch, frame.offset - sub.last)
                elif sub.last is None and frame.replayed:
                    sub._skip = (frame.epoch, frame.offset)
                sub._answered(self.info)
        return items

    def on_event(self, frame: Event) -> EventItem | None:
        """Return the item for ``frame``, or None to drop it (a duplicate, or no position yet).

        The link calls this only once this connection's ``subscribe`` was answered.
        """
        item = self.take_event(frame)
        if item is None:
            return None
        self.recent.append(item)
        if self.kind == "state":
            self.latest = SnapshotItem(item.topic, item.epoch, item.offset, item.data)
        return item

    # -- presence

    def on_members(self, members: Iterable[JoinItem]) -> list[Item]:
        """A member list from an answer replaces ours; return the joins and leaves between them."""
        new = {member.session: member for member in members}
        items: list[Item] = [
            LeaveItem(self.topic, old.identity, session)
            for session, old in self.members.items()
            if session not in new or new[session] != old
        ]
        items += [member for session, member in new.items() if self.members.get(session) != member]
        self.members = new
        return items

    def on_join(self, member: JoinItem) -> list[Item]:
        old = self.members.get(member.session)
        if old == member:
            return []  # already known (a join racing the member list of a new answer)
        items: list[Item] = []
        if old is not None:
            del self.members[member.session]
            items.append(LeaveItem(self.topic, old.identity, old.session))
        self.members[member.session] = member
        items.append(member)
        return items

    def on_leave(self, item: LeaveItem) -> list[Item]:
        old = self.members.pop(item.session, None)
        if old is None:
            return []
        return [LeaveItem(self.topic, old.identity, old.session)]
