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
"""

from __future__ import annotations

from collections import deque

import attrs

__all__ = ["Outbox"]


@attrs.define(eq=False)
class _StateSlot:
    topic: str
    encoded: str


class Outbox:
    """Frames waiting for one connection's sender.

    Args:
        max_events: how many frames may wait before the reader counts as slow.
    """

    __slots__ = ("_max_events", "_queue", "_state_slots", "superseded")

    def __init__(self, max_events: int) -> None:
        self._queue: deque[str | _StateSlot] = deque()
        self._state_slots: dict[str, _StateSlot] = {}
        self._max_events = max_events
        #: state values replaced before they were sent
        self.superseded = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, encoded: str) -> bool:
        """Queue a frame; False (and nothing queued) when the outbox is full."""
        if len(self._queue) >= self._max_events:
            return False
        self._queue.append(encoded)
        return True

    def put_state(self, topic: str, encoded: str) -> bool:
        """Queue a state topic's value, replacing a still-queued older one."""
        slot = self._state_slots.get(topic)
        if slot is not None:
            slot.encoded = encoded
            self.superseded += 1
            return True
        if len(self._queue) >= self._max_events:
            return False
        slot = self._state_slots[topic] = _StateSlot(topic, encoded)
        self._queue.append(slot)
        return True

    def put_unbounded(self, frames: list[str]) -> None:
        """Queue frames the connection itself owes (subscribe answers and their replay).

        They are bounded by the history size, not by the outbox, so a resume never fails for
        being larger than the outbox.
        """
        self._queue.extend(frames)

    def put_control(self, topic: str, frame: str) -> None:
        """Queue a frame that changes ``topic``'s position (``reset``), unbounded like answers.

        A state value queued before it stays before it; a value set afterwards gets a new slot
        behind it, so no value of the new position overtakes the frame that announces it.
        """
        self._state_slots.pop(topic, None)
        self._queue.append(frame)

    def take(self, max_bytes: int) -> list[str]:
        """Remove and return queued frames, oldest first, about ``max_bytes`` in all (at least one)."""
        frames: list[str] = []
        size = 0
        queue = self._queue
        while queue and (not frames or size < max_bytes):
            item = queue.popleft()
            if isinstance(item, _StateSlot):
                if self._state_slots.get(item.topic) is item:
                    del self._state_slots[item.topic]
                item = item.encoded
            frames.append(item)
            size += len(item)
        return frames

    def clear(self) -> int:
        """Drop everything queued; return how many frames were dropped."""
        count = len(self._queue)
        self._queue.clear()
        self._state_slots.clear()
        return count
