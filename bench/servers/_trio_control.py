"""The stdin/stdout control loop shared by the trio servers (raw trio-websocket and trioconn).

The commands are ``_commands.py``'s (the same set for every server).

A server may add commands of its own (``extra``: name -> async handler taking the command and
returning the answer); the trioconn server adds the reconnect-storm commands that way.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from bench.common import emit
from bench.servers._commands import Commands, Publish

__all__ = ["Handler", "Publish", "control_loop"]

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
    commands = Commands(publish)
    stdin = trio.lowlevel.FdStream(0)
    async for cmd in _lines(stdin):
        kind = cmd.get("cmd")
        answer = await extra[kind](cmd) if kind in extra else await commands.run(cmd)
        if answer is None:
            emit({"bye": True})
            return
        emit(answer)
