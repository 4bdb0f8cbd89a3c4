"""``HubCollector``: a ``prometheus_client`` collector that reads ``Hub.statistics()`` on scrape.

Theory of operation
-------------------
The hub keeps plain counters (``HubStatistics``: connections, disconnects by cause, events
published / delivered / dropped, a ping round-trip histogram …); nothing is pushed to
Prometheus objects on the hot path. A scrape calls ``collect``, which takes one snapshot and turns
it into metric families. So a hub without a collector pays nothing, and the numbers of one scrape
are consistent with each other.

``collect`` reads the hub's state, which belongs to the hub's event loop: scrape from that loop
(a route of the app that runs the hub, as ``trioconn serve`` does), not from
``prometheus_client.start_http_server``'s thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("trioconn.metrics needs prometheus_client: pip install 'trioconn[metrics]'") from exc

from .._server.hub import BaseHub, HubStatistics

__all__ = ["METRICS", "HubCollector"]

#: Every metric ``HubCollector`` exports (without the namespace): name → (type, help). The help
#: texts are the ones ``/metrics`` shows; ``docs/operate.md`` explains each in more words.
METRICS: Mapping[str, tuple[str, str]] = {
    "connections": ("gauge", "Open WebSocket connections."),
    "handshakes": (
        "counter",
        "Opening handshakes by result: accepted, or refused-<HTTP status> (origin, authentication, "
        "shutting down).",
    ),
    "subscriptions": ("gauge", "Subscriptions of the open connections."),
    "topics": ("gauge", "Topics held by the hub, by kind (stream, state, or none yet) and whether ended."),
    "topics_expired": (
        "counter",
        "Topics dropped after idle_retention or evicted to stay within max_topics.",
    ),
    "events_published": (
        "counter",
        "Writes made through this hub (publish, set state, clients' publications).",
    ),
    "events_delivered": ("counter", "Events and state values queued for subscribers."),
    "events_dropped": (
        "counter",
        "Events queued for subscribers but never sent (slow consumers, closed connections, "
        "state values superseded by newer ones).",
    ),
    "disconnects": ("counter", "Connections ended, by cause (client-closed, slow-consumer, shutdown, ...)."),
    "outbox_bytes": ("gauge", "Bytes queued for all clients (outboxes and unsent socket buffers)."),
    "outbox_bytes_max": ("gauge", "Bytes queued for the client with the most queued."),
    "ping_rtt_seconds": ("histogram", "Round-trip time of the server's pings (ping sent to pong read)."),
    "broker_connected": (
        "gauge",
        "1 while the broker reaches its store (always 1 in memory).",
    ),
    "sockets": ("gauge", "Open TCP sockets of Hub.serve, handshakes included (0 under an ASGI server)."),
    "handshaking": ("gauge", "Sockets of Hub.serve still waiting for their upgrade request."),
}


class HubCollector(Collector):
    """Exports a hub's statistics as Prometheus metrics, read at every scrape.

    Args:
        hub: the hub (``trioconn.Hub``, or any hub served through ``trioconn.asgi``).
        namespace: prefix of every metric name (``trioconn_connections`` …).
        labels: constant labels added to every sample (e.g. ``{"instance_role": "edge"}``).

    Register it with ``registry.register(collector)`` (``prometheus_client.REGISTRY`` or your own
    ``CollectorRegistry``) and scrape in the hub's event loop.
    """

    def __init__(
        self, hub: BaseHub, *, namespace: str = "trioconn", labels: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(hub, BaseHub):
            raise TypeError(f"hub must be a trioconn Hub, not {type(hub).__name__}")
        if not namespace.isidentifier():
            raise ValueError(f"namespace must be a metric name prefix like 'trioconn', got {namespace!r}")
        self.hub = hub
        self._namespace = namespace
        self._const = dict(labels or {})

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples: registering does not read the hub."""
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        """One snapshot of the hub (``hub.statistics()``) as metric families."""
        return list(self._families(self.hub.statistics()))

    def _families(self, stats: HubStatistics | None) -> Iterator[Metric]:
        const_names = list(self._const)
        const_values = list(self._const.values())

        def family(name: str, *labels: str) -> GaugeMetricFamily | CounterMetricFamily:
            kind, text = METRICS[name]
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            return cls(f"{self._namespace}_{name}", text, labels=[*const_names, *labels])

        def single(name: str, value: float) -> Metric:
            metric = family(name)
            if stats is not None:
                metric.add_metric(const_values, value)
            return metric

        def labelled(name: str, label: str, values: Mapping[str, float]) -> Metric:
            metric = family(name, label)
            for key, value in sorted(values.items()):
                metric.add_metric([*const_values, key], value)
            return metric

        disconnects: Mapping[str, int] = {} if stats is None else stats.disconnects
        refused = {cause: n for cause, n in disconnects.items() if cause.startswith("refused-")}
        handshakes: dict[str, float] = {} if stats is None else {"accepted": stats.accepted, **refused}
        topics: Counter[tuple[str, str]] = Counter()
        if stats is not None:
            for topic in stats.topics.values():
                topics[topic.kind or "none", "true" if topic.ended else "false"] += 1
        queued = [] if stats is None else [session.queued_bytes for session in stats.sessions]

        yield single("connections", 0 if stats is None else stats.connections)
        yield labelled("handshakes", "result", handshakes)
        yield single(
            "subscriptions", 0 if stats is None else sum(len(s.subscriptions) for s in stats.sessions)
        )
        metric = family("topics", "kind", "ended")
        for (kind, ended), count in sorted(topics.items()):
            metric.add_metric([*const_values, kind, ended], count)
        yield metric
        yield single("topics_expired", 0 if stats is None else stats.topics_expired)
        yield single("events_published", 0 if stats is None else stats.events_published)
        yield single("events_delivered", 0 if stats is None else stats.events_delivered)
        yield single("events_dropped", 0 if stats is None else stats.events_dropped)
        yield labelled(
            "disconnects", "cause", {cause: n for cause, n in disconnects.items() if cause not in refused}
        )
        yield single("outbox_bytes", sum(queued))
        yield single("outbox_bytes_max", max(queued, default=0))
        histogram = HistogramMetricFamily(
            f"{self._namespace}_ping_rtt_seconds", METRICS["ping_rtt_seconds"][1], labels=const_names
        )
        if stats is not None:
            rtt = stats.ping_rtt
            cumulative, buckets = 0, []
            for bound, count in zip((*rtt.bounds, float("inf")), rtt.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            histogram.add_metric(const_values, buckets, rtt.sum)
        yield histogram
        yield single("broker_connected", 1 if stats is None or stats.broker_connected else 0)
        yield single("sockets", 0 if stats is None else stats.sockets)
        yield single("handshaking", 0 if stats is None else stats.handshaking)
