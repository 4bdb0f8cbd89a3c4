"""One timer for every connection's heartbeat: pings are sent in buckets, by one ticker task.

Theory of operation
-------------------
Each connection pings its client every ``heartbeat_interval``. With a timer and a wake-up of its
heartbeat task per ping, an idle connection cost the event loop a deadline of its own — on trio a
timer that fires as a cancellation: a ``Cancelled`` exception raised into the task and caught by
the sleep's cancel scope — plus a task switch and a chain of coroutine objects that live for a
whole interval (and so reach the garbage collector's oldest generation). Measured on an idle
hub, that was about a third of the CPU an idle connection costs (``docs/performance.md``).

``HeartbeatClock`` instead keeps every connection's next ping in a *bucket*: time is cut into
slices of ``resolution`` seconds, a due time is rounded up to the end of its slice, and one
ticker task (``run``, started by the hub's ``running()``) sleeps until the earliest bucket is
due and calls ``ping_due()`` on each connection in it — a synchronous call that queues the ping
and answers when the next one is due. A ping so goes out at least ``interval`` after the last and
at most ``resolution`` later; the hub picks ``resolution`` as 1/64 of the interval.

The connection's heartbeat task stays: it holds the dead-link deadline (a cancel scope the
receiver keeps moving) and, while a ticker runs, waits for ``stopped`` — it only wakes when the
link is dead, the connection ends, or the last ticker stops (then it pings by itself, with timed
sleeps, until a ticker runs again). A connection leaves the clock when its heartbeat task ends,
so the clock never holds a finished connection.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

__all__ = ["Beat", "HeartbeatClock"]

logger = logging.getLogger("trioconn")


class Beat(Protocol):
    """What the clock pings: a connection."""

    def ping_due(self) -> float | None:
        """Send the ping that is due; return when the next one is due (None: no more)."""


class HeartbeatClock:
    """Pings due in the same slice of time are sent together, by one ticker task."""

    __slots__ = ("_buckets", "_due", "_tickers", "_timer", "_where", "resolution", "stopped")

    def __init__(self, resolution: float) -> None:
        if not 0 < resolution < math.inf:
            raise ValueError(f"resolution must be a positive number of seconds, got {resolution!r}")
        self.resolution = resolution
        #: bucket number -> the beats due in it
        self._buckets: dict[int, dict[Beat, None]] = {}
        #: bucket numbers, earliest first
        self._due: list[int] = []
        #: the bucket of each scheduled beat
        self._where: dict[Beat, int] = {}
        #: how many tickers run (the hub's ``running()`` blocks may overlap while one hands over)
        self._tickers = 0
        #: the running ticker's sleep, moved earlier when an earlier bucket appears
        self._timer: anyio.CancelScope | None = None
        #: set when the last ticker stops (a new one for each time a ticker starts)
        self.stopped: anyio.Event | None = None

    @property
    def running(self) -> bool:
        """True while a ticker runs: ``schedule`` then leads to pings."""
        return self._tickers > 0

    def __len__(self) -> int:
        return len(self._where)

    def schedule(self, due: float, beat: Beat) -> None:
        """Call ``beat.ping_due()`` at ``due`` (up to ``resolution`` later), and again when it says."""
        self.unschedule(beat)
        number = math.ceil(due / self.resolution)
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._buckets[number] = {}
            heapq.heappush(self._due, number)
            timer = self._timer
            wake_at = number * self.resolution
            if timer is not None and wake_at < timer.deadline:
                timer.deadline = wake_at
        bucket[beat] = None
        self._where[beat] = number

    def unschedule(self, beat: Beat) -> None:
        """Forget ``beat`` (no-op if it is not scheduled)."""
        number = self._where.pop(beat, None)
        if number is not None:
            self._buckets[number].pop(beat, None)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Ping each bucket's beats when it is due, until cancelled."""
        if not self._tickers:
            self.stopped = anyio.Event()
        self._tickers += 1
        try:
            task_status.started()
            while True:
                self._fire(anyio.current_time())
                deadline = self._due[0] * self.resolution if self._due else math.inf
                with anyio.CancelScope(deadline=deadline) as timer:
                    self._timer = timer
                    await anyio.sleep_forever()
                self._timer = None
        finally:
            self._timer = None
            self._tickers -= 1
            if not self._tickers and self.stopped is not None:
                self.stopped.set()  # the heartbeat tasks take over their own pings

    def _fire(self, now: float) -> None:
        due, buckets, where = self._due, self._buckets, self._where
        while due and due[0] * self.resolution <= now:
            for beat in buckets.pop(heapq.heappop(due)):
                del where[beat]
                try:
                    following = beat.ping_due()
                except Exception:  # a bug in one connection must not stop every heartbeat
                    logger.exception("a heartbeat failed")
                    continue
                if following is not None:
                    self.schedule(following, beat)
