from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import trio
import trio.testing
import trio_websocket

from trioconn import Hub


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (long soaks)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


class Throttled(trio.abc.Stream):
    """A client's end of a stream that reads at ``rate`` bytes per (virtual) second.

    ``rate = 0`` stops reading altogether; ``None`` reads as fast as data comes.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.rate: float | None = None
        self.received = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.rate == 0:
            await trio.sleep_forever()
        size = 4096 if self.rate is not None else (max_bytes or 65536)
        data = await self.inner.receive_some(min(size, max_bytes or size))
        self.received += len(data)
        if self.rate == 0:  # stopped while this read was under way
            await trio.sleep_forever()
        if self.rate is not None:
            await trio.sleep(len(data) / self.rate)
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class RawClient:
    """A plain trio-websocket client speaking protocol v1 by hand, for server tests."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, obj: Any) -> None:
        await self.ws.send_message(obj if isinstance(obj, str | bytes) else json.dumps(obj))

    async def recv(self) -> dict[str, Any]:
        """Next frame, with batches flattened and pings answered."""
        while True:
            if getattr(self, "_pending", None):
                frame = self._pending.pop(0)
            else:
                obj = json.loads(await self.ws.get_message())
                if obj["type"] == "batch":
                    self._pending = list(obj["frames"])
                    continue
                frame = obj
            if frame["type"] == "ping" and getattr(self, "answer_pings", True):
                await self.send({"type": "pong", "id": frame["id"]})
                continue
            return frame

    async def recv_type(self, kind: str) -> dict[str, Any]:
        frame = await self.recv()
        assert frame["type"] == kind, frame
        return frame

    async def closed(self) -> trio_websocket.CloseReason:
        """Read until the server closes; return the close reason."""
        try:
            while True:
                await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            assert exc.reason is not None
            return exc.reason


@asynccontextmanager
async def raw_client(
    stream: trio.abc.Stream, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[RawClient]:
    """A RawClient over ``stream``; closes the WebSocket and the stream when done.

    The test owns the stream and closes it: trio-websocket's client leaves its socket to the
    garbage collector when the server closes first, which ``filterwarnings = error`` reports.
    """
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, "localhost", path, extra_headers=headers
        )
        try:
            yield RawClient(ws)
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def memory_client(
    hub: Hub, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[RawClient]:
    """A RawClient connected to ``hub`` over an in-memory stream (works under MockClock)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.serve_stream, server_stream)
        async with raw_client(client_stream, path, headers) as client:
            yield client
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def loopback_client(port: int, path: str = "/") -> AsyncIterator[RawClient]:
    """A RawClient over a real TCP socket on 127.0.0.1."""
    async with raw_client(await trio.open_tcp_stream("127.0.0.1", port), path) as client:
        yield client


ROOT = Path(__file__).resolve().parent.parent


class HubProcess:
    """A hub in its own process (see ``hub_process``)."""

    def __init__(self, proc: trio.Process, port: int) -> None:
        self.port = port
        self.pid = proc.pid
        self.proc = proc
        #: what it printed after its port, once it has exited
        self.output = b""


@asynccontextmanager
async def hub_process(module: str, *args: str, stderr: IO[bytes] | None = None) -> AsyncIterator[HubProcess]:
    """Run ``python -m module args`` (a ``tests/*_hub.py`` script) and yield it once it prints its port.

    On exit its standard input is closed, which is how those scripts are told to stop (no
    signals); whatever it prints meanwhile is kept in ``output``. Killed if it takes over 10 s.
    """
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = b""
        with trio.fail_after(15):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some()
                assert chunk, "hub process exited before printing its port"
                line += chunk
        hub = HubProcess(proc, int(line))
        yield hub
    finally:
        with trio.CancelScope(shield=True):
            await proc.stdin.aclose()
            with trio.move_on_after(10):
                output = b""
                while chunk := await proc.stdout.receive_some():
                    output += chunk
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    hub.output = output
