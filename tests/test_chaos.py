"""Chaos: many clients, a publisher, and a seeded random schedule of stalls, cuts and restarts.

Runs in virtual time over in-memory links (one per client, so faults hit clients one at a
time, and "restarts" drop every link at once). At the end every client must have every stream
event exactly once and in order, every state topic at its final value, and the hub must hold
nothing for clients that are gone. The seed is in the failure message; replay a run with
``TRIOCONN_CHAOS_SEED=<seed>``. ``TRIOCONN_CHAOS_RUNS=N`` adds N more random seeds.
"""

import os
import random

import pytest
import trio
import trio.testing

from trioconn import Backoff, EventItem, Hub, ResetItem, SnapshotItem, connect
from trioconn.testing import open_memory_link

SEEDS = [1, 2, 3]
if "TRIOCONN_CHAOS_SEED" in os.environ:
    SEEDS = [int(os.environ["TRIOCONN_CHAOS_SEED"])]
SEEDS += [random.randrange(10**9) for _ in range(int(os.environ.get("TRIOCONN_CHAOS_RUNS", "0")))]

CLIENTS = 12
EVENTS = 200
URL = "ws://chaos.invalid/"


@pytest.mark.parametrize("seed", SEEDS)
async def test_chaos_every_event_once_in_order_and_nothing_left_behind(autojump_clock, seed):
    try:
        await run_chaos(seed)
    except BaseException as exc:
        raise AssertionError(f"chaos run failed; replay with TRIOCONN_CHAOS_SEED={seed}") from exc


async def run_chaos(seed):
    rng = random.Random(seed)
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3, history_size=EVENTS + 10, outbox_size=50)
    stream_seen: dict[int, list[int]] = {}
    state_seen: dict[int, list[int]] = {}
    resets: list[ResetItem] = []
    faults: list[str] = []

    async with trio.open_nursery() as links_nursery:
        links = []
        for _ in range(CLIENTS):
            links.append(await links_nursery.start(open_link, hub))

        async def client(index):
            backoff = Backoff(base=0.2, factor=2, cap=4)
            jitter = random.Random(seed * 1000 + index)
            # last=EVENTS: a client that connects late still starts from the first event
            async with (
                connect(URL, transport=links[index].transport, backoff=backoff, rng=jitter) as conn,
                conn.subscribe("logs", last=EVENTS) as logs,
                conn.subscribe("job") as job,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(consume, logs, stream_seen.setdefault(index, []))
                nursery.start_soon(consume, job, state_seen.setdefault(index, []))

        async def consume(sub, seen):
            async for item in sub:
                if isinstance(item, ResetItem):
                    resets.append(item)
                elif isinstance(item, EventItem):
                    seen.append(item.data)
                elif isinstance(item, SnapshotItem) and item.value is not None:
                    seen.append(item.value)

        async def publisher():
            for i in range(1, EVENTS + 1):
                await hub.publish("logs", i)
                if i % 2 == 0:
                    await hub.set_state("job", i // 2)
                await trio.sleep(rng.uniform(0, 0.2))
            await hub.end("logs")
            await hub.end("job")

        async def stall(link, seconds):
            link.stall()
            await trio.sleep(seconds)
            link.pass_through()

        async def chaos(done):
            async with trio.open_nursery() as stalls:
                while True:
                    with trio.move_on_after(rng.uniform(0.2, 1.5)):
                        await done.wait()
                    if done.is_set():
                        return
                    roll = rng.random()
                    index = rng.randrange(CLIENTS)
                    if roll < 0.4:
                        seconds = rng.uniform(0.5, 6)  # beyond 3 s the heartbeat gives up
                        faults.append(f"stall {index} {seconds:.1f}s")
                        stalls.start_soon(stall, links[index], seconds)
                    elif roll < 0.8:
                        faults.append(f"cut {index}")
                        links[index].cut(reset=rng.random() < 0.5)
                    else:
                        seconds = rng.uniform(0.1, 5)
                        faults.append(f"restart {seconds:.1f}s")
                        for link in links:
                            link.drop_for(seconds)

        async with trio.open_nursery() as nursery:
            for index in range(CLIENTS):
                nursery.start_soon(client, index)
            done = trio.Event()
            nursery.start_soon(chaos, done)
            await publisher()
            done.set()  # faults stop with the publisher; every client must now catch up
            with trio.fail_after(60):
                for link in links:
                    await link.wait_connections(0)
        # all clients finished: their topics ended and they closed with 1000
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)  # past every close timeout, in virtual time
        leftover = [link.connections for link in links]
        links_nursery.cancel_scope.cancel()

    assert len(faults) >= 10, faults
    assert resets == [], resets  # history covers every outage: resume never loses its place
    for index in range(CLIENTS):
        assert stream_seen[index] == list(range(1, EVENTS + 1)), (index, faults)
        assert state_seen[index][-1] == EVENTS // 2, (index, faults)
        assert state_seen[index] == sorted(state_seen[index]), (index, faults)  # never back in time
    stats = hub.statistics()
    assert stats.connections == 0 and stats.sessions == ()
    assert all(topic.subscribers == 0 for topic in stats.topics.values())
    assert leftover == [0] * CLIENTS


async def open_link(hub, task_status):
    async with open_memory_link(hub.serve_stream) as link:
        task_status.started(link)
        await trio.sleep_forever()
