"""The trioconn-asgi benchmark servers: the control commands, the routing, and a tiny real run.

Correctness only (counts, never timings): the control loop must publish exactly the events the
runner asked for with consecutive ``seq``, and a few real clients on 127.0.0.1 must get every
event exactly once and in order through ``HubApp`` on uvicorn and on hypercorn's trio worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import trioconn
from bench.run import SERVERS, Bench, parse_args
from bench.servers.trioconn_asgi import BenchApp, Control

pytest.importorskip("uvicorn")
pytest.importorskip("hypercorn")

ASGI = ["trioconn-asgi", "trioconn-asgi-hypercorn-trio"]


class FakeHub:
    """Records what would be published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    def publish_nowait(self, topic: str, data: Any) -> int:
        self.published.append((topic, data))
        return len(self.published)


def control() -> tuple[Control, FakeHub]:
    hub = FakeHub()
    return Control(hub, 0, lambda: None), hub  # type: ignore[arg-type]


def test_burst_and_rate_publish_every_seq_once_in_order() -> None:
    ctl, hub = control()

    async def main() -> list[dict[str, Any] | None]:
        return [
            await ctl.command({"cmd": "burst", "topic": "bench", "count": 30, "size": 100}),
            await ctl.command({"cmd": "rate", "topic": "bench", "rate": 200, "seconds": 0.05}),
            await ctl.command({"cmd": "burst", "topic": "other", "count": 3}),
            await ctl.command({"cmd": "nonsense"}),
            await ctl.command({"cmd": "quit"}),
        ]

    burst, rate, _, unknown, quit_ = asyncio.run(main())
    assert burst is not None and burst["published"] == 30
    assert rate is not None and rate["published"] == 10
    assert unknown is not None and "error" in unknown
    assert quit_ is None
    bench = [data["seq"] for topic, data in hub.published if topic == "bench"]
    assert bench == list(range(40))
    assert [data["seq"] for topic, data in hub.published if topic == "other"] == [0, 1, 2]


def test_plain_http_goes_to_hubapp() -> None:
    hub = trioconn.Hub()
    app = BenchApp(hub, Control(hub, 0, lambda: None))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": "/", "headers": []}, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 426


def test_asgi_servers_are_runner_choices_and_in_smoke() -> None:
    assert set(ASGI) <= set(SERVERS)
    assert parse_args(["--smoke"]).servers == ["trioconn", "trioconn-asgi"]
    assert parse_args(["--servers", "trioconn-asgi-hypercorn-trio"]).servers == [ASGI[1]]


@pytest.mark.parametrize("server", ASGI)
def test_every_event_arrives_once_in_order(server: str) -> None:
    bench = Bench(parse_args(["--no-pin", "--quiet-wait", "0"]))
    burst = bench.burst(server, n=5, m=50)
    assert (burst["delivered"], burst["expected"], burst["violations"]) == (250, 250, 0)
    steady = bench.steady(server, 3, 100.0, 0.2)
    assert (steady["delivered"], steady["expected"], steady["violations"]) == (60, 60, 0)
