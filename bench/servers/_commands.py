"""The runner's control commands, once for every server (on anyio: trio and asyncio alike).

The runner writes one JSON command per line on the server's stdin and reads one JSON answer per
line on its stdout:

* ``{"cmd": "usage"}`` -> ``{"cpu_s", "rss_kib", "t"}`` read from /proc/self.
* ``{"cmd": "burst", "topic", "count", "size"}`` -> publish ``count`` events as fast as possible
  (one checkpoint between events so senders interleave) -> ``{"published", "t_start", "t_end"}``.
* ``{"cmd": "rate", "topic", "rate", "seconds", "size"}`` -> publish on a fixed schedule ->
  ``{"published", "t_start", "t_end", "max_lag_ms"}`` (lag: how late the publisher ran).
* ``{"cmd": "quit"}`` -> ``{"bye": true}``, then the server exits.

Each server reads the lines its own way and passes each command to ``Commands.run``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

from bench.common import make_data, now, usage

Publish = Callable[[str, Any], object]  # the return value (e.g. an offset) is ignored


class Commands:
    """``usage``, ``burst``, ``rate`` and ``quit``, publishing with ``publish(topic, data)``."""

    def __init__(self, publish: Publish) -> None:
        self.publish = publish
        self.seqs: defaultdict[str, int] = defaultdict(int)

    async def run(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        """Run one command; ``None`` means quit. Unknown commands get ``{"error": ...}``."""
        kind = cmd.get("cmd")
        if kind == "usage":
            return usage()
        if kind == "burst":
            topic, count, size = cmd["topic"], int(cmd["count"]), int(cmd.get("size", 100))
            t_start = now()
            for _ in range(count):
                self._next(topic, size)
                await anyio.lowlevel.checkpoint()
            return {"published": count, "t_start": t_start, "t_end": now()}
        if kind == "rate":
            topic, size = cmd["topic"], int(cmd.get("size", 100))
            rate, seconds = float(cmd["rate"]), float(cmd["seconds"])
            total = math.floor(rate * seconds)
            t0, wall_start, max_lag = anyio.current_time(), now(), 0.0
            for i in range(total):
                due = t0 + i / rate
                await anyio.sleep_until(due)
                max_lag = max(max_lag, anyio.current_time() - due)
                self._next(topic, size)
            return {"published": total, "t_start": wall_start, "t_end": now(), "max_lag_ms": max_lag * 1e3}
        if kind == "quit":
            return None
        return {"error": f"unknown command {kind!r}"}

    def _next(self, topic: str, size: int) -> None:
        self.publish(topic, make_data(self.seqs[topic], size))
        self.seqs[topic] += 1
