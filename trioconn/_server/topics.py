"""Topics: epochs, offsets, bounded history, state values, ends. No I/O, no trio.

Theory of operation
-------------------
A topic is created by its first write or first subscriber and gets a random *epoch*: a new epoch
means "offsets from before mean nothing here" (the server restarted, or the topic was dropped and
made again). Every write increments the topic's *offset* by one and is encoded **once** into an
``event`` frame; that text is kept in the bounded history and handed to every subscriber as is.

A topic's *kind* is fixed by its first write: ``publish`` makes a *stream* (every event matters,
history replays them), ``set_state`` makes a *state* topic (only the latest value matters; it is the
snapshot a subscriber receives at once). Subscribing is a single synchronous step — answer,
replay and registration happen with no await in between — so a subscriber sees neither a gap nor a
duplicate between replay and live events.

A subscriber is anything with ``deliver``/``deliver_end``/``deliver_reset`` (the server
connection's outbox). It returns False from ``deliver`` when it cannot keep up; the registry
reports it to the caller and keeps going, so one slow subscriber never holds up the others.

Mirrors
-------
With a shared broker (Redis) the registry is a *mirror*: topics, epochs and offsets are decided by
the broker, and the registry only applies what it is told. ``apply`` takes one write as the broker
numbered it and refuses (``"gap"``/``"epoch"``) anything that does not follow the local copy by
exactly one offset, so a lost write is noticed instead of skipped. ``sync`` brings a topic up to a
``TopicSnapshot``: the missing events are delivered as live events when the snapshot's history
covers them; otherwise the topic is replaced and its subscribers get a ``reset`` frame — an
explicit "you missed something", never a silent gap. A mirror keeps only topics that have local
subscribers; the others are dropped and loaded again when somebody subscribes.

Memory
------
History is bounded twice: ``history_size`` events and ``history_bytes`` of encoded text per
stream topic, whichever is reached first. A stream topic nobody follows and nobody writes to for
``idle_retention`` seconds is dropped (a subscriber that comes back later gets ``reset``: the
topic has a new epoch), and so is an ended topic after ``ended_retention``. ``max_topics`` caps
the registry: a write that needs a new topic evicts the longest-idle droppable topic first, and
only raises ``TooManyTopics`` when every topic is followed or holds state; a subscribe never
evicts anything (clients must not be able to push the application's history out). Expiry runs
as a side effect of writes and subscribes, so an idle registry costs nothing.
"""

from __future__ import annotations

import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol, TypeAlias

import attrs

from .._core.exceptions import TooManyTopics, TopicEnded
from .._core.protocol import (
    End,
    PresenceMember,
    Reset,
    Subscribed,
    encode_data,
    encode_event_json,
    validate_topic,
)

__all__ = [
    "Applied",
    "Subscriber",
    "Topic",
    "TopicKind",
    "TopicRegistry",
    "TopicSnapshot",
    "TopicStatistics",
]

TopicKind: TypeAlias = Literal["stream", "state"]
#: What ``TopicRegistry.apply`` did with a write: applied, already had it, topic not mirrored, or
#: the write does not follow the local copy (an offset is missing, or the epoch changed).
Applied: TypeAlias = Literal["applied", "duplicate", "unknown", "gap", "epoch"]


class Subscriber(Protocol):
    """What a topic pushes to."""

    def deliver(self, topic: str, encoded: str, *, state: bool) -> bool:
        """Queue one encoded event; False means the subscriber cannot keep up."""

    def deliver_end(self, topic: str, encoded: str) -> None:
        """Queue the topic's ``end`` frame; the subscription is over."""

    def deliver_reset(self, topic: str, encoded: str) -> None:
        """Queue a ``reset`` frame: the topic's position moved and events were lost in between."""


@attrs.frozen
class TopicSnapshot:
    """A topic as a shared broker holds it, for ``TopicRegistry.sync``.

    Attributes:
        history: the newest ``(offset, data_json)`` events of a stream topic, oldest first.
        state_json: the current value of a state topic, as JSON text (None if never set).
    """

    name: str
    epoch: str
    offset: int
    kind: TopicKind | None = None
    state_json: str | None = None
    ended: bool = False
    history: tuple[tuple[int, str], ...] = ()


@attrs.frozen
class TopicStatistics:
    """A topic as seen by ``Hub.statistics()``."""

    name: str
    kind: TopicKind | None
    epoch: str
    offset: int
    subscribers: int
    history: int
    ended: bool
    history_bytes: int = 0
    #: client subscriptions of the topic on this hub process (``hub.presence(topic)``)
    members: int = 0


def new_epoch() -> str:
    """A fresh epoch: random, so that no two topic lifetimes share one."""
    return secrets.token_hex(6)


@attrs.define(eq=False)
class Topic:
    """One topic's state. Owned by ``TopicRegistry``; read-only for everybody else.

    A state topic keeps its value as JSON text (``state_json``), encoded once per write: every
    subscriber's snapshot is built around that text, never encoded again.
    """

    name: str
    epoch: str
    history_size: int
    history_bytes: float = math.inf
    kind: TopicKind | None = None
    offset: int = 0
    history: deque[tuple[int, str]] = attrs.Factory(deque)
    history_used: int = 0
    state_json: str | None = None
    ended_at: float | None = None
    end_frame: str | None = None
    subscribers: dict[Subscriber, None] = attrs.Factory(dict)
    #: when the topic was last written to or last lost its last subscriber
    active_at: float = 0.0

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def remember(self, offset: int, encoded: str) -> None:
        """Append to history, dropping the oldest events beyond either bound."""
        history = self.history
        history.append((offset, encoded))
        self.history_used += len(encoded)
        while history and (len(history) > self.history_size or self.history_used > self.history_bytes):
            self.history_used -= len(history.popleft()[1])

    def statistics(self, members: int = 0) -> TopicStatistics:
        return TopicStatistics(
            self.name,
            self.kind,
            self.epoch,
            self.offset,
            len(self.subscribers),
            len(self.history),
            self.ended,
            self.history_used,
            members,
        )

    def _replay_after(self, offset: int) -> list[str] | None:
        """Encoded events after ``offset``, or None if history no longer reaches back that far."""
        if offset > self.offset:
            return None
        if offset == self.offset:
            return []
        if not self.history or self.history[0][0] > offset + 1:
            return None
        start = offset + 1 - self.history[0][0]
        return [encoded for _, encoded in list(self.history)[start:]]

    def _last(self, count: int) -> list[str]:
        if count <= 0 or not self.history:
            return []
        return [encoded for _, encoded in list(self.history)[-count:]]


class TopicRegistry:
    """Every topic of one hub, and who follows which.

    Args:
        history_size: events a stream topic keeps for resuming subscribers.
        ended_retention: seconds an ended topic stays so late subscribers still see its end.
        history_bytes: encoded bytes a stream topic keeps, at most.
        idle_retention: seconds a stream topic without subscribers and writes is kept.
        max_topics: topics this registry holds at most (see the module docstring).
        epoch_factory: makes epochs (replaceable so tests and brokers can choose them).
        encode_data: turns written data into JSON text (the hub's ``json_dumps``, checked).
    """

    def __init__(
        self,
        *,
        history_size: int,
        ended_retention: float,
        history_bytes: float = math.inf,
        idle_retention: float = math.inf,
        max_topics: float = math.inf,
        epoch_factory: Callable[[], str] = new_epoch,
        encode_data: Callable[[Any], str] = encode_data,
    ) -> None:
        self._topics: dict[str, Topic] = {}
        self.history_size = self._history_size = history_size
        self.ended_retention = self._ended_retention = ended_retention
        self._history_bytes = history_bytes
        self._idle_retention = idle_retention
        self.max_topics = max_topics
        #: True when a shared broker owns the topics and this registry only mirrors them.
        self.mirror = False
        #: called with a mirrored topic's name when the mirror drops it (nobody here follows
        #: it any more), so that the broker stops receiving its writes
        self.on_forget: Callable[[str], None] | None = None
        self._epoch_factory = epoch_factory
        #: how every write's data is encoded, here and by a shared broker
        self.encode_data = encode_data
        self._ended: deque[Topic] = deque()
        #: stream topics with no subscriber, least recently active first
        self._idle: OrderedDict[str, Topic] = OrderedDict()
        #: topics dropped by ``idle_retention`` or evicted for room, for statistics
        self.expired = 0

    def __iter__(self) -> Iterator[Topic]:
        return iter(self._topics.values())

    def __len__(self) -> int:
        return len(self._topics)

    def get(self, name: str) -> Topic | None:
        return self._topics.get(name)

    @property
    def full(self) -> bool:
        """True when a new topic could only be made by evicting one."""
        return len(self._topics) >= self.max_topics

    def _topic(self, name: str, now: float, *, evict: bool = False) -> Topic:
        self.expire(now)
        topic = self._topics.get(name)
        if topic is None:
            validate_topic(name)
            if self.full and not (evict and self._evict_one()):
                raise TooManyTopics(int(self.max_topics))
            topic = self._new(name, self._epoch_factory())
            topic.active_at = now
        return topic

    def _new(self, name: str, epoch: str) -> Topic:
        topic = Topic(name, epoch, self._history_size, self._history_bytes)
        self._topics[name] = topic
        return topic

    def _remove(self, topic: Topic) -> None:
        if self._topics.get(topic.name) is topic:
            del self._topics[topic.name]
        if self._idle.get(topic.name) is topic:
            del self._idle[topic.name]

    def expire(self, now: float) -> None:
        """Drop ended topics past ``ended_retention`` and idle streams past ``idle_retention``."""
        while self._ended and now - (self._ended[0].ended_at or 0.0) >= self._ended_retention:
            self._remove(self._ended.popleft())
        idle = self._idle
        while idle:
            topic = next(iter(idle.values()))
            if now - topic.active_at < self._idle_retention:
                break
            self._remove(topic)
            self.expired += 1

    def _evict_one(self) -> bool:
        """Make room for one topic: the longest-idle stream, else the oldest ended topic."""
        if self._idle:
            self._remove(next(iter(self._idle.values())))
        elif self._ended:
            self._remove(self._ended.popleft())
        else:
            return False
        self.expired += 1
        return True

    def _touch(self, topic: Topic, now: float) -> None:
        """Note activity: a stream nobody follows is kept for ``idle_retention`` from now."""
        topic.active_at = now
        if topic.kind == "stream" and not topic.subscribers and not topic.ended and not self.mirror:
            self._idle[topic.name] = topic
            self._idle.move_to_end(topic.name)
        elif self._idle.get(topic.name) is topic:
            del self._idle[topic.name]

    def _forget_if_unused(self, topic: Topic) -> None:
        # A topic nobody wrote to and nobody follows carries no information: drop it, so that
        # clients subscribing to made-up names cannot grow the registry. A mirror keeps only the
        # topics somebody here follows: the broker has the rest.
        if topic.subscribers:
            return
        unused = self.mirror or (topic.kind is None and not topic.ended)
        if unused and self._topics.get(topic.name) is topic:
            self._remove(topic)
            if self.mirror and self.on_forget is not None:
                self.on_forget(topic.name)

    def write(self, name: str, kind: TopicKind, data: Any, now: float) -> tuple[int, list[Subscriber]]:
        """Append one write to topic ``name``.

        Returns:
            The new offset, and the subscribers that could not keep up (the caller closes them).

        Raises:
            TopicEnded: the topic has ended.
            ValueError: the topic is of the other kind, or the name is invalid.
            TypeError: ``data`` is not JSON-serializable or nests too deep.
            TooManyTopics: a new topic is needed and none can be evicted.
        """
        data_json = self.encode_data(data)  # before the topic exists: a refused write leaves nothing
        topic = self._topic(name, now, evict=True)
        if topic.ended:
            raise TopicEnded(name)
        if topic.kind is not None and topic.kind != kind:
            verb = "publish" if topic.kind == "stream" else "set_state"
            raise ValueError(f"topic {name!r} is a {topic.kind} topic: use {verb}()")
        offset = topic.offset + 1
        encoded = encode_event_json(name, offset, data_json)
        slow = self._append(topic, kind, offset, encoded, data_json)
        self._touch(topic, now)
        return offset, slow

    @staticmethod
    def _append(
        topic: Topic, kind: TopicKind, offset: int, encoded: str, data_json: str | None
    ) -> list[Subscriber]:
        topic.kind = kind
        topic.offset = offset
        state = kind == "state"
        if state:
            topic.state_json = data_json
        else:
            topic.remember(offset, encoded)
        name = topic.name
        return [sub for sub in topic.subscribers if not sub.deliver(name, encoded, state=state)]

    # -- mirroring a shared broker ---------------------------------------------------------------

    def apply(
        self, name: str, epoch: str, offset: int, kind: TopicKind, data_json: str
    ) -> tuple[Applied, list[Subscriber]]:
        """Apply one write numbered by the broker (``offset`` in ``epoch``) to a mirrored topic.

        Returns:
            What happened (see ``Applied``), and the subscribers that could not keep up.
        """
        topic = self._topics.get(name)
        if topic is None:
            return "unknown", []
        if epoch != topic.epoch or topic.ended:
            return "epoch", []
        if offset <= topic.offset:
            return "duplicate", []
        if offset != topic.offset + 1 and kind == "stream":
            return "gap", []  # a state topic only needs its latest value: jumping ahead is fine
        encoded = encode_event_json(name, offset, data_json)
        return "applied", self._append(topic, kind, offset, encoded, data_json)

    def apply_end(self, name: str, epoch: str, offset: int, now: float) -> Applied:
        """Apply a broker's ``end`` of a mirrored topic at ``offset``."""
        topic = self._topics.get(name)
        if topic is None:
            return "unknown"
        if epoch != topic.epoch:
            return "epoch"
        if topic.ended:
            return "duplicate"
        if offset != topic.offset:
            return "gap"
        self.end(name, now)
        return "applied"

    def sync(self, snapshot: TopicSnapshot, now: float) -> list[Subscriber]:
        """Bring topic ``snapshot.name`` up to ``snapshot``; install it if it is not mirrored.

        Events the local copy lacks are delivered as live events when the snapshot's history
        covers them; otherwise the topic is replaced and its subscribers get ``reset``.

        Returns:
            The subscribers that could not keep up.
        """
        name = snapshot.name
        topic = self._topics.get(name)
        if topic is None:
            self._install(snapshot, now)
            return []
        if topic.epoch == snapshot.epoch and snapshot.offset >= topic.offset and not topic.ended:
            slow = self._catch_up(topic, snapshot)
            if slow is not None:
                if snapshot.ended:
                    self.end(name, now)
                return slow
        elif topic.epoch == snapshot.epoch and snapshot.offset == topic.offset:
            return []  # ended here and there: nothing to do
        subscribers = topic.subscribers
        new = self._install(snapshot, now)
        reset = Reset(topic=name, epoch=new.epoch, offset=new.offset, kind=new.kind, ended=new.ended).to_json(
            snapshot_json=new.state_json
        )
        for sub in subscribers:
            sub.deliver_reset(name, reset)
            if new.end_frame is not None:
                sub.deliver_end(name, new.end_frame)
            else:
                new.subscribers[sub] = None
        self._forget_if_unused(new)
        return []

    def _catch_up(self, topic: Topic, snapshot: TopicSnapshot) -> list[Subscriber] | None:
        """Deliver what ``topic`` lacks from ``snapshot``; None if the history does not reach."""
        missing = snapshot.offset - topic.offset
        if missing == 0:
            return []
        if snapshot.kind == "state" and snapshot.state_json is not None:
            encoded = encode_event_json(topic.name, snapshot.offset, snapshot.state_json)
            return self._append(topic, "state", snapshot.offset, encoded, snapshot.state_json)
        events = [(offset, data) for offset, data in snapshot.history if offset > topic.offset]
        if snapshot.kind != "stream" or len(events) != missing or events[0][0] != topic.offset + 1:
            return None
        slow: dict[Subscriber, None] = {}
        for offset, data_json in events:
            encoded = encode_event_json(topic.name, offset, data_json)
            slow.update(dict.fromkeys(self._append(topic, "stream", offset, encoded, None)))
        return list(slow)

    def _install(self, snapshot: TopicSnapshot, now: float) -> Topic:
        name = snapshot.name
        validate_topic(name)
        old = self._topics.get(name)
        if old is not None:
            self._remove(old)
        topic = self._new(name, snapshot.epoch)
        topic.kind, topic.offset = snapshot.kind, snapshot.offset
        topic.state_json = snapshot.state_json
        for offset, data_json in snapshot.history:
            topic.remember(offset, encode_event_json(name, offset, data_json))
        if snapshot.ended:
            topic.ended_at = now
            topic.end_frame = End(name, topic.offset).to_json()
        return topic

    def drop(self, name: str) -> None:
        """Forget topic ``name`` if nobody here follows it (a mirror that no longer needs it)."""
        topic = self._topics.get(name)
        if topic is not None:
            self._forget_if_unused(topic)

    def end(self, name: str, now: float) -> int:
        """End topic ``name``: subscribers get ``end`` and are released. Idempotent.

        Returns:
            The offset the topic ended at.
        """
        topic = self._topic(name, now, evict=True)
        if topic.ended:
            return topic.offset
        topic.ended_at = now
        topic.end_frame = End(name, topic.offset).to_json()
        self._ended.append(topic)
        self._touch(topic, now)
        subscribers, topic.subscribers = list(topic.subscribers), {}
        for sub in subscribers:
            sub.deliver_end(name, topic.end_frame)
        if self.mirror:
            self._forget_if_unused(topic)
        return topic.offset

    def subscribe(
        self,
        name: str,
        sub: Subscriber,
        *,
        now: float,
        epoch: str | None = None,
        offset: int | None = None,
        last: int | None = None,
        ref: str | int | None = None,
        presence: tuple[PresenceMember, ...] | None = None,
    ) -> list[str]:
        """Register ``sub`` on ``name`` and return the frames it must be sent first, in order.

        The first frame is ``subscribed`` (the resume point was honoured, or none was given) or
        ``reset`` (the resume point is from another epoch or older than history); it carries
        ``presence`` (the topic's members) when given. Replayed
        events follow; for an ended topic, its ``end`` frame closes the list and ``sub`` is not
        registered.

        Raises:
            TooManyTopics: ``name`` is new and the registry is full (nothing is evicted for it).
        """
        topic = self._topic(name, now)
        replay: list[str] | None = None
        if epoch is not None:
            if epoch == topic.epoch and topic.kind != "state":
                replay = topic._replay_after(offset or 0)
            elif epoch == topic.epoch:
                replay = []  # a state topic's snapshot is the whole catch-up
        answer = Subscribed if replay is not None or epoch is None else Reset
        if replay is None:
            replay = topic._last(last or 0) if topic.kind == "stream" else []
        frames = [
            answer(
                topic=name,
                epoch=topic.epoch,
                offset=topic.offset,
                kind=topic.kind,
                replayed=len(replay),
                ended=topic.ended,
                ref=ref,
                presence=presence,
            ).to_json(snapshot_json=topic.state_json),
            *replay,
        ]
        if topic.end_frame is not None:
            frames.append(topic.end_frame)
            if self.mirror:
                self._forget_if_unused(topic)
        else:
            topic.subscribers[sub] = None
            self._touch(topic, now)
        return frames

    def unsubscribe(self, name: str, sub: Subscriber, *, now: float) -> bool:
        """Remove ``sub`` from ``name``; False if it was not subscribed.

        If that was the last subscriber, the topic's idle retention starts at ``now``.
        """
        topic = self._topics.get(name)
        if topic is None or sub not in topic.subscribers:
            return False
        del topic.subscribers[sub]
        self._touch(topic, now)
        self._forget_if_unused(topic)
        return True
