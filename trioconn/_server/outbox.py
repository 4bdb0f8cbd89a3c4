"""A connection's outbox: bounded, batching, with latest-value-wins for state topics. No I/O.

Theory of operation
-------------------
Publishers append already-encoded frames and never wait: if a stream event does not fit, ``put``
returns False and the connection is closed as a slow consumer (4001) so the client reconnects and
resumes from history. A state topic has at most one pending value in the outbox: a newer value
replaces the queued one in place (its slot keeps its position, so per-topic order holds), which is
why a slow reader of progress gets the latest value and never a backlog of stale ones.

The sender ``take``s everything that is queued, up to a byte budget, and writes it as one frame
(a ``batch`` when there is more than one): it never waits to fill a batch.

``bytes`` counts what is queued, whatever put it there (events, answers, replays, snapshots,
errors), so the connection can hold every client to one memory budget. Frames are ``str`` of
ASCII JSON (``ensure_ascii``), so characters are bytes.
"""

from __future__ import annotations

from collections import deque

import attrs

__all__ = ["Outbox"]


@attrs.define(eq=False)
class _StateSlot:
    topic: str
    encoded: str


@attrs.define(eq=False)
class _Owed:
    """Frames the connection owes as one answer (e.g. ``subscribed`` and its replay).

    One queue entry, however many frames: an answer counts once against ``max_events``, so a
    replay of 2000 events never makes the next live event look like an overflow.
    """

    frames: list[str]
    next: int = 0


class Outbox:
    """Frames waiting for one connection's sender.

    Args:
        max_events: how many events (an answer counts as one) may wait before the reader
            counts as slow.
        max_bytes: how many bytes events may fill, counting everything queued.
    """

    __slots__ = ("_max_bytes", "_max_events", "_queue", "_state_slots", "bytes", "superseded")

    def __init__(self, max_events: int, max_bytes: float = float("inf")) -> None:
        self._queue: deque[str | _StateSlot | _Owed] = deque()
        self._state_slots: dict[str, _StateSlot] = {}
        self._max_events = max_events
        self._max_bytes = max_bytes
        #: encoded size of everything queued
        self.bytes = 0
        #: state values replaced before they were sent
        self.superseded = 0

    def __len__(self) -> int:
        return len(self._queue)

    def _room(self, size: int) -> bool:
        return len(self._queue) < self._max_events and self.bytes + size <= self._max_bytes

    def put(self, encoded: str) -> bool:
        """Queue a frame; False (and nothing queued) when it does not fit, by count or bytes."""
        if not self._room(len(encoded)):
            return False
        self._queue.append(encoded)
        self.bytes += len(encoded)
        return True

    def put_state(self, topic: str, encoded: str) -> bool:
        """Queue a state topic's value, replacing a still-queued older one."""
        slot = self._state_slots.get(topic)
        if slot is not None:
            grow = len(encoded) - len(slot.encoded)
            if grow > 0 and self.bytes + grow > self._max_bytes:
                return False
            slot.encoded = encoded
            self.bytes += grow
            self.superseded += 1
            return True
        if not self._room(len(encoded)):
            return False
        slot = self._state_slots[topic] = _StateSlot(topic, encoded)
        self._queue.append(slot)
        self.bytes += len(encoded)
        return True

    def put_unbounded(self, frames: list[str]) -> None:
        """Queue frames the connection itself owes (answers, replays, errors).

        They are not refused here — a resume must never fail for being larger than the outbox —
        but they count in ``bytes``: the connection stops reading the client's requests while
        it is over budget (see ``connection.py``), so they cannot pile up either.
        """
        if frames:
            self._queue.append(_Owed(frames) if len(frames) > 1 else frames[0])
            self.bytes += sum(map(len, frames))

    def put_control(self, topic: str, frame: str) -> None:
        """Queue a frame that changes ``topic``'s position (``reset``), unbounded like answers.

        A state value queued before it stays before it; a value set afterwards gets a new slot
        behind it, so no value of the new position overtakes the frame that announces it.
        """
        self._state_slots.pop(topic, None)
        self._queue.append(frame)
        self.bytes += len(frame)

    def take(self, max_bytes: int) -> list[str]:
        """Remove and return queued frames, oldest first, about ``max_bytes`` in all (at least one)."""
        frames: list[str] = []
        size = 0
        queue = self._queue
        while queue and (not frames or size < max_bytes):
            item = queue[0]
            if isinstance(item, _Owed):
                owed, index = item.frames, item.next
                while index < len(owed) and (not frames or size < max_bytes):
                    frames.append(owed[index])
                    size += len(owed[index])
                    index += 1
                if index < len(owed):
                    item.next = index
                    break
                queue.popleft()
                continue
            queue.popleft()
            if isinstance(item, _StateSlot):
                if self._state_slots.get(item.topic) is item:
                    del self._state_slots[item.topic]
                item = item.encoded
            frames.append(item)
            size += len(item)
        self.bytes -= size
        return frames

    def clear(self) -> int:
        """Drop everything queued; return how many frames were dropped."""
        count = sum(len(i.frames) - i.next if isinstance(i, _Owed) else 1 for i in self._queue)
        self._queue.clear()
        self._state_slots.clear()
        self.bytes = 0
        return count
