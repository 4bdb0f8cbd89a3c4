"""A client's subscription to one topic: resume position, de-duplication, and its item queue.

Theory of operation
-------------------
A ``Subscription`` outlives connections. It remembers the ``epoch`` and the ``offset`` of the
last item it queued for the consumer; after a reconnect the client re-sends ``subscribe`` with
that resume point. The server answers ``subscribed`` (the events after the resume point follow:
no gap) or ``reset`` (the resume point is gone: the consumer gets a ``ResetItem``, never a silent
gap). On every connection, events are ignored until the answer to *this* connection's
``subscribe`` arrived (matched by ``ref``; the link keeps the set of answered subscriptions, so a
new connection starts with none), and the subscription drops any event whose offset is not
beyond the last one queued in the same epoch, so a duplicate can never reach the consumer.

The reader task of the connection pushes items into a bounded trio memory channel. When the
consumer falls behind, the reader waits (backpressure reaches the server through TCP, and the
server's slow-consumer policy takes over), so memory stays bounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import trio

from .._core.items import EventItem, ResetItem, SnapshotItem, SubscriptionItem
from .._core.protocol import Event, Reset, Subscribe, Subscribed, validate_topic

__all__ = ["EventItem", "ResetItem", "SnapshotItem", "Subscription", "SubscriptionItem"]


class Subscription:
    """A live subscription to one topic; iterate it with ``async for``.

    Obtain one with ``client.subscribe(topic)`` and use it as an async context manager. Leaving
    the block unsubscribes. Iteration yields ``EventItem``, ``SnapshotItem`` and ``ResetItem``
    objects and ends normally when the topic ends or the client closes normally (code 1000).

    Raises (from iteration):
        ServerError: the server refused the subscription (e.g. ``forbidden``).
    """

    def __init__(
        self,
        topic: str,
        *,
        last: int | None,
        buffer_size: int,
        register: Callable[[Subscription], Awaitable[None]],
        unregister: Callable[[Subscription], Awaitable[None]],
        decode: Callable[[SubscriptionItem], SubscriptionItem] | None = None,
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
        self._last = last
        self._register = register
        self._unregister = unregister
        #: the client's ``json_loads`` applied to each item's data as the consumer takes it
        self._decode = decode
        self._send, self._receive = trio.open_memory_channel[SubscriptionItem](buffer_size)
        self._entered = False
        self._exited = False
        #: the resume point: epoch and offset of the last item queued for the consumer.
        self._epoch: str | None = None
        self._offset: int | None = None
        self._kind: str | None = None
        #: ref of the ``subscribe`` sent on the current connection.
        self._ref: int | None = None
        #: set when the subscription is over: None = normal end, else the error to raise.
        self._finished = False
        self._error: BaseException | None = None

    # ---------------------------------------------------------------------------- public face

    @property
    def epoch(self) -> str | None:
        """The epoch of the last queued item (None before the server answered)."""
        return self._epoch

    @property
    def offset(self) -> int | None:
        """The offset of the last queued item: the resume point."""
        return self._offset

    @property
    def kind(self) -> str | None:
        """``"stream"``, ``"state"`` or None (unknown, or nothing written yet)."""
        return self._kind

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
        await self._unregister(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SubscriptionItem:
        if not self._entered:
            raise RuntimeError("use 'async with client.subscribe(topic) as sub:' before iterating")
        try:
            item = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        return item if self._decode is None else self._decode(item)

    # ------------------------------------------------------- driven by the client's reader task

    def _subscribe_frame(self, ref: int) -> Subscribe:
        """The ``subscribe`` for a new connection: resume if we have a position, else ``last``."""
        self._ref = ref
        if self._epoch is not None:
            return Subscribe(self.topic, ref, epoch=self._epoch, offset=self._offset or 0)
        return Subscribe(self.topic, ref, last=self._last)

    def _matches(self, ref: object) -> bool:
        return ref is None or ref == self._ref

    def _on_answer(self, frame: Subscribed) -> list[SubscriptionItem]:
        """Take the ``subscribed``/``reset`` answer; return the items to queue."""
        items: list[SubscriptionItem] = []
        previous_epoch, previous_offset = self._epoch, self._offset
        if frame.kind is not None:
            self._kind = frame.kind
        # The replayed events that follow carry offsets up to frame.offset.
        start = max(frame.offset - frame.replayed, 0)
        if isinstance(frame, Reset):
            items.append(
                ResetItem(
                    frame.topic,
                    frame.epoch,
                    frame.offset,
                    previous_epoch,
                    previous_offset,
                    frame.kind,
                    frame.snapshot,
                    frame.has_snapshot,
                )
            )
            self._epoch, self._offset = frame.epoch, start
            return items
        if previous_epoch is not None and previous_epoch == frame.epoch:
            # Resumed. A state topic is caught up by its snapshot rather than by replay.
            position = previous_offset or 0
            if frame.has_snapshot and frame.offset > position and frame.replayed == 0:
                items.append(SnapshotItem(frame.topic, frame.epoch, frame.offset, frame.snapshot))
                position = frame.offset
            self._offset = position
            return items
        self._epoch, self._offset = frame.epoch, start
        if frame.has_snapshot:
            items.append(SnapshotItem(frame.topic, frame.epoch, frame.offset, frame.snapshot))
            self._offset = max(start, frame.offset)
        return items

    def _on_event(self, frame: Event) -> EventItem | None:
        """Return the item for ``frame``, or None to drop it (a duplicate, or no position yet).

        The link calls this only once this connection's ``subscribe`` was answered.
        """
        if self._epoch is None:
            return None
        if self._offset is not None and frame.offset <= self._offset:
            return None
        self._offset = frame.offset
        return EventItem(frame.topic, self._epoch, frame.offset, frame.data)

    def _send_nowait(self, item: SubscriptionItem) -> bool:
        """Queue ``item`` without waiting; False if the buffer is full."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the consumer left; the unsubscribe is on its way
        return True

    async def _send_item(self, item: SubscriptionItem) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._send.send(item)  # the consumer left: drop

    def _finish(self, error: BaseException | None = None) -> None:
        """End iteration after the queued items: normally, or by raising ``error``."""
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._send.close()

    @property
    def _active(self) -> bool:
        return not self._finished and not self._exited
