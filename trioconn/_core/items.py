"""What a subscription yields: the items shared by the client and the hub's in-process followers.

No I/O. A client subscription and a subscription made inside the hub yield the same classes,
so code that consumes them works on either side.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs

__all__ = ["EventItem", "ResetItem", "SnapshotItem", "SubscriptionItem"]


@attrs.frozen
class EventItem:
    """One write to the topic.

    Attributes:
        topic: the topic name.
        epoch: the topic lifetime the offset belongs to.
        offset: position of the write (increases by one per write within an epoch; a state
            topic may skip offsets when only the latest value matters).
        data: the published JSON value.
    """

    topic: str
    epoch: str
    offset: int
    data: Any


@attrs.frozen
class SnapshotItem:
    """The current value of a state topic, delivered when the subscription starts.

    Also delivered after a resume when the server caught the state up with its snapshot
    instead of replaying every write.

    Attributes:
        topic: the topic name.
        epoch: the topic lifetime the offset belongs to.
        offset: the offset of the write that set this value.
        data: the value, under the same name as ``EventItem.data``, so one ``item.data`` reads a
            state topic's value whichever item carried it.
    """

    topic: str
    epoch: str
    offset: int
    data: Any

    @property
    def value(self) -> Any:
        """The value (``data``), under its older name."""
        return self.data


@attrs.frozen
class ResetItem:
    """The resume point was lost (the server restarted or history no longer reaches back).

    Events between ``previous_offset`` and ``offset`` are not available. The subscription
    continues live from ``offset``; for a state topic ``snapshot`` is the current value.

    Attributes:
        topic: the topic name.
        epoch: the new epoch.
        offset: the topic's current offset; the next event has a larger one.
        previous_epoch: the epoch of the last item before the reset.
        previous_offset: the offset of the last item before the reset.
        kind: ``"stream"``, ``"state"``, or None if nothing has been written yet.
        snapshot: the current value of a state topic (see ``has_snapshot``).
        has_snapshot: whether ``snapshot`` carries a value.
    """

    topic: str
    epoch: str
    offset: int
    previous_epoch: str | None
    previous_offset: int | None
    kind: str | None = None
    snapshot: Any = None
    has_snapshot: bool = False


SubscriptionItem: TypeAlias = EventItem | SnapshotItem | ResetItem
