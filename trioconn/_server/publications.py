"""What clients publish, handed to the application: ``hub.publications(topic_or_prefix)``.

Theory of operation
-------------------
A client's ``publish`` is stored like any write (it gets its offset from the broker); then the
connection that received it hands a ``Publication`` to every open ``Publications`` reader whose
pattern matches. Readers never hold up a client: each has a bounded buffer, and what does not
fit is counted instead of stored. The reader sees the gap where it is, as ``PublicationsLost``
raised once, and then the publications after it: nothing is dropped silently. The publications
themselves are in their topics either way.

Only the hub process whose client sent a publication hands it over, so with a shared broker
(Redis) every publication reaches the readers of exactly one process. No I/O but anyio's events.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Self

import anyio
import anyio.lowlevel
import attrs

from .._core.exceptions import PublicationsLost
from .patterns import TopicPattern

__all__ = ["Publication", "Publications"]


@attrs.frozen
class Publication:
    """One ``publish`` a client of this hub made, after it was stored.

    Attributes:
        topic: where it was published.
        data: the published JSON value.
        offset: its offset in the topic.
        identity: the publisher's identity, as ``authenticate`` returned it (None without it).
        session: the publisher's session id (``hub.close(session)`` closes that client).
    """

    topic: str
    data: Any
    offset: int
    identity: Any
    session: str


@attrs.define
class _Gap:
    count: int


class Publications:
    """An async iterator of ``Publication``; get one from ``async with hub.publications(...)``.

    Iteration ends when the hub is closed (or the ``async with`` block is left). When the
    reader fell more than ``buffer_size`` behind, iteration raises ``PublicationsLost`` at the
    gap; iterating again continues after it.
    """

    def __init__(self, pattern: TopicPattern, buffer_size: int) -> None:
        self.pattern = pattern
        self._buffer_size = buffer_size
        self._queue: deque[Publication | _Gap] = deque()
        self._queued = 0
        self._wake = anyio.Event()
        self._closed = False

    def _put(self, publication: Publication) -> None:
        if self._closed:
            return
        if self._queued >= self._buffer_size:
            last = self._queue[-1] if self._queue else None
            if isinstance(last, _Gap):
                last.count += 1
            else:
                self._queue.append(_Gap(1))
        else:
            self._queue.append(publication)
            self._queued += 1
        self._wake.set()

    def _close(self) -> None:
        """No more publications: iteration ends once the queued ones are read."""
        self._closed = True
        self._wake.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Publication:
        await anyio.lowlevel.checkpoint()
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wake = anyio.Event()
            await self._wake.wait()
        entry = self._queue.popleft()
        if isinstance(entry, _Gap):
            raise PublicationsLost(entry.count)
        self._queued -= 1
        return entry
