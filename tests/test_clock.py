"""The heartbeat clock: pings due in one slice of time go out together, from one timer."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from trioconn import Hub
from trioconn._server.clock import HeartbeatClock

from .conftest import memory_client


class Beat:
    """Records when the clock called it; asks again ``every`` seconds, ``times`` times."""

    def __init__(self, first: float, every: float = 10.0, times: int = 1) -> None:
        self.due = first
        self.every = every
        self.left = times
        self.calls: list[float] = []

    def ping_due(self) -> float | None:
        self.calls.append(trio.current_time())
        self.left -= 1
        if not self.left:
            return None
        self.due += self.every
        return self.due


async def run_clock(clock: HeartbeatClock, beats: list[Beat], until: float) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        for beat in beats:
            clock.schedule(beat.due, beat)
        await trio.sleep_until(until)
        nursery.cancel_scope.cancel()


async def test_a_ping_goes_out_at_the_end_of_its_bucket_never_before_it_is_due(autojump_clock):
    clock = HeartbeatClock(0.5)
    beats = [Beat(due) for due in (0.1, 0.5, 0.51, 0.99, 1.0, 3.2, 7.77)]
    await run_clock(clock, beats, until=20)
    for beat in beats:
        (at,) = beat.calls
        assert at == math.ceil(beat.due / 0.5) * 0.5
        assert beat.due <= at < beat.due + 0.5
    assert len(clock) == 0  # each said it was done


async def test_a_whole_bucket_is_pinged_from_one_timer(autojump_clock):
    clock = HeartbeatClock(1.0)
    beats = [Beat(10 + (i + 1) / 250) for i in range(200)]  # all within (10, 11]
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        for beat in beats:
            clock.schedule(beat.due, beat)
        await trio.testing.wait_all_tasks_blocked()
        # 200 pings due, one timer: the ticker's, due at the bucket's end
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == pytest.approx(11)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert {at for beat in beats for at in beat.calls} == {11.0}


async def test_each_ping_is_scheduled_from_the_last_due_time_without_drift(autojump_clock):
    clock = HeartbeatClock(0.25)
    beat = Beat(1.1, every=16.0, times=5)
    await run_clock(clock, [beat], until=100)
    assert beat.calls == [math.ceil((1.1 + 16 * n) / 0.25) * 0.25 for n in range(5)]


async def test_an_earlier_bucket_moves_the_tickers_timer_forward(autojump_clock):
    clock = HeartbeatClock(1.0)
    late, early = Beat(100), Beat(2.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        clock.schedule(late.due, late)
        await trio.testing.wait_all_tasks_blocked()
        clock.schedule(early.due, early)
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    assert (early.calls, late.calls) == ([3.0], [100.0])


async def test_an_unscheduled_beat_is_neither_called_nor_held(autojump_clock):
    clock = HeartbeatClock(1.0)
    gone, kept = Beat(5), Beat(5)
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        clock.schedule(gone.due, gone)
        clock.schedule(kept.due, kept)
        clock.unschedule(gone)  # e.g. its connection ended
        assert len(clock) == 1
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert (gone.calls, kept.calls) == ([], [5.0])


async def test_a_failing_beat_is_logged_and_the_others_still_beat(autojump_clock, caplog):
    class Broken(Beat):
        def ping_due(self) -> float | None:
            raise RuntimeError("bug")

    clock = HeartbeatClock(1.0)
    good = Beat(3, every=10, times=3)
    await run_clock(clock, [Broken(3), good], until=40)
    assert good.calls == [3.0, 13.0, 23.0]
    assert [r.message for r in caplog.records if r.levelno == logging.ERROR] == ["a heartbeat failed"]


async def test_the_last_ticker_stopping_is_announced(autojump_clock):
    clock = HeartbeatClock(1.0)
    assert not clock.running
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(clock.run)
            stopped = clock.stopped
            assert clock.running and stopped is not None and not stopped.is_set()
            scope.cancel()
    assert not clock.running and stopped.is_set()


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
    # on schedule: the n-th ping is due at opened + n * interval, never drifting later
    for n, at in enumerate(pings, start=1):
        assert opened + n * interval <= at <= opened + n * interval + interval / 64, pings


async def test_every_connection_is_pinged_by_the_hubs_clock_not_a_timer_of_its_own(autojump_clock):
    hub = Hub(heartbeat_interval=15.0)
    async with hub.running(), trio.open_nursery() as nursery:
        for _ in range(20):
            await nursery.start(_open_client, hub)
            await trio.sleep(0.1)  # opened at different times, so due in different buckets
        await trio.testing.wait_all_tasks_blocked()
        assert len(hub._clock) == 20
        assert 1 < len(hub._clock._due) < 20  # 0.1 s apart, buckets of 15/64 s: two or three each
        # the only timers: the ticker's, and the dead-link deadlines (45 s away)
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline < 15
        nursery.cancel_scope.cancel()
    assert len(hub._clock) == 0  # the connections ended: the clock holds none of them


async def test_without_the_clock_a_connection_pings_by_itself(autojump_clock):
    hub = Hub(heartbeat_interval=10.0)  # serve_stream outside running(): no ticker
    async with memory_client(hub) as client:
        client.answer_pings = False
        opened = trio.current_time()
        await client.recv_type("welcome")
        for n in range(1, 4):
            ping = await client.recv_type("ping")
            assert trio.current_time() == opened + 10 * n
            await client.send({"type": "pong", "id": ping["id"]})
        assert len(hub._clock) == 0


async def test_pings_keep_their_schedule_as_the_clock_starts_and_stops(autojump_clock):
    hub = Hub(heartbeat_interval=10.0)

    async def run_for_a_while() -> None:
        await trio.sleep(5)
        async with hub.running():  # the ticker runs from 5 s to 33 s
            await trio.sleep(28)

    async with trio.open_nursery() as nursery, memory_client(hub) as client:
        client.answer_pings = False
        opened = trio.current_time()
        nursery.start_soon(run_for_a_while)
        await client.recv_type("welcome")
        for n in range(1, 7):  # by itself, then from the clock, then by itself again
            ping = await client.recv_type("ping")
            assert opened + 10 * n <= trio.current_time() <= opened + 10 * n + 10 / 64
            await client.send({"type": "pong", "id": ping["id"]})


async def _open_client(hub: Hub, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
    async with memory_client(hub) as client:
        await client.recv_type("welcome")
        task_status.started(client)
        await trio.sleep_forever()
