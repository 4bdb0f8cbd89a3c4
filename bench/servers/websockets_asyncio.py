"""Baseline: websockets (asyncio implementation) with ``websockets.broadcast()``.

``broadcast()`` writes the same frame to every subscriber's transport synchronously, without a
task or a queue per connection: the cheapest pure-Python fan-out available. Speaks the same
benchmark subset of protocol v1 and the same stdin control commands as the other servers (see
``bench/servers/_commands.py``). Runs on the default asyncio loop (``--uvloop`` to switch).

Run: ``python -m bench.servers.websockets_asyncio --port 8765`` (controlled on stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import defaultdict
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from bench.common import emit, encode_event, encode_subscribed, raise_nofile
from bench.servers._commands import Commands


class BroadcastHub:
    """Topic -> set of connections; offsets count events per topic from 1."""

    def __init__(self) -> None:
        self.subscribers: defaultdict[str, set[ServerConnection]] = defaultdict(set)
        self.offsets: defaultdict[str, int] = defaultdict(int)

    def publish(self, topic: str, data: Any) -> None:
        """Encode once and ``broadcast()`` to the topic's subscribers."""
        self.offsets[topic] += 1
        broadcast(self.subscribers[topic], encode_event(topic, self.offsets[topic], data))

    async def handler(self, ws: ServerConnection) -> None:
        """Read ``subscribe`` frames until the connection closes."""
        topics: set[str] = set()
        try:
            async for message in ws:
                frame = json.loads(message)
                if frame.get("type") == "subscribe" and isinstance(frame.get("topic"), str):
                    topic = frame["topic"]
                    topics.add(topic)
                    await ws.send(encode_subscribed(topic, self.offsets[topic]))
                    self.subscribers[topic].add(ws)
        except ConnectionClosed:
            pass
        finally:
            for topic in topics:
                self.subscribers[topic].discard(ws)


async def main(port: int) -> None:
    """Serve on 127.0.0.1:``port`` and obey the runner's commands on stdin."""
    nofile = raise_nofile(65536)
    hub = BroadcastHub()
    commands = Commands(hub.publish)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with serve(hub.handler, "127.0.0.1", port, backlog=4096):
        emit({"ready": True, "port": port, "pid": os.getpid(), "nofile": nofile})
        while line := await reader.readline():
            if not line.strip():
                continue
            answer = await commands.run(json.loads(line))
            if answer is None:
                emit({"bye": True})
                break
            emit(answer)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.port))
    else:
        asyncio.run(main(args.port))
