"""Attacks on the hub's memory, against a hub in its own process, measured with /proc RSS.

Each case is a client that asks for more than it reads (or sends garbage) over real TCP on
127.0.0.1, while a healthy client keeps being served. The hub runs ``tests/budget_hub.py``:
default settings except ``send_timeout`` (2 s instead of 10, to keep the module short). Bounds
asserted: the hub's RSS growth, the time until the attacker is closed, the healthy client's
worst answer time, and no traceback in the hub's log. Before the memory budget, the first case
grew a hub from 32 MB to 399 MB in 10 s and the second was never closed.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import pytest
import trio
import trio_websocket

from .conftest import Throttled, hub_process, loopback_client

ROOT = Path(__file__).resolve().parent.parent
SEND_TIMEOUT = 2.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def resubscribe(topic: str, last: int | None = None):
    for _ in range(100_000):
        yield json.dumps({"type": "subscribe", "topic": topic, "last": last})
        yield json.dumps({"type": "unsubscribe", "topic": topic})


CASES = {
    # topic "logs": 2000 events of ~230 B, so each subscribe asks for ~460 KB
    "replays, never reads": (lambda: resubscribe("logs", 2000), 0),
    "replays, reads 40 KB/s": (lambda: resubscribe("logs", 2000), 40_000),
    "60 KB snapshots, never reads": (lambda: resubscribe("big"), 0),
    "60 KB snapshots, reads 40 KB/s": (lambda: resubscribe("big"), 40_000),
    "garbage, reads 40 KB/s": (lambda: ("{oops" for _ in range(2_000_000)), 40_000),
}


async def attack(port: int, frames, rate: float) -> tuple[float, int]:
    """Send ``frames`` while reading at ``rate``; returns (seconds until closed, frames sent)."""
    # A small receive buffer (set before connecting, so the kernel does not grow it): the hub's
    # answers pile up in the hub, where the budget is measured, instead of filling megabytes of
    # loopback buffers first at whatever speed this machine has.
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    throttled = Throttled(stream)
    start = trio.current_time()
    sent = 0
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, throttled, "127.0.0.1", "/")
        await ws.get_message()  # welcome
        throttled.rate = rate

        async def discard():
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                while True:
                    await ws.get_message()

        nursery.start_soon(discard)
        with trio.fail_after(30), contextlib.suppress(trio_websocket.ConnectionClosed):
            for text in frames:
                await ws.send_message(text)
                sent += 1
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return elapsed, sent


async def healthy(port: int, stop: trio.Event) -> float:
    """Ask for the big snapshot over and over until ``stop``; returns the slowest answer (s)."""
    worst = 0.0
    async with loopback_client(port) as client:
        await client.recv_type("welcome")
        while not stop.is_set():
            start = trio.current_time()
            await client.send({"type": "subscribe", "topic": "big"})
            assert len((await client.recv_type("subscribed"))["snapshot"]) == 60_000
            await client.send({"type": "unsubscribe", "topic": "big"})
            await client.recv_type("unsubscribed")
            worst = max(worst, trio.current_time() - start)
    return worst


@pytest.mark.parametrize("case", list(CASES))
async def test_no_client_can_grow_the_hub_or_stay_over_its_budget(case, tmp_path):
    make_frames, rate = CASES[case]
    log = tmp_path / "hub.log"
    with log.open("wb") as err:
        async with hub_process("tests.budget_hub", str(SEND_TIMEOUT), stderr=err) as hub:
            port, pid = hub.port, hub.pid
            baseline = rss_mb(pid)
            peak = baseline
            stop = trio.Event()
            worst: list[float] = []

            async def sample():
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, rss_mb(pid))
                    await trio.sleep(0.05)  # a measurement interval, not synchronisation

            async def serve_healthy():
                worst.append(await healthy(port, stop))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                nursery.start_soon(serve_healthy)
                elapsed, sent = await attack(port, make_frames(), rate)
                stop.set()
    growth = peak - baseline
    report = f"{case}: closed after {elapsed:.1f} s, {sent} sent, RSS +{growth:.1f} MB, healthy {worst}"
    print(report)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "'slow-consumer': 1" in text, text  # the attacker, and only it, was closed as slow
    # paused for send_timeout in all, then closed (the attacker's small receive buffer fills in a
    # moment; with loopback's default of several MB that took seconds, more on a slow machine)
    assert elapsed <= SEND_TIMEOUT + 3, report
    assert growth < 16, report  # the budget is 2 MiB; before, hundreds of MB
    assert worst and worst[0] < 1.0, report  # everyone else kept being served
