"""A subscription's resume position: what an answer or an event means for it. No I/O.

Theory of operation
-------------------
A subscription remembers the ``epoch`` and ``offset`` of the last item it delivered. When the
server (or the hub's registry) answers a ``subscribe``:

* ``reset``: the resume point is gone; a ``ResetItem`` says so and the position moves to the
  start of what follows (never a silent gap);
* ``subscribed`` in the same epoch (a resume): the replayed events follow; a state topic may be
  caught up by its snapshot instead, delivered only if newer than the position;
* ``subscribed`` otherwise (the first answer): the snapshot of a state topic, then the replay.

An event whose offset is not beyond the position in the same epoch is dropped, so replay and
live events that overlap never deliver one twice. The client's subscriptions and the hub's
in-process followers share this class, so both keep the same promise.
"""

from __future__ import annotations

from .items import EventItem, ResetItem, SnapshotItem, SubscriptionItem
from .protocol import Event, Reset, Subscribed

__all__ = ["ResumePosition"]


class ResumePosition:
    """Epoch, offset and kind of a subscription, moved by answers and events.

    Attributes:
        epoch: the epoch of the last item delivered (None before the first answer).
        offset: the offset of the last item delivered: where a resume starts.
        kind: ``"stream"``, ``"state"`` or None (nothing written yet).
    """

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.offset: int | None = None
        self.kind: str | None = None

    def take_answer(self, frame: Subscribed) -> list[SubscriptionItem]:
        """Take a ``subscribed``/``reset`` answer; return the items it delivers first."""
        items: list[SubscriptionItem] = []
        previous_epoch, previous_offset = self.epoch, self.offset
        if frame.kind is not None:
            self.kind = frame.kind
        start = max(frame.offset - frame.replayed, 0)  # the replayed events end at frame.offset
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
            self.epoch, self.offset = frame.epoch, start
        elif previous_epoch is not None and previous_epoch == frame.epoch:
            # Resumed: a state topic is caught up by its value rather than by replay.
            position = previous_offset or 0
            if frame.has_snapshot and frame.offset > position and frame.replayed == 0:
                items.append(SnapshotItem(frame.topic, frame.epoch, frame.offset, frame.snapshot))
                position = frame.offset
            self.offset = position
        else:
            self.epoch, self.offset = frame.epoch, start
            if frame.has_snapshot:
                items.append(SnapshotItem(frame.topic, frame.epoch, frame.offset, frame.snapshot))
                self.offset = max(start, frame.offset)
        return items

    def take_event(self, frame: Event) -> EventItem | None:
        """The item for ``frame``, or None to drop it (a duplicate, or before any answer)."""
        if self.epoch is None or (self.offset is not None and frame.offset <= self.offset):
            return None
        self.offset = frame.offset
        return EventItem(frame.topic, self.epoch, frame.offset, frame.data)
