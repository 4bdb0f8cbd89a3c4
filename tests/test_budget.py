"""One memory budget per connection: whatever is queued for a client, it cannot grow the hub.

Virtual time and lockstep streams (no buffer between the hub and the client: the hub's send
waits until the client reads), with a client whose reading speed the test sets. The same attacks
against a hub in its own process, measured with RSS, are in ``test_abuse_memory.py``.
"""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import trio
import trio.testing
import trio_websocket

from trioconn import Hub
from trioconn._server.outbox import Outbox

from .conftest import Throttled

BUDGET = 256 * 1024


@pytest.fixture
def peak(monkeypatch):
    """The largest number of bytes any outbox held, measured after every put."""
    seen = {"bytes": 0}
    for name in ("put", "put_state", "put_unbounded", "put_control"):
        original = getattr(Outbox, name)

        def wrapper(self, *args, _original=original):
            result = _original(self, *args)
            seen["bytes"] = max(seen["bytes"], self.bytes)
            return result

        monkeypatch.setattr(Outbox, name, wrapper)
    return seen


async def attacker(nursery, hub, *, discard=False):
    """A client over a lockstep stream; returns its WebSocket and its throttle.

    With ``discard``, a task takes every message off the WebSocket (the throttle alone sets
    how fast the client reads).
    """
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    nursery.start_soon(hub.serve_stream, server_stream)
    throttled = Throttled(client_stream)
    ws = await trio_websocket.wrap_client_stream(nursery, throttled, "localhost", "/")
    assert json.loads(await ws.get_message())["type"] == "welcome"
    if discard:
        nursery.start_soon(_discard, ws)
    return ws, throttled


async def _discard(ws):
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        while True:
            await ws.get_message()


def stream_topic(hub, name="logs", events=2000, size=230):
    for i in range(events):
        hub.publish_nowait(name, f"{i:06d} " + "x" * (size - 60))


async def flood(ws, frames):
    """Send ``frames`` in turn until the hub closes the connection; count what was sent."""
    sent = 0
    try:
        for text in frames:
            await ws.send_message(text)
            sent += 1
    except trio_websocket.ConnectionClosed:
        pass
    return sent


async def subscribe(ws, topics, last=500):
    for topic in topics:
        await ws.send_message(json.dumps({"type": "subscribe", "topic": topic, "last": last}))


def resubscribe(topic, last, times):
    for _ in range(times):
        yield json.dumps({"type": "subscribe", "topic": topic, "last": last})
        yield json.dumps({"type": "unsubscribe", "topic": topic})


async def run_attack(hub, frames, rate):
    """Send ``frames`` from a client reading at ``rate``; returns (seconds until closed, sent)."""
    async with trio.open_nursery() as nursery:
        ws, throttled = await attacker(nursery, hub, discard=True)
        throttled.rate = rate
        start = trio.current_time()
        sent = await flood(ws, frames)  # returns when the hub has closed the connection
        elapsed = trio.current_time() - start
        await trio.testing.wait_all_tasks_blocked()
        assert not hub.sessions()
        nursery.cancel_scope.cancel()
    return elapsed, sent


# -- attacks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, 40_000, 400_000], ids=["never-reads", "40KB/s", "400KB/s"])
async def test_asking_for_replays_faster_than_reading_is_bounded_and_closed(autojump_clock, peak, rate):
    hub = Hub(outbox_bytes=BUDGET, send_timeout=10)
    stream_topic(hub)  # 2000 events of 230 B: each `last: 2000` asks for ~460 KB
    replay = sum(len(encoded) for _, encoded in hub._registry.get("logs").history) + 200
    elapsed, sent = await run_attack(hub, resubscribe("logs", 2000, 10_000), rate)
    assert hub.statistics().disconnects == {"slow-consumer": 1}
    # what is queued never exceeds half the budget (requests wait) plus the one answer that
    # crossed it: before, every request queued its answer, 399 MB in 10 s
    assert peak["bytes"] <= BUDGET // 2 + replay
    # closed once it has been paused for send_timeout in all, however steadily it reads
    print(f"closed after {elapsed:.1f} s, {sent} requests, peak {peak['bytes']} B")
    assert elapsed <= 10 + ((BUDGET // 2 + replay) / rate if rate else 0) + 1
    assert sent < 100


async def test_large_state_snapshots_asked_again_and_again_are_bounded(autojump_clock, peak):
    hub = Hub(outbox_bytes=BUDGET, send_timeout=5)
    hub.set_state_nowait("big", "v" * 60_000)
    frames = (
        json.dumps({"type": m, "topic": "big"}) for _ in range(100_000) for m in ("subscribe", "unsubscribe")
    )
    elapsed, sent = await run_attack(hub, frames, 20_000)
    assert hub.statistics().disconnects == {"slow-consumer": 1}
    assert peak["bytes"] <= BUDGET // 2 + 61_000
    assert elapsed <= 5 + (BUDGET // 2 + 61_000) / 20_000 + 1
    assert sent < 20


async def test_garbage_from_a_slow_reader_is_answered_within_the_budget_and_closed(autojump_clock, peak):
    hub = Hub(outbox_bytes=BUDGET, send_timeout=5)
    elapsed, sent = await run_attack(hub, ("{oops" for _ in range(1_000_000)), 2_000)
    assert hub.statistics().disconnects == {"slow-consumer": 1}
    assert peak["bytes"] <= BUDGET // 2 + 500
    assert elapsed <= 5 + (BUDGET // 2) / 2_000 + 1
    assert sent < 5000  # answered at the rate it reads, not at the rate it writes


# -- no false alarms -----------------------------------------------------------------------------


async def test_a_slow_client_resuming_large_replays_while_events_flow_is_served_in_full(autojump_clock, peak):
    hub = Hub(outbox_bytes=BUDGET, send_timeout=10)
    topics = [f"logs/{i}" for i in range(4)]
    for topic in topics:
        stream_topic(hub, topic, events=500)  # 4 x ~115 KB of replay: the budget is exceeded once
    async with trio.open_nursery() as nursery:
        ws, throttled = await attacker(nursery, hub)
        throttled.rate = 100_000

        async def publish_live():
            for i in range(40):
                await hub.publish("logs/0", f"live {i}")
                await trio.sleep(0.25)

        # logs/0 is subscribed before anything is published live (the hub has read the frame
        # when the send returns). The rest from a task of its own, as over TCP, where the kernel
        # takes a client's small frames while it reads: on a lockstep stream a client blocked
        # in a write while the hub pauses reading for room could not read either.
        await subscribe(ws, topics[:1])
        nursery.start_soon(subscribe, ws, topics[1:])
        nursery.start_soon(publish_live)
        seen: dict[str, list[int]] = {topic: [] for topic in topics}
        while len(seen["logs/0"]) < 540:
            message = json.loads(await ws.get_message())
            for frame in message["frames"] if message["type"] == "batch" else [message]:
                if frame["type"] == "event":
                    seen[frame["topic"]].append(frame["offset"])
                elif frame["type"] == "ping":
                    await ws.send_message(json.dumps({"type": "pong", "id": frame["id"]}))
        assert seen["logs/0"] == list(range(1, 541))
        assert all(seen[t] == list(range(1, 501)) for t in topics[1:])
        assert hub.statistics().disconnects == {}
        assert hub.statistics().sessions[0].queued_bytes == 0
        nursery.cancel_scope.cancel()


async def test_events_that_do_not_fit_the_budget_close_with_4001(autojump_clock):
    hub = Hub(outbox_bytes=BUDGET, outbox_size=10_000)
    async with trio.open_nursery() as nursery:
        ws, _ = await attacker(nursery, hub)
        await ws.send_message(json.dumps({"type": "subscribe", "topic": "t"}))
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(BUDGET // 10_000 + 2):  # no checkpoint: the sender cannot run
            hub.publish_nowait("t", "e" * 10_000)
        with pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()
        assert hub.statistics().disconnects == {"slow-consumer": 1}
        nursery.cancel_scope.cancel()


def test_outbox_counts_every_byte_it_holds():
    box = Outbox(100, max_bytes=50)
    assert box.put("a" * 20) and box.bytes == 20
    assert box.put_state("s", "b" * 10) and box.bytes == 30
    assert box.put_state("s", "c" * 15) and box.bytes == 35  # replaced in place
    assert not box.put_state("s", "d" * 40)  # the larger value does not fit
    assert not box.put("e" * 16) and box.bytes == 35  # refused by bytes, not by count
    box.put_unbounded(["f" * 30, "g" * 5])  # answers are never refused, but counted
    box.put_control("s", "h" * 5)
    assert box.bytes == 75
    taken = box.take(40)
    assert box.bytes == 75 - sum(map(len, taken))
    box.take(math.inf)
    assert box.bytes == 0 and not box
    box.put("x")
    box.clear()
    assert box.bytes == 0


def test_an_answer_counts_once_against_the_event_limit_and_keeps_its_order():
    box = Outbox(2)
    box.put_unbounded([f"r{i}" for i in range(100)])  # an answer with its replay
    assert box.put("live")  # one entry so far: a replay larger than the limit is no overflow
    assert not box.put("more")
    taken = box.take(25)
    assert taken == [f"r{i}" for i in range(12)]  # split inside the answer, in order
    rest = box.take(10**9)
    assert rest == [f"r{i}" for i in range(12, 100)] + ["live"]
    assert box.bytes == 0


async def test_pauses_are_forgiven_once_the_client_has_caught_up(autojump_clock):
    # Five rounds of resuming large replays, each pausing the client's requests for ~3 s: 15 s in
    # all, more than send_timeout, but the client caught up in between, so it is never closed.
    hub = Hub(outbox_bytes=BUDGET, send_timeout=10)
    topics = [f"logs/{i}" for i in range(4)]
    for topic in topics:
        stream_topic(hub, topic, events=500)
    async with trio.open_nursery() as nursery:
        ws, throttled = await attacker(nursery, hub)
        throttled.rate = 100_000
        start = trio.current_time()
        for _ in range(5):
            # subscribing from a task of its own, while reading (see the test above)
            async with trio.open_nursery() as subscribing:
                subscribing.start_soon(subscribe, ws, topics)
                events = 0
                while events < 4 * 500:
                    message = json.loads(await ws.get_message())
                    for frame in message["frames"] if message["type"] == "batch" else [message]:
                        events += frame["type"] == "event"
                        if frame["type"] == "ping":
                            await ws.send_message(json.dumps({"type": "pong", "id": frame["id"]}))
            for topic in topics:
                await ws.send_message(json.dumps({"type": "unsubscribe", "topic": topic}))
        assert trio.current_time() - start > 15
        assert hub.statistics().disconnects == {}
        nursery.cancel_scope.cancel()
