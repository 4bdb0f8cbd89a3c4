"""The stdin/stdout control loop shared by the trio servers (raw trio-websocket and trioconn).

The runner writes one JSON command per line on the server's stdin and reads one JSON answer per
line on its stdout. Commands (the asyncio server implements the same set):

* ``{"cmd": "usage"}`` -> ``{"cpu_s", "rss_kib", "t"}`` read from /proc/self.
* ``{"cmd": "burst", "topic", "count", "size"}`` -> publish ``count`` events as fast as possible
  (one checkpoint between events so senders interleave) -> ``{"published", "t_start", "t_end"}``.
* ``{"cmd": "rate", "topic", "rate", "seconds", "size"}`` -> publish on a fixed schedule ->
  ``{"published", "t_start", "t_end", "max_lag_ms"}`` (lag: how late the publisher ran).
* ``{"cmd": "quit"}`` -> ``{"bye": true}``, then the server exits.

A server may add commands of its own (``extra``: name -> async handler taking the command and
returning the answer); the trioconn server adds the reconnect-storm commands that way.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from bench.common import emit, make_data, now, usage

Publish = Callable[[str, Any], object]  # the return value (e.g. an offset) is ignored
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def _lines(stream: trio.lowlevel.FdStream) -> Any:
    """Yield decoded JSON commands from ``stream`` until EOF."""
    buf = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


async def control_loop(publish: Publish, extra: dict[str, Handler] | None = None) -> None:
    """Serve runner commands from stdin until ``quit`` or EOF; ``publish(topic, data)`` publishes."""
    extra = extra or {}
    seqs: defaultdict[str, int] = defaultdict(int)
    stdin = trio.lowlevel.FdStream(0)
    async for cmd in _lines(stdin):
        kind = cmd.get("cmd")
        if kind == "usage":
            emit(usage())
        elif kind == "burst":
            topic, count, size = cmd["topic"], int(cmd["count"]), int(cmd.get("size", 100))
            t_start = now()
            for _ in range(count):
                publish(topic, make_data(seqs[topic], size))
                seqs[topic] += 1
                await trio.lowlevel.checkpoint()
            emit({"published": count, "t_start": t_start, "t_end": now()})
        elif kind == "rate":
            topic, size = cmd["topic"], int(cmd.get("size", 100))
            rate, seconds = float(cmd["rate"]), float(cmd["seconds"])
            total = math.floor(rate * seconds)
            t_start = trio.current_time()
            wall_start = now()
            max_lag = 0.0
            for i in range(total):
                due = t_start + i / rate
                await trio.sleep_until(due)
                max_lag = max(max_lag, trio.current_time() - due)
                publish(topic, make_data(seqs[topic], size))
                seqs[topic] += 1
            emit({"published": total, "t_start": wall_start, "t_end": now(), "max_lag_ms": max_lag * 1e3})
        elif kind == "quit":
            emit({"bye": True})
            return
        elif kind in extra:
            emit(await extra[kind](cmd))
        else:
            emit({"error": f"unknown command {kind!r}"})
