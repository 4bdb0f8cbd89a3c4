"""``hub.subscribe``: following a topic inside the hub's process, with a client's semantics.

In memory, in virtual time where time matters; both anyio backends where the hub core could
behave differently; the Redis broker in ``test_app_redis.py``.
"""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing

import trioconn
from trioconn import EventItem, Hub, HubStopped, ResetItem, SnapshotItem

from .conftest import memory_client


async def items(sub: trioconn.HubSubscription, count: int) -> list:
    got = []
    with trio.fail_after(5):
        async for item in sub:
            got.append(item)
            if len(got) == count:
                break
    return got


async def test_a_state_topic_gives_its_value_first_then_every_write():
    hub = Hub()
    hub.set_state_nowait("job", {"pct": 10})
    async with hub.subscribe("job") as sub:
        ready = await sub.ready()
        assert (ready.topic, ready.offset, ready.kind) == ("job", 1, "state")
        hub.set_state_nowait("job", {"pct": 20})
        first, second = await items(sub, 2)
    assert first == SnapshotItem("job", ready.epoch, 1, {"pct": 10})
    assert first.data == first.value == {"pct": 10}
    assert second == EventItem("job", ready.epoch, 2, {"pct": 20})


async def test_a_topic_nobody_wrote_is_ready_with_kind_none_and_waits():
    hub = Hub()
    async with hub.subscribe("empty") as sub:
        ready = await sub.ready()
        assert (ready.offset, ready.kind) == (0, None)
        assert hub.statistics().topics["empty"].subscribers == 1
        assert hub.presence("empty") == () and hub.statistics().topics["empty"].members == 0  # not a client
        with trio.move_on_after(0.01) as scope:
            await sub.__anext__()
        assert scope.cancelled_caught  # nothing yet
        hub.publish_nowait("empty", "first")
        (item,) = await items(sub, 1)
        assert item == EventItem("empty", ready.epoch, 1, "first")
    assert hub.statistics().topics.get("empty") is None or hub.statistics().topics["empty"].subscribers == 0


async def test_last_replays_a_streams_recent_events_before_the_live_ones():
    hub = Hub()
    for i in range(1, 11):
        hub.publish_nowait("log", i)
    async with hub.subscribe("log", last=3) as sub:
        assert (await sub.ready()).offset == 10
        hub.publish_nowait("log", 11)
        got = await items(sub, 4)
    assert [(item.offset, item.data) for item in got] == [(8, 8), (9, 9), (10, 10), (11, 11)]


async def test_iteration_ends_at_the_topics_end_after_the_events_before_it():
    hub = Hub()
    async with hub.subscribe("job") as sub:
        hub.publish_nowait("job", "a")
        hub.publish_nowait("job", "b")
        hub.end_nowait("job")
        with trio.fail_after(5):
            got = [item async for item in sub]
        assert [item.data for item in got] == ["a", "b"]
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
    async with hub.subscribe("job", last=5) as late:  # an ended topic: replay, then the end
        with trio.fail_after(5):
            assert [item.data async for item in late] == ["a", "b"]


async def test_leaving_the_block_unsubscribes():
    hub = Hub()
    hub.publish_nowait("t", 1)
    async with hub.subscribe("t"):
        assert hub.statistics().topics["t"].subscribers == 1
    assert hub.statistics().topics["t"].subscribers == 0


async def test_a_follower_that_falls_behind_catches_up_from_history_without_a_gap():
    hub = Hub(history_size=100)
    async with hub.subscribe("log", buffer_size=4) as sub:
        epoch = (await sub.ready()).epoch
        for i in range(1, 31):  # no checkpoint: the follower cannot read meanwhile
            hub.publish_nowait("log", i)
        got = await items(sub, 30)
        assert [(item.offset, item.data) for item in got] == [(i, i) for i in range(1, 31)]
        assert all(isinstance(item, EventItem) and item.epoch == epoch for item in got)
        hub.publish_nowait("log", 31)  # and it is live again
        assert [item.offset for item in await items(sub, 1)] == [31]
    assert hub.statistics().disconnects == {}


async def test_a_follower_behind_the_history_gets_a_reset_never_a_silent_gap():
    hub = Hub(history_size=5)
    async with hub.subscribe("log", buffer_size=2) as sub:
        epoch = (await sub.ready()).epoch
        for i in range(1, 21):
            hub.publish_nowait("log", i)
        got = await items(sub, 3)
        hub.publish_nowait("log", 21)
        got += await items(sub, 1)
    assert [item.offset for item in got[:2]] == [1, 2]
    reset = got[2]
    assert isinstance(reset, ResetItem)
    assert (reset.previous_epoch, reset.previous_offset, reset.epoch, reset.offset) == (epoch, 2, epoch, 20)
    assert got[3] == EventItem("log", epoch, 21, 21)


async def test_a_state_follower_that_falls_behind_gets_the_latest_value():
    hub = Hub()
    async with hub.subscribe("job", buffer_size=2) as sub:
        for pct in range(1, 11):
            hub.set_state_nowait("job", pct)
        got = await items(sub, 3)
    assert [(type(item).__name__, item.offset, item.data) for item in got] == [
        ("EventItem", 1, 1),
        ("EventItem", 2, 2),
        ("SnapshotItem", 10, 10),
    ]


async def test_the_end_after_an_overflow_comes_after_the_missed_events():
    hub = Hub()
    async with hub.subscribe("job", buffer_size=2) as sub:
        for i in range(1, 6):
            hub.publish_nowait("job", i)
        hub.end_nowait("job")
        with trio.fail_after(5):
            assert [item.data async for item in sub] == [1, 2, 3, 4, 5]


async def test_publishers_never_wait_and_no_client_is_affected_by_a_stuck_follower(autojump_clock):
    hub = Hub()
    async with memory_client(hub) as client, hub.subscribe("log", buffer_size=1):
        await client.recv_type("welcome")
        await client.send({"type": "subscribe", "topic": "log"})
        await client.recv_type("subscribed")
        for i in range(100):  # nobody reads the follower
            await hub.publish("log", i)
        frames = [await client.recv() for _ in range(100)]
        assert [f["data"] for f in frames] == list(range(100))


async def test_closing_the_hub_ends_iteration():
    hub = Hub()
    async with hub.subscribe("t") as sub, trio.open_nursery() as nursery:
        nursery.start_soon(hub.aclose)
        with trio.fail_after(5):
            assert [item async for item in sub] == []
    with pytest.raises(HubStopped):
        async with hub.subscribe("t"):
            pass


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"topic": 5}, TypeError, "topic must be a str"),
        ({"topic": ""}, ValueError, "topic must not be empty"),
        ({"topic": "t", "last": -1}, ValueError, "last must be >= 0"),
        ({"topic": "t", "last": 1.5}, TypeError, "last must be an int"),
        ({"topic": "t", "buffer_size": 0}, ValueError, "buffer_size must be >= 1"),
    ],
)
async def test_invalid_arguments_are_named(kwargs, error, words):
    with pytest.raises(error, match=words):
        async with Hub().subscribe(**kwargs):
            pass


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_follower_works_on_both_backends(backend):
    async def body() -> None:
        hub = Hub()
        hub.set_state_nowait("job", 0)
        got: list = []
        async with hub.subscribe("job", buffer_size=2) as sub:
            ready = await sub.ready()

            async def publisher() -> None:
                for pct in range(1, 6):
                    await hub.set_state("job", pct)
                    await anyio.sleep(0.001)
                hub.end_nowait("job")

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publisher)
                with anyio.fail_after(5):
                    got = [item async for item in sub]
        assert got[0] == SnapshotItem("job", ready.epoch, 1, 0)
        assert [item.data for item in got][-1] == 5
        offsets = [item.offset for item in got]
        assert offsets == sorted(set(offsets))  # in order, never twice

    anyio.run(body, backend=backend)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_follower_catches_up_after_falling_behind_on_both_backends(backend):
    async def body() -> None:
        hub = Hub()
        async with hub.subscribe("log", buffer_size=3) as sub:
            for i in range(1, 21):
                hub.publish_nowait("log", i)
            got = []
            with anyio.fail_after(5):
                async for item in sub:
                    got.append(item.data)
                    if len(got) == 20:
                        break
        assert got == list(range(1, 21))

    anyio.run(body, backend=backend)
