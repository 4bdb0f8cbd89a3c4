"""Following a topic inside the hub's process: ``hub.subscribe(topic)``, no socket.

Theory of operation
-------------------
A ``HubSubscription`` is a ``Subscriber`` of the topic registry, like a client connection: it
is subscribed in one synchronous step (answer, replay, registration), so it sees every event of
its epoch once, in order, and yields the same items as a client subscription (``SnapshotItem``,
``EventItem``, ``ResetItem``; iteration ends at the topic's ``end``).

Publishers never wait for it. Its buffer holds ``buffer_size`` live events; when one more comes
while it is full, it stops taking events (it stays registered) and, once the consumer has read
what is buffered, subscribes again from the last item it yielded — exactly what a client does
after 4001. The registry replays what was missed from history (no gap), or answers ``reset``
when the history no longer reaches back (a ``ResetItem``: never a silent gap); a state topic
is caught up with its current value. With a shared broker (Redis) it follows the topic through
this hub's mirror like a connection does.

Frames arrive encoded (the registry encodes each write once for every subscriber); a follower
decodes them when they are read, so the publisher's path stays as cheap as for a connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Self

import anyio
import anyio.lowlevel

from .._core.items import Subscribed, SubscriptionItem
from .._core.protocol import End, Event, parse_server_frames
from .._core.protocol import Subscribed as SubscribedFrame
from .._core.resume import ResumePosition
from .broker import Broker
from .topics import TopicRegistry

__all__ = ["HubSubscription"]


class _End:
    """The topic's end, once the items before it are read."""


_END = _End()


class HubSubscription:
    """An in-process subscription to one topic; iterate it with ``async for``.

    Get one from ``async with hub.subscribe(topic) as sub:``. It yields ``SnapshotItem``,
    ``EventItem`` and ``ResetItem`` as a client subscription does; iteration ends when the topic
    ends, when the block is left, or when the hub is closed.

    Raises (from iteration):
        BrokerUnavailable: with a shared broker, catching up after falling behind needed the
            broker and it could not be reached; iterating again retries.
    """

    def __init__(
        self,
        topic: str,
        *,
        last: int | None,
        buffer_size: int,
        registry: TopicRegistry,
        broker: Broker,
        decode: Callable[[SubscriptionItem], SubscriptionItem] | None = None,
    ) -> None:
        self.topic = topic
        self._last = last
        self._buffer_size = buffer_size
        self._registry = registry
        self._broker = broker
        #: the hub's ``json_loads`` applied to each item's data as the reader takes it
        self._decode = decode
        #: encoded frames from the registry (live) and items already made from an answer
        self._queue: deque[str | SubscriptionItem | _End] = deque()
        self._live = 0
        self._overflowed = False
        self._wake = anyio.Event()
        self._position = ResumePosition()
        self._ready: Subscribed | None = None
        self._finished = False
        self._closed = False

    # -- public face ----------------------------------------------------------------------------

    @property
    def epoch(self) -> str | None:
        """The epoch of the last item read or queued."""
        return self._position.epoch

    @property
    def offset(self) -> int | None:
        """The offset of the last item read or queued: where a resume would start."""
        return self._position.offset

    @property
    def kind(self) -> str | None:
        """``"stream"``, ``"state"`` or None (nothing written yet)."""
        return self._position.kind

    async def ready(self) -> Subscribed:
        """Where the subscription started: the topic's ``epoch``, ``offset`` and ``kind`` then.

        Known as soon as ``hub.subscribe`` has entered (the answer is made in that step); the
        same value a client's ``await sub.ready()`` gives.
        """
        await anyio.lowlevel.checkpoint()
        assert self._ready is not None, "entered by hub.subscribe"
        return self._ready

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SubscriptionItem:
        await anyio.lowlevel.checkpoint()
        while True:
            if self._queue:
                item = self._take(self._queue.popleft())
                if item is not None:
                    return item if self._decode is None else self._decode(item)
                continue
            if self._finished:
                raise StopAsyncIteration
            if self._overflowed:
                await self._attach(resume=True)
                continue
            self._wake = anyio.Event()
            await self._wake.wait()

    # -- Subscriber: called synchronously by the registry ------------------------------------------

    def deliver(self, topic: str, encoded: str, *, state: bool) -> bool:
        if self._finished or self._overflowed:
            return True  # caught up by the resume once the consumer has read what is queued
        if self._live >= self._buffer_size:
            self._overflowed = True
        else:
            self._queue.append(encoded)
            self._live += 1
        self._wake.set()
        return True  # never reported as slow: publishers are not held up, nobody is closed

    def deliver_end(self, topic: str, encoded: str) -> None:
        # The registry has released us. Queued in order; if events were skipped, the resume
        # finds the end after them.
        if not self._finished and not self._overflowed:
            self._queue.append(encoded)
            self._wake.set()

    def deliver_reset(self, topic: str, encoded: str) -> None:
        if not self._finished and not self._overflowed:  # a resume answers reset by itself
            self._queue.append(encoded)
            self._wake.set()

    # -- life -------------------------------------------------------------------------------------

    async def _attach(self, *, resume: bool) -> None:
        """Subscribe (again, from the last item, if ``resume``); queue the answer's items.

        Until the registry has answered, deliveries are ignored (``_overflowed`` stays set on a
        resume): whatever they carry comes with the answer, in order.
        """
        topic, broker, registry = self.topic, self._broker, self._registry
        if not broker.ready(topic):
            await broker.load(topic)  # a shared broker copies the topic into this hub's mirror
        if self._closed:
            registry.drop(topic)  # loaded for nobody: a mirror keeps only followed topics
            return
        frames = registry.subscribe(
            topic,
            self,
            now=anyio.current_time(),
            epoch=self._position.epoch if resume else None,
            offset=self._position.offset if resume else None,
            last=None if resume else self._last,
        )
        self._overflowed = False
        answer = parse_server_frames(frames[0])[0]
        assert isinstance(answer, SubscribedFrame)
        self._queue.extend(self._position.take_answer(answer))
        for encoded in frames[1:]:
            frame = parse_server_frames(encoded)[0]
            if isinstance(frame, Event):
                item = self._position.take_event(frame)
                if item is not None:
                    self._queue.append(item)
            elif isinstance(frame, End):
                self._queue.append(_END)
        if self._ready is None:
            self._ready = Subscribed(answer.topic, answer.epoch, answer.offset, answer.kind)

    def _detach(self) -> None:
        """Leave: unsubscribe from the registry and end iteration. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._finish()
        self._queue.clear()
        self._live = 0
        self._registry.unsubscribe(self.topic, self, now=anyio.current_time())

    def _finish(self) -> None:
        """End iteration after what is queued (the hub is closed)."""
        self._finished = True
        self._wake.set()

    # -- turning frames into items (as a client subscription does) ---------------------------------

    def _take(self, entry: str | SubscriptionItem | _End) -> SubscriptionItem | None:
        if isinstance(entry, _End):
            self._finish()
            self._queue.clear()
            self._live = 0
            return None
        if not isinstance(entry, str):
            return entry
        frame = parse_server_frames(entry)[0]
        if isinstance(frame, Event):
            self._live -= 1
            return self._position.take_event(frame)
        if isinstance(frame, End):
            return self._take(_END)
        if isinstance(frame, SubscribedFrame):  # an unasked reset: the broker lost our position
            items = self._position.take_answer(frame)
            self._queue.extendleft(reversed(items))
        return None
