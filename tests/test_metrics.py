"""``trioconn.metrics.HubCollector`` in a registry of the user's own, against an in-memory hub in
virtual time: every family is there, the numbers are the hub's, and nothing leaks between hubs."""

from __future__ import annotations

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trioconn import Hub
from trioconn.metrics import METRICS, HubCollector

from .conftest import memory_client


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_documented_metric_is_exported_and_registering_reads_nothing():
    class Untouchable(Hub):
        def statistics(self):
            raise AssertionError("describe() must not read the hub")

    registry = CollectorRegistry(auto_describe=True)
    collector = HubCollector(Untouchable())
    registry.register(collector)  # calls describe()
    names = {family.name for family in collector.describe()}
    assert names == {f"trioconn_{name}" for name in METRICS}


async def test_the_numbers_are_the_hubs(autojump_clock):
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    registry = CollectorRegistry()
    registry.register(HubCollector(hub, namespace="live", labels={"role": "edge"}))
    edge = (("role", "edge"),)
    async with memory_client(hub) as client:
        await client.recv_type("welcome")
        await client.send({"type": "subscribe", "topic": "t", "ref": 1})
        await client.recv_type("subscribed")
        hub.publish_nowait("t", 1)
        hub.publish_nowait("t", 2)
        hub.set_state_nowait("s", {"x": 1})
        assert [(await client.recv_type("event"))["data"] for _ in range(2)] == [1, 2]
        with trio.move_on_after(3.5):  # three pings, answered by recv()
            await client.recv()
        live = samples(registry)
    assert live["live_connections", edge] == 1
    assert live["live_subscriptions", edge] == 1
    assert live["live_handshakes_total", (("result", "accepted"), *edge)] == 1
    assert live["live_events_published_total", edge] == 3
    assert live["live_events_delivered_total", edge] == 2
    assert live["live_events_dropped_total", edge] == 0
    assert live["live_topics", (("ended", "false"), ("kind", "state"), *edge)] == 1
    assert live["live_topics", (("ended", "false"), ("kind", "stream"), *edge)] == 1
    assert live["live_ping_rtt_seconds_count", edge] == 3
    assert live["live_ping_rtt_seconds_bucket", (("le", "0.001"), *edge)] == 3  # no time passes in memory
    assert live["live_broker_connected", edge] == 1
    await trio.testing.wait_all_tasks_blocked()
    after = samples(registry)
    assert after["live_connections", edge] == 0
    assert after["live_disconnects_total", (("cause", "client-closed"), *edge)] == 1
    assert after["live_events_delivered_total", edge] == 2  # kept when the connection is gone
    assert after["live_ping_rtt_seconds_count", edge] == 3


async def test_a_slow_subscribers_dropped_events_are_counted(autojump_clock):
    hub = Hub(outbox_size=3)
    registry = CollectorRegistry()
    registry.register(HubCollector(hub))
    async with memory_client(hub) as client:
        await client.recv_type("welcome")
        await client.send({"type": "subscribe", "topic": "t", "ref": 1})
        await client.recv_type("subscribed")
        await trio.testing.wait_all_tasks_blocked()
        client.answer_pings = False
        for n in range(10):  # nothing is read meanwhile: the outbox overflows
            hub.publish_nowait("t", n)
        await trio.testing.wait_all_tasks_blocked()
    after = samples(registry)
    assert after["trioconn_disconnects_total", (("cause", "slow-consumer"),)] == 1
    assert after["trioconn_events_dropped_total", ()] >= 1
    assert after["trioconn_events_published_total", ()] == 10


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="hub"):
        HubCollector(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        HubCollector(Hub(), namespace="not a name")


def test_the_new_public_modules_export_what_they_list():
    import trioconn.metrics
    import trioconn.serve

    for module in (trioconn.metrics, trioconn.serve):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
            assert not name.startswith("_")
