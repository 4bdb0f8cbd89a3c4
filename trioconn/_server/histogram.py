"""A fixed-bucket histogram the hub keeps of ping round-trip times (no I/O, no locks).

Kept as counts per bucket so an exporter (``trioconn.metrics``) can publish a Prometheus
histogram without seeing every observation, and so the cost per pong is one bisect.
"""

from __future__ import annotations

import bisect

import attrs

__all__ = ["RTT_BUCKETS", "Histogram", "HistogramSnapshot"]

#: Upper bounds (seconds) of the round-trip buckets: from a loopback client (< 1 ms) to one on a
#: congested mobile link (seconds); a connection whose pongs take longer is close to its timeout.
RTT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@attrs.frozen
class HistogramSnapshot:
    """Observations so far: ``counts[i]`` fell at or below ``bounds[i]`` (and above the bound
    before it); ``counts[-1]`` (one more than ``bounds``) above the last bound."""

    bounds: tuple[float, ...] = RTT_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(RTT_BUCKETS) + 1)
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


class Histogram:
    """Counts observations into the buckets ``bounds`` (sorted upper bounds) and one above them."""

    def __init__(self, bounds: tuple[float, ...] = RTT_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._sum)
