"""The reconnecting client, in four parts.

- ``transport``: opening the WebSocket (``Transport``, ``tcp_transport``, the handshake watch);
- ``errors``: third-party exceptions become trioconn exceptions, tokens are kept out of them;
- ``link``: one open connection (sending, the read loop, the heartbeat watchdog);
- ``client``: ``connect()``, the ``Client`` and its supervisor, which carries out the pure
  reconnect decision of ``trioconn/_core/decision.py``;

plus ``state`` (the public value types) and ``subscription`` (one topic's resume position).
"""

from __future__ import annotations

from .client import Client as Client
from .client import connect as connect
from .state import ClientState as ClientState
from .state import ClientStatistics as ClientStatistics
from .state import StateChange as StateChange
from .subscription import EventItem as EventItem
from .subscription import JoinItem as JoinItem
from .subscription import LeaveItem as LeaveItem
from .subscription import PresenceItem as PresenceItem
from .subscription import ResetItem as ResetItem
from .subscription import SnapshotItem as SnapshotItem
from .subscription import Subscribed as Subscribed
from .subscription import Subscription as Subscription
from .subscription import SubscriptionItem as SubscriptionItem
from .transport import Transport as Transport
from .transport import tcp_transport as tcp_transport
from .transport import wrap_client_stream as wrap_client_stream

__all__ = [
    "Client",
    "ClientState",
    "ClientStatistics",
    "EventItem",
    "JoinItem",
    "LeaveItem",
    "PresenceItem",
    "ResetItem",
    "SnapshotItem",
    "StateChange",
    "Subscribed",
    "Subscription",
    "SubscriptionItem",
    "Transport",
    "connect",
    "tcp_transport",
    "wrap_client_stream",
]
