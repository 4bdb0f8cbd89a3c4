"""Prometheus metrics of a hub (``pip install trioconn[metrics]``): ``HubCollector``.

Register one in your own app's registry and serve it the way ``prometheus_client`` does::

    prometheus_client.REGISTRY.register(trioconn.metrics.HubCollector(hub))

``trioconn serve`` does this for its ``GET /metrics``. Every metric is listed in
``docs/operate.md``.
"""

from __future__ import annotations

from ._collector import METRICS as METRICS
from ._collector import HubCollector as HubCollector

__all__ = ["METRICS", "HubCollector"]
