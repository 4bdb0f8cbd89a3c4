"""One timer for every connection's heartbeat: sleepers are woken together, in buckets.

Theory of operation
-------------------
Each connection's heartbeat task sleeps ``heartbeat_interval`` between pings. With one timer
per connection, every wake-up costs the event loop a deadline of its own — on trio a timer
that fires as a cancellation: a ``Cancelled`` exception raised into the task and caught by the
sleep's cancel scope. Measured on an idle hub, that was about a third of the CPU an idle
connection costs (``docs/performance.md``).

``HeartbeatClock.sleep_until(t)`` instead parks the task on the *bucket* of ``t``: time is cut
into slices of ``resolution`` seconds, ``t`` is rounded up to the end of its slice, and every
task due in the same slice waits on the same event. One ticker task (``run``, started by the
hub's ``running()``) sleeps until the earliest bucket is due and sets its event, waking all its
tasks with one timer. A sleep so lasts at least what was asked and at most ``resolution``
longer. The hub picks ``resolution`` as a small fraction of the heartbeat interval.

While no ticker runs (a connection served outside ``running()``), ``sleep_until`` is a plain
timed sleep, so the clock never leaves a task asleep for good.
"""

from __future__ import annotations

import heapq
import math

import anyio
from anyio.abc import TaskStatus

__all__ = ["HeartbeatClock"]


class HeartbeatClock:
    """Sleeps that end at bucket boundaries, all woken by one ticker task."""

    __slots__ = ("_buckets", "_due", "_tickers", "_timer", "resolution")

    def __init__(self, resolution: float) -> None:
        if not 0 < resolution < math.inf:
            raise ValueError(f"resolution must be a positive number of seconds, got {resolution!r}")
        self.resolution = resolution
        #: bucket number -> the event its sleepers wait on
        self._buckets: dict[int, anyio.Event] = {}
        #: bucket numbers, earliest first
        self._due: list[int] = []
        #: how many tickers run (the hub's ``running()`` blocks may overlap while one hands over)
        self._tickers = 0
        #: the running ticker's sleep, moved earlier when an earlier bucket appears
        self._timer: anyio.CancelScope | None = None

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` or up to ``resolution`` later; a checkpoint like any sleep."""
        number = math.ceil(deadline / self.resolution)
        wake_at = number * self.resolution
        while self._tickers:
            event = self._buckets.get(number)
            if event is None:
                event = self._buckets[number] = anyio.Event()
                heapq.heappush(self._due, number)
                timer = self._timer
                if timer is not None and wake_at < timer.deadline:
                    timer.deadline = wake_at
            await event.wait()
            if anyio.current_time() >= wake_at:  # the ticker's own test: woken because due
                return
            # woken early: the last ticker stopped and let everyone go (or one is taking over)
        await anyio.sleep_until(deadline)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Wake each bucket's sleepers when it is due, until cancelled."""
        self._tickers += 1
        try:
            task_status.started()
            while True:
                now = anyio.current_time()
                due, buckets = self._due, self._buckets
                while due and due[0] * self.resolution <= now:
                    buckets.pop(heapq.heappop(due)).set()
                with anyio.CancelScope(deadline=due[0] * self.resolution if due else math.inf) as timer:
                    self._timer = timer
                    await anyio.sleep_forever()
                self._timer = None
        finally:
            self._timer = None
            self._tickers -= 1
            if not self._tickers:  # nobody would wake them: let the sleepers go on by themselves
                for event in self._buckets.values():
                    event.set()
                self._buckets.clear()
                self._due.clear()
