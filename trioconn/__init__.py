"""trioconn: live data over WebSockets for trio.

A server ``Hub`` with topics, history and heartbeats, and (see ``connect``) a client that
reconnects and resumes. ``docs/`` holds the protocol and the reasons behind every default.
"""

from __future__ import annotations

from ._backoff import Backoff as Backoff
from ._backoff import BackoffPolicy as BackoffPolicy
from ._broker import Broker as Broker
from ._broker import MemoryBroker as MemoryBroker
from ._client import Client as Client
from ._client import ClientState as ClientState
from ._client import ClientStatistics as ClientStatistics
from ._client import EventItem as EventItem
from ._client import ResetItem as ResetItem
from ._client import SnapshotItem as SnapshotItem
from ._client import StateChange as StateChange
from ._client import Subscription as Subscription
from ._client import SubscriptionItem as SubscriptionItem
from ._client import Transport as Transport
from ._client import connect as connect
from ._client import tcp_transport as tcp_transport
from ._client import wrap_client_stream as wrap_client_stream
from ._connection import ConnectionStatistics as ConnectionStatistics
from ._exceptions import BrokerUnavailable as BrokerUnavailable
from ._exceptions import ConnectionBroken as ConnectionBroken
from ._exceptions import ConnectionClosed as ConnectionClosed
from ._exceptions import HandshakeRejected as HandshakeRejected
from ._exceptions import HubStopped as HubStopped
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import ReconnectFailed as ReconnectFailed
from ._exceptions import ServerError as ServerError
from ._exceptions import TooManyTopics as TooManyTopics
from ._exceptions import TopicEnded as TopicEnded
from ._exceptions import TrioconnError as TrioconnError
from ._hub import HandshakeRequest as HandshakeRequest
from ._hub import Hub as Hub
from ._hub import HubConfig as HubConfig
from ._hub import HubStatistics as HubStatistics
from ._protocol import CLOSE_CODES as CLOSE_CODES
from ._protocol import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._protocol import CloseAction as CloseAction
from ._protocol import CloseCodeInfo as CloseCodeInfo
from ._threads import HubThreadHandle as HubThreadHandle
from ._topics import TopicStatistics as TopicStatistics

__all__ = [
    "CLOSE_CODES",
    "PROTOCOL_VERSION",
    "Backoff",
    "BackoffPolicy",
    "Broker",
    "BrokerUnavailable",
    "Client",
    "ClientState",
    "ClientStatistics",
    "CloseAction",
    "CloseCodeInfo",
    "ConnectionBroken",
    "ConnectionClosed",
    "ConnectionStatistics",
    "EventItem",
    "HandshakeRejected",
    "HandshakeRequest",
    "Hub",
    "HubConfig",
    "HubStatistics",
    "HubStopped",
    "HubThreadHandle",
    "MemoryBroker",
    "ProtocolError",
    "ReconnectFailed",
    "ResetItem",
    "ServerError",
    "SnapshotItem",
    "StateChange",
    "Subscription",
    "SubscriptionItem",
    "TooManyTopics",
    "TopicEnded",
    "TopicStatistics",
    "Transport",
    "TrioconnError",
    "connect",
    "tcp_transport",
    "wrap_client_stream",
]
