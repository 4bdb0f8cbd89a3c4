"""``trioconn serve --redis``: health follows the broker, and a client moves between servers.

Each test starts its own redis-server on a free port (``tests/test_redis.py``'s ``redis_server`` fixture:
skipped without ``redis-server``, failed when ``TRIOCONN_REQUIRE_REDIS=1``) and ``trioconn serve``
processes pointed at it. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import re
import signal

import pytest
import trio

import trioconn

from ._serve import Serve, eventually, metric
from .test_redis import _redis_cluster, both_modes, redis_server  # noqa: F401 - the fixtures

pytestmark = pytest.mark.redis

KEY = "test-api-key-0123456789"


@pytest.fixture
def servers():
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        server = Serve(*args, name=f"serve-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def health(server: Serve) -> tuple[int, dict]:
    return server.call("GET", "/health")


@both_modes
def test_health_is_503_while_redis_is_down_and_200_again_when_it_is_back(redis_server, servers):  # noqa: F811
    server = servers("--port", "0", "--api-key", KEY, "--redis", redis_server.url, "--redis-timeout", "1")
    eventually(lambda: health(server)[0] == 200, what="health 200 once redis is reached")
    assert health(server)[1]["broker"] == "redis"
    assert metric(server.metrics(), "trioconn_broker_connected") == 1
    assert server.call("POST", "/api/publish", {"topic": "t", "data": 1}, token=KEY) == (
        200,
        {"topic": "t", "offset": 1},
    )

    redis_server.kill()
    status, body = eventually(lambda: (r := health(server))[0] == 503 and r, what="health 503 without redis")
    assert body["status"] == "unavailable" and "broker unreachable" in body["reason"], body
    assert metric(server.metrics(), "trioconn_broker_connected") == 0
    status, error = server.call("POST", "/api/publish", {"topic": "t", "data": 2}, token=KEY)
    assert (status, error["error"]) == (503, "broker-unavailable"), error

    redis_server.start()  # same port, empty: the topic's history is gone with the process
    eventually(lambda: health(server)[0] == 200, seconds=20, what="health 200 once redis is back")
    assert metric(server.metrics(), "trioconn_broker_connected") == 1
    status, answer = server.call("POST", "/api/publish", {"topic": "t", "data": 3}, token=KEY)
    assert status == 200 and answer["topic"] == "t"


async def test_sigterm_closes_with_1001_and_clients_resume_on_another_server_without_gap(
    redis_server,  # noqa: F811
    servers,
):
    first = servers("--port", "0", "--api-key", KEY, "--redis", redis_server.url)
    second = servers("--port", "0", "--api-key", KEY, "--redis", redis_server.url)
    for server in (first, second):
        await trio.to_thread.run_sync(lambda s=server: eventually(lambda: health(s)[0] == 200))

    # What a load balancer does: new connections go to the server it currently points at.
    target = {"port": first.port}

    async def balanced(nursery: trio.Nursery, url: str, headers: list) -> object:
        return await trioconn.tcp_transport(nursery, re.sub(r":\d+/", f":{target['port']}/", url), headers)

    async def publish(server: Serve, data: int) -> int:
        status, answer = await trio.to_thread.run_sync(
            lambda: server.call("POST", "/api/publish", {"topic": "moving", "data": data}, token=KEY)
        )
        assert status == 200, answer
        return answer["offset"]

    changes: list[trioconn.StateChange] = []
    items: list[trioconn.SubscriptionItem] = []
    backoff = trioconn.Backoff(base=0.05, cap=0.2)
    with trio.fail_after(40):
        async with (
            trioconn.connect(first.ws, transport=balanced, backoff=backoff) as client,
            trio.open_nursery() as nursery,
        ):

            async def watch() -> None:
                async for change in client.state_changes():
                    changes.append(change)

            nursery.start_soon(watch)
            async with client.subscribe("moving") as sub:
                await trio.to_thread.run_sync(
                    lambda: eventually(lambda: metric(first.metrics(), "trioconn_subscriptions") == 1)
                )
                assert [await publish(first, n) for n in range(1, 6)] == [1, 2, 3, 4, 5]
                for _ in range(5):
                    items.append(await sub.__anext__())
                target["port"] = second.port
                first.signal(signal.SIGTERM)
                # written through the second server while the client moves over
                assert [await publish(second, n) for n in range(6, 11)] == [6, 7, 8, 9, 10]
                for _ in range(5):
                    items.append(await sub.__anext__())
                moved = await trio.to_thread.run_sync(second.metrics)
            nursery.cancel_scope.cancel()
    assert all(isinstance(item, trioconn.EventItem) for item in items), items
    assert [(item.offset, item.data) for item in items] == [(n, n) for n in range(1, 11)]
    assert any(change.code == 1001 for change in changes), changes
    assert await trio.to_thread.run_sync(first.wait, 20) == 0
    assert metric(moved, "trioconn_connections") == 1
