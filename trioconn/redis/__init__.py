"""Several hub processes sharing topics through Redis (``pip install trioconn[redis]``).

``RedisBroker`` is what a ``Hub`` gets as ``broker=``; ``SyncPublisher`` publishes from processes
that do not run trio. See ``docs/scaling.md``.
"""

from __future__ import annotations

from ._broker import RedisBroker as RedisBroker
from ._sync import SyncPublisher as SyncPublisher

__all__ = ["RedisBroker", "SyncPublisher"]
