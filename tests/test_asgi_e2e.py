"""The client's resume and close-1000 guarantees, over real TCP, whatever serves the hub.

One test body per guarantee, run against three servers through a small handle (publish, stream,
close every session, end, connection counts):

- ``standalone``: ``Hub.serve`` in this process (the handle calls the hub directly);
- ``uvicorn``: ``tests/asgi_app.py`` (FastAPI, ``HubApp`` mounted at ``/ws``) under uvicorn
  (asyncio), driven over HTTP;
- ``hypercorn-trio``: the same app under ``hypercorn --worker-class trio``.

These are the in-memory tests of ``test_client_e2e.py`` (resume after a mid-stream close, close
1000 ends for good) in real time, so they wait on conditions with deadlines, never fixed sleeps,
except one short check that nothing reconnects.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import trio

from trioconn import Backoff, ClientState, EventItem, Hub, connect

from ._asgi_server import SERVERS, AsgiServer, asgi_server
from .asgi_app import allow_all, publish_numbered


class ServerHandle(Protocol):
    url: str

    async def publish(self, topic: str, count: int) -> None: ...
    async def stream(self, topic: str, count: int, interval: float) -> None: ...
    async def close_all(self, code: int, reason: str = "") -> int: ...
    async def end(self, topic: str) -> None: ...
    async def counts(self) -> tuple[int, int]:
        """(connections now, connections accepted so far)"""


class Standalone:
    def __init__(self, hub: Hub, port: int, nursery: trio.Nursery) -> None:
        self.hub = hub
        self.url = f"ws://127.0.0.1:{port}/"
        self.nursery = nursery

    async def publish(self, topic: str, count: int) -> None:
        await publish_numbered(self.hub, topic, count, 0)

    async def stream(self, topic: str, count: int, interval: float) -> None:
        self.nursery.start_soon(publish_numbered, self.hub, topic, count, interval)

    async def close_all(self, code: int, reason: str = "") -> int:
        return sum(self.hub.close(session, code, reason) for session in self.hub.sessions())

    async def end(self, topic: str) -> None:
        await self.hub.end(topic)

    async def counts(self) -> tuple[int, int]:
        stats = self.hub.statistics()
        return stats.connections, stats.accepted


class OverHttp:
    def __init__(self, server: AsgiServer) -> None:
        self.server = server
        self.url = f"ws://127.0.0.1:{server.port}/ws/"

    async def _call(self, method: str, path: str) -> Any:
        status, body = await self.server.http(method, path)
        assert status == 200, (path, status, body)
        return body

    async def publish(self, topic: str, count: int) -> None:
        await self._call("POST", f"/control/publish?topic={topic}&count={count}")

    async def stream(self, topic: str, count: int, interval: float) -> None:
        await self._call("POST", f"/control/stream?topic={topic}&count={count}&interval={interval}")

    async def close_all(self, code: int, reason: str = "") -> int:
        query = urllib.parse.urlencode({"code": code, "reason": reason})
        return int((await self._call("POST", f"/control/close?{query}"))["closed"])

    async def end(self, topic: str) -> None:
        await self._call("POST", f"/control/end?topic={topic}")

    async def counts(self) -> tuple[int, int]:
        body = await self._call("GET", "/control/stats")
        return body["connections"], body["accepted"]


@pytest.fixture(params=["standalone", *SERVERS])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerHandle]:
    if request.param == "standalone":
        hub = Hub(authorize=allow_all)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            yield Standalone(hub, port, nursery)
            await hub.aclose()
            nursery.cancel_scope.cancel()
    else:
        async with asgi_server(
            request.param, "tests.asgi_app:app", tmp_path, ready_path="/control/stats"
        ) as s:
            yield OverHttp(s)


FAST = Backoff(base=0.05, cap=0.5)


async def test_closed_mid_stream_the_client_resumes_with_no_gap_no_duplicate_no_reset(
    server: ServerHandle,
) -> None:
    count = 300
    offsets: list[int] = []
    closed: list[int] = []
    with trio.fail_after(20):
        async with connect(server.url, backoff=FAST) as client:
            async with client.subscribe("feed", last=count) as sub:
                await client.wait_state(ClientState.OPEN)
                await server.stream("feed", count, 0.003)
                async for item in sub:
                    assert isinstance(item, EventItem), item
                    assert item.data == item.offset, item
                    offsets.append(item.offset)
                    if len(offsets) in (count // 3, 2 * count // 3):
                        # a non-final code: the client reconnects and resumes after its offset
                        closed.append(await server.close_all(4500, "moving you"))
                    if item.offset == count:
                        break
            stats = client.statistics()
    assert offsets == list(range(1, count + 1))
    assert closed == [1, 1]
    assert (stats.connects, stats.reconnects, stats.resets) == (3, 2, 0)


async def test_closing_1000_after_the_last_event_ends_the_client_for_good(server: ServerHandle) -> None:
    with trio.fail_after(15):
        async with connect(server.url, backoff=FAST) as client:
            async with client.subscribe("job", last=5) as sub:
                await client.wait_state(ClientState.OPEN)
                await server.publish("job", 5)
                offsets = []
                async for item in sub:  # ends when the client has closed with 1000
                    assert isinstance(item, EventItem), item
                    offsets.append(item.offset)
                    if item.offset == 5:
                        assert await server.close_all(1000, "done") == 1
            final = await client.wait_state(ClientState.CLOSED)
            stats = client.statistics()
        for _ in range(500):  # the server's side of the close may finish a little later
            if (await server.counts())[0] == 0:
                break
            await trio.sleep(0.01)
    assert offsets == [1, 2, 3, 4, 5]
    assert (final.code, final.reason) == (1000, "done")
    assert (stats.state, stats.attempts, stats.connects, stats.reconnects) == (ClientState.CLOSED, 1, 1, 0)
    # The server agrees: its one connection is gone and it accepted no other.
    assert await server.counts() == (0, 1)
