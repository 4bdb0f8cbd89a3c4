"""Presence: who is subscribed to a topic on this hub process, and who comes and goes.

Theory of operation
-------------------
Every client subscription of a topic is a *member* of it, from the moment it is registered to
the moment it ends (unsubscribe, the topic's end, the connection's end of any kind). One
connection subscribes to a topic at most once, so a member is one (topic, session) pair.

``Presence`` keeps the members and tells three audiences, synchronously, in the step that
changes them:

- the application, through ``hub.presence(topic)`` (the members now) and the readers of
  ``hub.presence_changes(pattern)`` (``Joined``/``Left``);
- the subscribers that asked for presence (``authorize`` returned ``Allow(presence=True)``):
  the member list in their ``subscribed`` answer, then a ``join``/``leave`` frame per change,
  queued like events (a subscriber that cannot keep up is a slow consumer, 4001). They see each
  member's public ``info``, never the identity.

A change reader that falls behind by more than its ``buffer_size`` gets the net changes: a
``Left`` whose ``Joined`` it has not read yet removes that ``Joined`` instead of being queued,
so its queue stays bounded by the members the hub holds and what it builds from the changes is
still right. The members are per hub process (not shared through a broker). No I/O but anyio's
events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, Self

import anyio
import anyio.lowlevel
import attrs

from .._core.protocol import Join, Leave, PresenceMember
from .patterns import TopicPattern

__all__ = ["Joined", "Left", "Member", "Presence", "PresenceChanges", "PresenceSubscriber"]


@attrs.frozen
class Member:
    """One client subscription of a topic, as ``hub.presence(topic)`` lists it.

    Attributes:
        identity: the client's identity, as ``authenticate`` returned it.
        session: its session id (one per connection: two tabs are two members).
        since: when it subscribed, as a Unix time in seconds.
        info: what other subscribers are shown of it (``Allow(info=...)``; None: anonymous).
    """

    identity: Any
    session: str
    since: float
    info: Any


@attrs.frozen
class Joined:
    """A client subscribed to ``topic`` (from ``hub.presence_changes``); fields as ``Member``."""

    topic: str
    identity: Any
    session: str
    since: float
    info: Any


@attrs.frozen
class Left:
    """That subscription of ``topic`` ended; fields as ``Member`` (``since``: when it joined)."""

    topic: str
    identity: Any
    session: str
    since: float
    info: Any


class PresenceSubscriber(Protocol):
    """Where presence frames go: a client connection."""

    def deliver_presence(self, encoded: str) -> None:
        """Queue one ``join``/``leave`` frame (bounded like events)."""


@attrs.define(eq=False)
class _Entry:
    member: Member
    subscriber: PresenceSubscriber
    receives: bool

    def public(self) -> PresenceMember:
        return PresenceMember(self.member.info, self.member.session, self.member.since)


class Presence:
    """The members of every topic of one hub, and the readers of their changes.

    Args:
        clock: the Unix time for ``since`` (replaceable in tests).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        #: every member of every topic, by session
        self._topics: dict[str, dict[str, _Entry]] = {}
        #: the members that receive ``join``/``leave`` frames, by topic: joining and leaving
        #: cost nothing per member that does not (a topic with thousands of plain subscribers)
        self._receivers: dict[str, dict[str, _Entry]] = {}
        self._readers: list[PresenceChanges] = []

    def members(self, topic: str) -> tuple[Member, ...]:
        return tuple(entry.member for entry in self._topics.get(topic, {}).values())

    def count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def prepare(
        self, topic: str, identity: Any, session: str, info: Any, *, listed: bool
    ) -> tuple[Member, tuple[PresenceMember, ...] | None]:
        """A member for ``session`` and, if ``listed``, the member list its ``subscribed`` answer
        carries (with itself), without registering it: ``join`` does that once the answer is made."""
        member = Member(identity, session, self._clock(), info)
        if not listed:
            return member, None
        current = [
            entry.public()
            for entry in self._topics.get(topic, {}).values()
            if entry.member.session != session
        ]
        return member, (*current, PresenceMember(info, session, member.since))

    def join(self, topic: str, member: Member, subscriber: PresenceSubscriber, *, receives: bool) -> None:
        """Register ``member``; tell the application and the subscribers that get presence."""
        receivers = self._receivers.get(topic)
        if receivers:
            frame = Join(topic, member.info, member.session, member.since).to_json()
            for entry in list(receivers.values()):
                entry.subscriber.deliver_presence(frame)
        entry = _Entry(member, subscriber, receives)
        self._topics.setdefault(topic, {})[member.session] = entry
        if receives:
            self._receivers.setdefault(topic, {})[member.session] = entry
        if self._readers:
            self._tell(Joined(topic, member.identity, member.session, member.since, member.info))

    def leave(self, topic: str, session: str, *, quiet: bool = False) -> None:
        """Remove ``session``'s membership of ``topic`` (no-op if it is none).

        ``quiet``: no ``leave`` frames (the topic ended: every subscription of it is over and
        its subscribers were told by ``end``); the application is told either way.
        """
        entries = self._topics.get(topic)
        gone = entries.pop(session, None) if entries is not None else None
        if gone is None or entries is None:
            return
        if not entries:
            del self._topics[topic]
        receivers = self._receivers.get(topic)
        if receivers is not None:
            receivers.pop(session, None)
            if not receivers:
                del self._receivers[topic]
            elif not quiet:
                frame = Leave(topic, gone.member.info, session).to_json()
                for entry in list(receivers.values()):
                    entry.subscriber.deliver_presence(frame)
        if self._readers:
            member = gone.member
            self._tell(Left(topic, member.identity, session, member.since, member.info))

    # -- readers of the changes -----------------------------------------------------------------

    def add_reader(self, reader: PresenceChanges) -> None:
        self._readers.append(reader)

    def remove_reader(self, reader: PresenceChanges) -> None:
        if reader in self._readers:
            self._readers.remove(reader)
        reader._close()

    def close_readers(self) -> None:
        for reader in list(self._readers):
            self.remove_reader(reader)

    def _tell(self, change: Joined | Left) -> None:
        for reader in self._readers:
            if reader.pattern.matches(change.topic):
                reader._put(change)


class PresenceChanges:
    """An async iterator of ``Joined``/``Left``; get one from ``async with hub.presence_changes()``.

    Iteration ends when the hub is closed (or the ``async with`` block is left).
    """

    def __init__(self, pattern: TopicPattern, buffer_size: int) -> None:
        self.pattern = pattern
        self._buffer_size = buffer_size
        self._queue: deque[Joined | Left] = deque()
        #: queued ``Joined`` by (topic, session), so a ``Left`` can cancel it when we are behind
        self._unread: dict[tuple[str, str], Joined] = {}
        self._wake = anyio.Event()
        self._closed = False

    def _put(self, change: Joined | Left) -> None:
        if self._closed:
            return
        key = (change.topic, change.session)
        if isinstance(change, Left):
            joined = self._unread.get(key)
            if joined is not None and len(self._queue) >= self._buffer_size:
                del self._unread[key]
                self._queue.remove(joined)  # came and went unseen: the net change is nothing
                return
        else:
            self._unread[key] = change
        self._queue.append(change)
        self._wake.set()

    def _close(self) -> None:
        self._closed = True
        self._wake.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Joined | Left:
        await anyio.lowlevel.checkpoint()
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wake = anyio.Event()
            await self._wake.wait()
        change = self._queue.popleft()
        key = (change.topic, change.session)
        if self._unread.get(key) is change:
            del self._unread[key]
        return change
