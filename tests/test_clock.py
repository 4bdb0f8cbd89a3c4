"""The heartbeat clock: sleeps end at bucket boundaries, one timer wakes a whole bucket."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from trioconn import Hub
from trioconn._server.clock import HeartbeatClock

from .conftest import memory_client


async def all_woke(woke: object, count: int) -> None:
    """Wait until ``count`` sleepers have recorded their wake-up (every sleep ends by itself)."""
    while len(woke) < count:  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1)


async def test_a_sleep_ends_at_the_end_of_its_bucket_never_before_its_deadline(autojump_clock):
    clock = HeartbeatClock(0.5)
    woke: dict[float, float] = {}

    async def sleeper(deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke[deadline] = trio.current_time()

    deadlines = [0.1, 0.5, 0.51, 0.99, 1.0, 3.2, 7.77]
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        for deadline in deadlines:
            nursery.start_soon(sleeper, deadline)
        await all_woke(woke, len(deadlines))
        nursery.cancel_scope.cancel()
    for deadline in deadlines:
        assert woke[deadline] == math.ceil(deadline / 0.5) * 0.5
        assert deadline <= woke[deadline] < deadline + 0.5


async def test_a_whole_bucket_is_woken_by_one_timer(autojump_clock):
    clock = HeartbeatClock(1.0)
    woke: list[float] = []
    deadlines_registered: list[float] = []

    async def sleeper(deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        for i in range(200):
            nursery.start_soon(sleeper, 10 + (i + 1) / 250)  # all within (10, 11]
        await trio.testing.wait_all_tasks_blocked()
        # 200 sleepers, one timer: the ticker's, and it is due at the bucket's end
        deadlines_registered.append(trio.lowlevel.current_statistics().seconds_to_next_deadline)
        await all_woke(woke, 200)
        nursery.cancel_scope.cancel()
    assert deadlines_registered == [pytest.approx(11)]  # started at virtual time 0
    assert set(woke) == {11.0}


async def test_an_earlier_bucket_moves_the_tickers_timer_forward(autojump_clock):
    clock = HeartbeatClock(1.0)
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        order.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        nursery.start_soon(sleeper, "late", 100)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(sleeper, "early", 2.5)
        await all_woke(order, 2)
        nursery.cancel_scope.cancel()
    assert order == [("early", 3.0), ("late", 100.0)]


async def test_without_a_ticker_a_sleep_is_an_ordinary_timed_sleep(autojump_clock):
    clock = HeartbeatClock(10.0)
    await clock.sleep_until(3.25)
    assert trio.current_time() == 3.25


async def test_when_the_ticker_stops_sleepers_finish_their_own_sleep_on_time(autojump_clock):
    clock = HeartbeatClock(10.0)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(25)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        with trio.CancelScope() as ticker_scope:
            async with trio.open_nursery() as ticking:
                await ticking.start(clock.run)
                await trio.sleep(5)
                ticker_scope.cancel()  # e.g. the last running() block ended
    # let go early, it slept the rest by itself: at its deadline, not at its bucket's end (30)
    assert woke == [25.0]


async def test_a_hubs_pings_go_out_within_a_64th_of_the_interval(autojump_clock):
    interval = 16.0
    hub = Hub(heartbeat_interval=interval, heartbeat_timeout=3 * interval)
    pings: list[float] = []
    async with hub.running(), memory_client(hub) as client:
        client.answer_pings = False
        opened = trio.current_time()
        await client.recv_type("welcome")
        for _ in range(5):
            ping = await client.recv_type("ping")
            pings.append(trio.current_time())
            await client.send({"type": "pong", "id": ping["id"]})
    gaps = [b - a for a, b in zip([opened, *pings], pings, strict=False)]
    for gap in gaps:
        assert interval - interval / 64 <= gap <= interval + interval / 64, gaps
    # on schedule: the n-th ping is due at opened + n * interval, never drifting later
    for n, at in enumerate(pings, start=1):
        assert opened + n * interval <= at <= opened + n * interval + interval / 64, pings


async def test_every_connections_heartbeat_waits_on_the_hubs_clock_not_a_timer_of_its_own(autojump_clock):
    hub = Hub(heartbeat_interval=15.0)
    async with hub.running(), trio.open_nursery() as nursery:
        clients = []
        for _ in range(20):
            client = await nursery.start(_open_client, hub)
            clients.append(client)
            await trio.sleep(0.1)  # opened at different times, so due in different buckets
        await trio.testing.wait_all_tasks_blocked()
        buckets = list(hub._clock._buckets.values())
        assert sum(event.statistics().tasks_waiting for event in buckets) == 20
        assert 1 < len(buckets) < 20  # 0.1 s apart, buckets of 15/64 s: shared by two or three
        nursery.cancel_scope.cancel()


async def _open_client(hub: Hub, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
    async with memory_client(hub) as client:
        await client.recv_type("welcome")
        task_status.started(client)
        await trio.sleep_forever()
