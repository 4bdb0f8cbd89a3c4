"""trioconn: live data over WebSockets for trio (and, through ``trioconn.asgi``, asyncio web apps).

A server ``Hub`` with topics, history and heartbeats, and (see ``connect``) a client that
reconnects and resumes. ``docs/`` holds the protocol and the reasons behind every default.
"""

from __future__ import annotations

from ._client import Client as Client
from ._client import ClientState as ClientState
from ._client import ClientStatistics as ClientStatistics
from ._client import EventItem as EventItem
from ._client import JoinItem as JoinItem
from ._client import LeaveItem as LeaveItem
from ._client import PresenceItem as PresenceItem
from ._client import ResetItem as ResetItem
from ._client import SnapshotItem as SnapshotItem
from ._client import StateChange as StateChange
from ._client import Subscribed as Subscribed
from ._client import Subscription as Subscription
from ._client import SubscriptionItem as SubscriptionItem
from ._client import Transport as Transport
from ._client import connect as connect
from ._client import tcp_transport as tcp_transport
from ._client import wrap_client_stream as wrap_client_stream
from ._core.backoff import Backoff as Backoff
from ._core.backoff import BackoffPolicy as BackoffPolicy
from ._core.decision import decision_table as decision_table
from ._core.exceptions import BrokerUnavailable as BrokerUnavailable
from ._core.exceptions import ConnectionBroken as ConnectionBroken
from ._core.exceptions import ConnectionClosed as ConnectionClosed
from ._core.exceptions import HandshakeRejected as HandshakeRejected
from ._core.exceptions import HubStopped as HubStopped
from ._core.exceptions import ProtocolError as ProtocolError
from ._core.exceptions import PublicationsLost as PublicationsLost
from ._core.exceptions import ReconnectFailed as ReconnectFailed
from ._core.exceptions import RequestRefused as RequestRefused
from ._core.exceptions import RequestTimeout as RequestTimeout
from ._core.exceptions import ServerError as ServerError
from ._core.exceptions import TooManyTopics as TooManyTopics
from ._core.exceptions import TopicEnded as TopicEnded
from ._core.exceptions import TrioconnError as TrioconnError
from ._core.exceptions import UntrustedCertificate as UntrustedCertificate
from ._core.protocol import CLOSE_CODES as CLOSE_CODES
from ._core.protocol import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._core.protocol import CloseAction as CloseAction
from ._core.protocol import CloseCodeInfo as CloseCodeInfo
from ._frontends.trio_wsproto import Hub as Hub
from ._server.broker import Broker as Broker
from ._server.broker import MemoryBroker as MemoryBroker
from ._server.config import Allow as Allow
from ._server.config import HandshakeRequest as HandshakeRequest
from ._server.config import HubConfig as HubConfig
from ._server.connection import ConnectionStatistics as ConnectionStatistics
from ._server.follow import HubSubscription as HubSubscription
from ._server.hub import HubStatistics as HubStatistics
from ._server.presence import Joined as Joined
from ._server.presence import Left as Left
from ._server.presence import Member as Member
from ._server.presence import PresenceChanges as PresenceChanges
from ._server.publications import Publication as Publication
from ._server.publications import Publications as Publications
from ._server.requests import Request as Request
from ._server.socket import Accepted as Accepted
from ._server.socket import Closed as Closed
from ._server.socket import Refused as Refused
from ._server.socket import ServerSocket as ServerSocket
from ._server.socket import SocketClosed as SocketClosed
from ._server.threads import HubThreadHandle as HubThreadHandle
from ._server.topics import TopicStatistics as TopicStatistics
from ._version import version as _read_version

__version__ = _read_version()

__all__ = [
    "CLOSE_CODES",
    "PROTOCOL_VERSION",
    "Accepted",
    "Allow",
    "Backoff",
    "BackoffPolicy",
    "Broker",
    "BrokerUnavailable",
    "Client",
    "ClientState",
    "ClientStatistics",
    "CloseAction",
    "Closed",
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
    "HubSubscription",
    "HubThreadHandle",
    "JoinItem",
    "Joined",
    "LeaveItem",
    "Left",
    "Member",
    "MemoryBroker",
    "PresenceChanges",
    "PresenceItem",
    "ProtocolError",
    "Publication",
    "Publications",
    "PublicationsLost",
    "ReconnectFailed",
    "Refused",
    "Request",
    "RequestRefused",
    "RequestTimeout",
    "ResetItem",
    "ServerError",
    "ServerSocket",
    "SnapshotItem",
    "SocketClosed",
    "StateChange",
    "Subscribed",
    "Subscription",
    "SubscriptionItem",
    "TooManyTopics",
    "TopicEnded",
    "TopicStatistics",
    "Transport",
    "TrioconnError",
    "UntrustedCertificate",
    "connect",
    "decision_table",
    "tcp_transport",
    "wrap_client_stream",
]
