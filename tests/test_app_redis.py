"""In-process followers and publications with hubs sharing topics through a real redis-server.

Two hubs in this process, each with its own ``RedisBroker`` (as two processes would have), and
clients over loopback. See ``test_redis.py`` for the redis-server fixture.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioconn import EventItem, ResetItem, SnapshotItem

from .test_redis import pytestmark as redis_marks
from .test_redis import redis_server, served_hub, subscribe, ws_client  # noqa: F401 - a fixture

pytestmark = redis_marks


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


async def test_a_follower_on_one_hub_sees_what_another_hub_writes_in_order(redis_server):  # noqa: F811
    async with served_hub(redis_server.url) as (hub_a, _), served_hub(redis_server.url) as (hub_b, _):
        await hub_a.set_state("job", {"pct": 0})
        for i in range(1, 6):
            await hub_a.publish("log", i)
        async with hub_b.subscribe("job") as job, hub_b.subscribe("log", last=2) as log:
            ready = await job.ready()
            assert (ready.offset, ready.kind) == (1, "state")
            assert (await log.ready()).offset == 5
            await hub_a.set_state("job", {"pct": 50})
            await hub_a.end("job")
            await hub_a.publish("log", 6)
            with trio.fail_after(10):
                job_items = [item async for item in job]
                log_items = [await log.__anext__() for _ in range(3)]
        assert job_items == [
            SnapshotItem("job", ready.epoch, 1, {"pct": 0}),
            EventItem("job", ready.epoch, 2, {"pct": 50}),
        ]
        assert [(item.offset, item.data) for item in log_items] == [(4, 4), (5, 5), (6, 6)]


async def test_a_follower_that_falls_behind_catches_up_through_redis(redis_server):  # noqa: F811
    async with (
        served_hub(redis_server.url) as (hub_a, _),
        served_hub(redis_server.url, history_size=10) as (hub_b, _),
        hub_b.subscribe("log", buffer_size=2) as sub,
    ):
        for i in range(1, 9):  # within the history: no gap
            await hub_a.publish("log", i)
        with trio.fail_after(10):
            got = [await sub.__anext__() for _ in range(8)]
        assert [(item.offset, item.data) for item in got] == [(i, i) for i in range(1, 9)]
        for i in range(9, 40):  # beyond the history, while nobody reads: a reset, then live
            await hub_a.publish("log", i)
        with trio.fail_after(10):
            while not isinstance(item := await sub.__anext__(), ResetItem):
                assert isinstance(item, EventItem)
            await hub_a.publish("log", 40)
            while (item := await sub.__anext__()).offset < 40:
                pass
        assert isinstance(item, EventItem) and item.data == 40


async def test_a_publication_reaches_the_reader_of_the_process_whose_client_sent_it_once(redis_server):  # noqa: F811
    async with (
        served_hub(redis_server.url, authorize=allow_all) as (hub_a, port_a),
        served_hub(redis_server.url, authorize=allow_all) as (hub_b, port_b),
        hub_a.publications("jobs/*") as on_a,
        hub_b.publications("jobs/*") as on_b,
        ws_client(port_a) as client_a,
        ws_client(port_b) as client_b,
    ):
        await subscribe(client_b, "jobs/1")  # hub B follows the topic: it sees the event
        await client_a.send({"type": "publish", "topic": "jobs/1", "data": "from a", "ref": 1})
        assert (await client_a.recv())["offset"] == 1
        with trio.fail_after(10):
            assert (await client_b.recv())["data"] == "from a"
            publication = await on_a.__anext__()
            assert (publication.data, publication.offset) == ("from a", 1)
            await client_b.send({"type": "publish", "topic": "jobs/1", "data": "from b", "ref": 2})
            first_on_b = await on_b.__anext__()
        assert (first_on_b.data, first_on_b.offset) == ("from b", 2)  # B never got A's
        assert not on_a._queue  # nor A B's


async def test_following_needs_the_broker_running(redis_server):  # noqa: F811
    from trioconn import BrokerUnavailable, Hub
    from trioconn.redis import RedisBroker

    hub = Hub(broker=RedisBroker(redis_server.url))
    with pytest.raises(BrokerUnavailable, match="not running"):
        async with hub.subscribe("t"):
            pass
    async with hub.running(), hub.subscribe("t") as sub:
        assert (await sub.ready()).offset == 0
