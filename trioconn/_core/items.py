"""What a subscription yields: the items shared by the client and the hub's in-process followers.

No I/O. A client subscription and a subscription made inside the hub yield the same classes,
so code that consumes them works on either side.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs

__all__ = [
    "EventItem",
    "JoinItem",
    "LeaveItem",
    "PresenceItem",
    "ResetItem",
    "SnapshotItem",
    "Subscribed",
    "SubscriptionItem",
]


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


@attrs.frozen
class JoinItem:
    """Presence: someone subscribed to the topic (only with ``subscribe(topic, presence=True)``).

    Attributes:
        topic: the topic name.
        identity: what the server shows of that subscriber (the ``info`` its ``authorize`` hook
            gave with ``trioconn.Allow``; None when it gave none: anonymous). Never the server's
            own identity object.
        session: the subscriber's connection (its ``welcome`` session id): one member per
            connection and topic.
        since: when it subscribed, as a Unix time (seconds).
    """

    topic: str
    identity: Any
    session: str
    since: float


@attrs.frozen
class LeaveItem:
    """Presence: that subscription ended (it unsubscribed, or its connection ended).

    Attributes:
        topic: the topic name.
        identity: what the server shows of that subscriber (see ``JoinItem.identity``).
        session: the subscriber's connection.
    """

    topic: str
    identity: Any
    session: str


@attrs.frozen
class Subscribed:
    """The server's first answer to a subscription: where it starts (``await sub.ready()``).

    Attributes:
        topic: the topic name.
        epoch: the topic lifetime the offset belongs to.
        offset: the topic's position when the subscription started: the items that follow
            (replayed or live) come after it, or end at it for a replay.
        kind: ``"stream"``, ``"state"``, or None while nothing has been written to the topic.
    """

    topic: str
    epoch: str
    offset: int
    kind: str | None


SubscriptionItem: TypeAlias = EventItem | SnapshotItem | ResetItem
"""What every subscription yields, on the client and in the hub."""

PresenceItem: TypeAlias = JoinItem | LeaveItem
"""What a client subscription made with ``presence=True`` yields besides ``SubscriptionItem``."""
