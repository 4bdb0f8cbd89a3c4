"""Baseline: raw trio-websocket, one ``await ws.send_message()`` per subscriber per event.

Each connection gets a sender task fed by an unbounded trio memory channel; publishing encodes
the event once and ``send_nowait``s the same text into every subscriber's channel. This is the
straightforward trio design that trioconn has to beat. It speaks the benchmark subset of
protocol v1: ``subscribe`` -> ``subscribed``, then ``event`` frames (no welcome, no pings).

Run: ``python -m bench.servers.raw_trio_websocket --port 8765`` (controlled on stdin).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from bench.common import emit, encode_event, encode_subscribed, raise_nofile
from bench.servers._trio_control import control_loop

Outbox = trio.MemorySendChannel[str]


class RawHub:
    """Topic -> set of per-connection outboxes; offsets count events per topic from 1."""

    def __init__(self) -> None:
        self.subscribers: defaultdict[str, set[Outbox]] = defaultdict(set)
        self.offsets: defaultdict[str, int] = defaultdict(int)

    def publish(self, topic: str, data: Any) -> None:
        """Encode once, enqueue for every subscriber (never blocks: the outboxes are unbounded)."""
        self.offsets[topic] += 1
        text = encode_event(topic, self.offsets[topic], data)
        for outbox in self.subscribers[topic]:
            outbox.send_nowait(text)

    async def handler(self, request: WebSocketRequest) -> None:
        """One connection: a reader loop here and a sender task draining the outbox."""
        ws = await request.accept()
        send, receive = trio.open_memory_channel[str](math.inf)
        topics: set[str] = set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender, ws, receive)
                try:
                    while True:
                        frame = json.loads(await ws.get_message())
                        if frame.get("type") == "subscribe" and isinstance(frame.get("topic"), str):
                            topic = frame["topic"]
                            topics.add(topic)
                            send.send_nowait(encode_subscribed(topic, self.offsets[topic]))
                            self.subscribers[topic].add(send)
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            for topic in topics:
                self.subscribers[topic].discard(send)

    @staticmethod
    async def _sender(ws: WebSocketConnection, receive: trio.MemoryReceiveChannel[str]) -> None:
        try:
            async for text in receive:
                await ws.send_message(text)
        except ConnectionClosed:
            pass


async def main(port: int) -> None:
    """Serve on 127.0.0.1:``port`` and obey the runner's commands on stdin."""
    nofile = raise_nofile(65536)
    hub = RawHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_websocket, hub.handler, "127.0.0.1", port, None)
        emit({"ready": True, "port": port, "pid": os.getpid(), "nofile": nofile})
        await control_loop(hub.publish)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    trio.run(main, parser.parse_args().port)
