"""The reconnecting client: ``async with trioconn.connect(url) as client``.

Theory of operation
-------------------
``connect()`` opens a nursery that runs one supervisor task (``Client._run``) beside the caller's
block. The supervisor loops over *attempts*; each attempt opens its own nursery (the transport's
reader task lives there, and the socket dies with it), waits for ``welcome`` within
``connect_timeout``, then serves the link until it ends. Every attempt ends with a cause (a
``TrioconnError``), and the cause is classified once:

* ``DONE`` (close 1000): the client ends normally: state ``closed``, every subscription's
  iteration ends, no further attempt;
* ``FAIL`` (handshake 401/403, 1002/1003/1007/1008/1009, 4403, protocol errors): the caller's
  block is cancelled and ``connect()`` raises ``ReconnectFailed(cause)``;
* ``REAUTH`` (4401): one immediate retry with a fresh token when a token provider exists,
  otherwise ``FAIL``;
* ``RECONNECT`` (everything else): sleep the backoff delay, try again.

The failure counter that drives the backoff resets only when a connection stayed open for
``min_uptime``, so a server that accepts and closes at once still sees growing delays.

States::

    connecting ──open──▶ open ──link lost──▶ reconnecting ──open──▶ open …
        │                 │                     │
        └─────────────────┴─────────────────────┴──▶ closed (1000, aclose(), or failure)

Heartbeat: the server pings every ``interval`` and closes with 4000 after ``timeout`` of
silence from us. The client answers every ping and runs the read loop inside a cancel scope
whose deadline moves forward on each received frame; when nothing arrives for
``timeout + interval`` (the server's own timeout plus one ping period of slack for network
delay), the link is declared dead and the client reconnects. Both numbers come from
``welcome``, so no client setting can disagree with the server.

Sending: a frame interrupted half-way would corrupt the WebSocket stream, so each send is
shielded from cancellation and bounded instead by the server's heartbeat timeout; when that
expires the link is dropped and replaced.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import math
import random
import ssl
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, NoReturn, Protocol, Self

import attrs
import trio
import trio_websocket
import wsproto.utilities

from ._backoff import Backoff, BackoffPolicy
from ._exceptions import (
    ConnectionBroken,
    ConnectionClosed,
    HandshakeRejected,
    ProtocolError,
    ReconnectFailed,
    ServerError,
    TrioconnError,
)
from ._protocol import (
    CloseAction,
    End,
    Error,
    Event,
    Ping,
    Pong,
    Publish,
    Published,
    Reset,
    ServerFrame,
    Subscribed,
    Unsubscribe,
    Welcome,
    close_action,
    encode_data,
    parse_server_frames,
    validate_topic,
)
from ._subscription import Subscription, SubscriptionItem

__all__ = [
    "Client",
    "ClientState",
    "ClientStatistics",
    "StateChange",
    "Transport",
    "connect",
    "tcp_transport",
]

logger = logging.getLogger("trioconn.client")

#: Bound on the closing handshake; after it the socket is closed without waiting for the peer.
CLOSE_TIMEOUT: Final = 5.0
#: Largest message the default transport accepts. Large on purpose: a ``batch`` can be big, and
#: a client-side 1009 would end the client for good (1009 is a final code).
MAX_MESSAGE_SIZE: Final = 64 * 2**20
#: How many past state changes a slow ``state_changes()`` reader can still catch up on.
_STATE_HISTORY: Final = 64

Headers = list[tuple[bytes, bytes]]


# --------------------------------------------------------------------------------------------
# Transport


class Transport(Protocol):
    """Opens one WebSocket client connection; injectable so tests can use memory streams.

    The transport runs the connection's background tasks in ``nursery`` and must release every
    resource it opened (sockets) when that nursery is cancelled: the client cancels it when the
    connection is over. Errors may be raised as trio-websocket, trio or ``OSError`` exceptions;
    the client translates them.

    Args:
        nursery: where the connection's reader task (and any cleanup task) runs.
        url: the ``ws://`` or ``wss://`` URL, with ``?token=`` added when a token is used.
        headers: extra HTTP headers for the opening handshake (``Authorization``).

    Returns:
        An open ``trio_websocket.WebSocketConnection`` (the handshake has completed).
    """

    def __call__(
        self, nursery: trio.Nursery, url: str, headers: Headers
    ) -> Awaitable[trio_websocket.WebSocketConnection]: ...


async def _close_on_cancel(stream: trio.abc.AsyncResource) -> None:
    try:
        await trio.sleep_forever()
    finally:
        await stream.aclose()


async def tcp_transport(
    nursery: trio.Nursery, url: str, headers: Headers
) -> trio_websocket.WebSocketConnection:
    """The default transport: TCP (TLS for ``wss://``) via trio-websocket.

    The socket is closed when ``nursery`` is cancelled, whatever state the WebSocket is in.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl.create_default_context(), https_compatible=True
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    nursery.start_soon(_close_on_cancel, stream)
    host_header = host if port in (80, 443) else f"{host}:{port}"
    return await trio_websocket.wrap_client_stream(
        nursery, stream, host_header, resource, extra_headers=headers, max_message_size=MAX_MESSAGE_SIZE
    )


# --------------------------------------------------------------------------------------------
# Public value types


class ClientState(enum.Enum):
    """Where the client is in its life."""

    #: The first connection has not been established yet.
    CONNECTING = "connecting"
    #: A connection is up and the server's ``welcome`` was received.
    OPEN = "open"
    #: The link was lost (or an attempt failed after having been open); trying again.
    RECONNECTING = "reconnecting"
    #: Final: closed normally (1000, ``aclose()``) or failed for good.
    CLOSED = "closed"


@attrs.frozen
class StateChange:
    """One transition, with the reason for it.

    Attributes:
        state: the state entered.
        code: the close code that caused it, if a close code did.
        reason: the close reason or a short description.
        exception: the error that caused it (``ConnectionClosed``, ``HandshakeRejected``,
            ``ReconnectFailed`` …), if any.
    """

    state: ClientState
    code: int | None = None
    reason: str = ""
    exception: BaseException | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ClientStatistics:
    """A snapshot of the client's counters (see ``Client.statistics()``).

    Attributes:
        state: the current state.
        attempts: connection attempts made (each opening handshake tried).
        connects: attempts that reached ``welcome``.
        reconnects: successful connects after the first one.
        pings_answered: server pings answered with ``pong``.
        last_rtt: the last round trip (s) the server measured and sent in ``ping.rtt``.
        events_received: ``event`` frames received (before de-duplication).
        resets: ``reset`` answers received.
        subscriptions: live subscriptions.
    """

    state: ClientState
    attempts: int
    connects: int
    reconnects: int
    pings_answered: int
    last_rtt: float | None
    events_received: int
    resets: int
    subscriptions: int


@attrs.define
class _Counters:
    attempts: int = 0
    connects: int = 0
    reconnects: int = 0
    pings_answered: int = 0
    last_rtt: float | None = None
    events_received: int = 0
    resets: int = 0


# --------------------------------------------------------------------------------------------
# Boundary: third-party exceptions become trioconn exceptions here, and only here.


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _translate_one(exc: BaseException) -> BaseException:
    if isinstance(exc, TrioconnError):
        return exc
    new: TrioconnError
    if isinstance(exc, trio_websocket.ConnectionRejected):
        new = HandshakeRejected(exc.status_code, exc.body or b"")
    elif isinstance(exc, trio_websocket.ConnectionClosed):
        reason = exc.reason
        if reason is None or reason.code == 1006:
            new = ConnectionBroken((reason.reason if reason else None) or "connection lost")
        else:
            new = ConnectionClosed(reason.code, reason.reason or "")
    elif isinstance(
        exc,
        OSError
        | trio.BrokenResourceError
        | trio.ClosedResourceError
        | trio_websocket.HandshakeError
        | wsproto.utilities.ProtocolError,
    ):
        new = ConnectionBroken(str(exc) or type(exc).__name__)
    else:
        return exc
    new.__cause__ = exc
    return new


def _translate(exc: BaseException) -> BaseException:
    """Map one failure (possibly inside an ExceptionGroup) to a trioconn exception.

    A group whose only non-``Cancelled`` member is one error becomes that error: the
    ``Cancelled`` siblings come from the nursery reacting to it. Groups of several real errors
    and anything unknown (a bug) come back unchanged.
    """
    leaves = _leaves(exc)
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if not real:
        return exc
    translated = [_translate_one(leaf) for leaf in real]
    known = [t for t in translated if isinstance(t, TrioconnError)]
    if len(real) == 1:
        return translated[0]
    if len(known) == len(translated):
        # Several failures of one connection: the most specific (a refusal, a close code) wins
        # over the "broken" that followed it.
        return min(known, key=lambda error: isinstance(error, ConnectionBroken))
    return exc


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves = _leaves(group)
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real:
        return leaves[0]
    return group


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` without chaining the group it was found in as its context."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


# --------------------------------------------------------------------------------------------
# One connection


class _Pending:
    """A publish waiting for its ``published`` or ``error``."""

    __slots__ = ("done", "error", "offset")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.offset = 0
        self.error: BaseException | None = None


class _Link:
    """One open connection (after ``welcome``). Dies with its attempt's nursery."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, welcome: Welcome) -> None:
        self.ws = ws
        self.welcome = welcome
        #: silence longer than this means the link is dead (see the module docstring).
        self.window = welcome.heartbeat_timeout + welcome.heartbeat_interval
        self.alive = True
        self.pending: dict[int, _Pending] = {}
        #: the read loop's watchdog scope; cancelled to drop the link from a sending task.
        self.watchdog: trio.CancelScope | None = None
        self.failure: TrioconnError | None = None
        #: the close code and reason we end the link with, once decided.
        self.close_code = 1001
        self.close_reason = ""

    def fail(self, failure: TrioconnError) -> None:
        if self.failure is None:
            self.failure = failure
        self.alive = False
        if self.watchdog is not None:
            self.watchdog.cancel()

    async def send(self, text: str) -> None:
        """Send one frame, whole or not at all.

        Raises:
            ConnectionBroken: the link is down; the frame may have been sent in part.
            _NotSent: the link was already closing; nothing was sent.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.alive or self.ws.closed is not None:
            self.alive = False
            raise _NotSent
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.welcome.heartbeat_timeout
            try:
                await self.ws.send_message(text)
            except trio_websocket.ConnectionClosed as exc:
                self.alive = False
                raise ConnectionBroken("connection lost while sending") from exc
        if scope.cancelled_caught:
            failure = ConnectionBroken(
                f"could not send a frame within the heartbeat timeout ({self.welcome.heartbeat_timeout:g} s)"
            )
            self.fail(failure)
            raise failure


class _NotSent(ConnectionBroken):
    """Internal: the link was closing before the frame left, so retrying is safe."""

    def __init__(self) -> None:
        super().__init__("the connection is closing")


# --------------------------------------------------------------------------------------------
# The client


def _check_number(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"url {url!r} is not valid: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url {url!r} has no host")
    return url


def _check_close_codes(close_codes: object) -> dict[int, CloseAction]:
    if not isinstance(close_codes, Mapping):
        raise TypeError(
            f"close_codes must be a mapping of int to CloseAction, not {type(close_codes).__name__}"
        )
    checked: dict[int, CloseAction] = {}
    for code, action in close_codes.items():
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"close_codes keys must be ints, got {code!r}")
        if not 1000 <= code <= 4999:
            raise ValueError(f"close code {code} is outside 1000..4999")
        if not isinstance(action, CloseAction):
            raise TypeError(f"close_codes[{code}] must be a CloseAction, got {action!r}")
        checked[code] = action
    return checked


class Client:
    """A connection to a trioconn Hub that reconnects by itself. Create it with ``connect()``.

    Subscriptions and publications survive reconnects (see ``subscribe`` and ``publish``).
    """

    def __init__(
        self,
        url: str,
        *,
        token_provider: Callable[[], Awaitable[str]] | None = None,
        connect_timeout: float = 10.0,
        backoff: BackoffPolicy | None = None,
        min_uptime: float = 10.0,
        close_codes: Mapping[int, CloseAction] | None = None,
        transport: Transport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._url = _check_url(url)
        if token_provider is not None and not callable(token_provider):
            raise TypeError("token_provider must be an async callable returning a str, or None")
        self._token_provider = token_provider
        self._connect_timeout = _check_number("connect_timeout", connect_timeout, allow_zero=False)
        if backoff is None:
            backoff = Backoff()
        elif not isinstance(backoff, BackoffPolicy):
            raise TypeError("backoff must have a delay(failures, rng) method and a max_attempts attribute")
        self._backoff = backoff
        self._min_uptime = _check_number("min_uptime", min_uptime, allow_zero=True)
        self._close_codes = _check_close_codes(close_codes) if close_codes is not None else {}
        if transport is not None and not callable(transport):
            raise TypeError("transport must be an async callable (nursery, url, headers) -> connection")
        self._transport: Transport = transport if transport is not None else tcp_transport
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, not {type(rng).__name__}")
        self._rng = rng if rng is not None else random.Random()

        self._state = ClientState.CONNECTING
        self._changed = trio.Event()
        self._seq = 0
        self._history: deque[tuple[int, StateChange]] = deque([(0, StateChange(self._state))], _STATE_HISTORY)
        self._counters = _Counters()
        self._subs: dict[str, Subscription] = {}
        self._link: _Link | None = None
        self._refs = itertools.count(1)
        self._ever_open = False
        self._opened_at: float | None = None
        self._closing = False
        self._fatal: ReconnectFailed | None = None
        self._run_scope = trio.CancelScope()
        self._run_done = trio.Event()
        self._body_scope: trio.CancelScope | None = None

    # ------------------------------------------------------------------------------ state

    @property
    def state(self) -> ClientState:
        """The current ``ClientState``."""
        return self._state

    def statistics(self) -> ClientStatistics:
        """Return a frozen snapshot of the client's counters."""
        c = self._counters
        return ClientStatistics(
            state=self._state,
            attempts=c.attempts,
            connects=c.connects,
            reconnects=c.reconnects,
            pings_answered=c.pings_answered,
            last_rtt=c.last_rtt,
            events_received=c.events_received,
            resets=c.resets,
            subscriptions=len(self._subs),
        )

    def state_changes(self) -> AsyncIterator[StateChange]:
        """Iterate over state changes, starting with the current state; ends after ``closed``.

        A reader that falls more than 64 changes behind skips to the oldest one kept.
        """
        return _StateChanges(self, self._history[-1][0])

    async def wait_state(self, state: ClientState) -> StateChange:
        """Wait until the client enters ``state`` (returns at once if it is there now).

        Returns:
            The ``StateChange`` that entered ``state``.

        Raises:
            ConnectionClosed: the client closed normally before reaching ``state``.
            ReconnectFailed: the client failed before reaching ``state``.
        """
        if not isinstance(state, ClientState):
            raise TypeError(f"state must be a ClientState, not {type(state).__name__}")
        async for change in self.state_changes():
            if change.state is state:
                return change
        raise self._closed_error()

    def _set_state(self, change: StateChange) -> None:
        if self._state is ClientState.CLOSED:
            return
        logger.debug("client %s -> %s (%s)", self._state.value, change.state.value, change.reason)
        self._state = change.state
        self._seq += 1
        self._history.append((self._seq, change))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _closed_error(self) -> TrioconnError:
        if self._fatal is not None:
            return ReconnectFailed(str(self._fatal), self._fatal.cause)
        final = self._history[-1][1]
        return ConnectionClosed(final.code or 1000, final.reason)

    def _close_subscriptions(self, error: BaseException | None) -> None:
        for sub in self._subs.values():
            sub._finish(error)
        self._subs.clear()

    # ---------------------------------------------------------------------------- requests

    def subscribe(self, topic: str, *, last: int | None = None, buffer_size: int = 256) -> Subscription:
        """Subscribe to ``topic``; use the result with ``async with`` and ``async for``.

        The subscription lives across reconnects: after each one it is resumed from the last
        item delivered, so each event is seen exactly once, in order, or a ``ResetItem`` says
        that some could not be recovered.

        Args:
            topic: the topic name.
            last: on the first subscribe, replay up to this many recent events from history.
            buffer_size: items queued for this subscription before the client stops reading
                from the server (backpressure; the server's slow-consumer policy applies).

        Raises:
            ValueError: invalid topic, ``last`` or ``buffer_size``.
            TypeError: an argument of the wrong type.
        """
        return Subscription(
            topic, last=last, buffer_size=buffer_size, register=self._register, unregister=self._unregister
        )

    async def _register(self, sub: Subscription) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._state is ClientState.CLOSED:
            raise self._closed_error()
        if sub.topic in self._subs:
            raise RuntimeError(f"this client is already subscribed to {sub.topic!r}")
        self._subs[sub.topic] = sub
        link = self._link
        if link is not None and link.alive:
            # If the link is going down, the next connection subscribes again.
            with contextlib.suppress(ConnectionBroken):
                await self._send_subscribe(link, sub)

    async def _unregister(self, sub: Subscription) -> None:
        if self._subs.get(sub.topic) is sub:
            del self._subs[sub.topic]
            link = self._link
            if link is not None and link.alive and sub._ref is not None:
                # Shielded: leaving the block while cancelled must still tell the server, or a
                # later subscribe to the same topic on this connection would be refused.
                # If the connection is gone, so is the subscription: nothing to do.
                with trio.CancelScope(shield=True), contextlib.suppress(ConnectionBroken):
                    await link.send(Unsubscribe(sub.topic, next(self._refs)).to_json())
        sub._finish()

    async def _send_subscribe(self, link: _Link, sub: Subscription) -> None:
        await link.send(sub._subscribe_frame(next(self._refs)).to_json())

    async def publish(self, topic: str, data: Any) -> int:
        """Publish ``data`` to ``topic`` and return the offset the server stored it at.

        While the client is disconnected this waits for the link to come back (bound the wait
        with your own cancel scope). It is never re-sent: if the link drops after the frame
        was sent but before the server acknowledged it, ``ConnectionBroken`` is raised,
        because the server may or may not have stored it and re-sending could duplicate it.

        Args:
            topic: the topic name.
            data: any JSON-serializable value.

        Returns:
            The offset of the new event.

        Raises:
            ValueError: invalid topic.
            TypeError: ``data`` is not JSON-serializable.
            ServerError: the server refused (e.g. code ``forbidden``).
            ConnectionBroken: the link dropped before the acknowledgement; outcome unknown.
            ConnectionClosed: the client has closed (code 1000).
            ReconnectFailed: the client has failed for good.
        """
        validate_topic(topic)
        encode_data(data)  # TypeError now, not after waiting for a link
        while True:
            link = await self._wait_link()
            ref = next(self._refs)
            pending = _Pending()
            link.pending[ref] = pending
            try:
                try:
                    await link.send(Publish(topic, data, ref).to_json())
                except _NotSent:
                    continue  # nothing left this process: safe to wait for the next link
                await pending.done.wait()
            finally:
                link.pending.pop(ref, None)
            if pending.error is not None:
                raise pending.error
            return pending.offset

    async def _wait_link(self) -> _Link:
        while True:
            if self._state is ClientState.CLOSED:
                raise self._closed_error()
            link = self._link
            if link is not None and link.alive:
                await trio.lowlevel.checkpoint()
                return link
            await self._changed.wait()

    async def aclose(self) -> None:
        """Close the connection with code 1000; the client will not reconnect. Idempotent."""
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        try:
            self._set_state(StateChange(ClientState.CLOSED, 1000, "closed by the client"))
            self._close_subscriptions(None)
            link = self._link
            if link is not None and link.alive:
                # The attempt's task closes the link (it must keep the WebSocket reader running
                # until the server answers the close frame); wait for it, within bounds.
                link.close_code, link.close_reason = 1000, "client closed"
                link.fail(ConnectionClosed(1000, "closed by the client"))
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self._run_done.wait()
        finally:
            self._run_scope.cancel()

    # --------------------------------------------------------------------------- supervisor

    async def _run(self) -> None:
        try:
            with self._run_scope:
                try:
                    await self._supervise()
                except ReconnectFailed as exc:
                    # Cancelled from outside at the same moment: that wins, nothing failed.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    self._fail(exc)
        finally:
            self._run_done.set()

    def _fail(self, exc: ReconnectFailed) -> None:
        self._fatal = exc
        cause = exc.cause
        code = cause.code if isinstance(cause, ConnectionClosed) else None
        self._set_state(StateChange(ClientState.CLOSED, code, str(exc), exc))
        self._close_subscriptions(exc)
        if self._body_scope is not None:
            self._body_scope.cancel()

    def _classify(self, cause: TrioconnError) -> CloseAction:
        if isinstance(cause, ConnectionClosed):
            return close_action(cause.code, self._close_codes)
        if isinstance(cause, HandshakeRejected):
            if cause.status in (408, 425, 429) or cause.status >= 500:
                return CloseAction.RECONNECT
            return CloseAction.FAIL  # 401/403 and other refusals retrying cannot fix
        if isinstance(cause, ProtocolError):
            return CloseAction.FAIL
        return CloseAction.RECONNECT

    async def _supervise(self) -> None:
        failures = 0  # consecutive failed attempts since the last healthy connection
        reauth_available = True
        immediate = False
        while True:
            if failures and not immediate:
                await trio.sleep(self._backoff.delay(failures, self._rng))
            immediate = False
            token = await self._fresh_token()
            self._counters.attempts += 1
            self._opened_at = None
            cause = await self._attempt(token)
            if self._closing:
                return
            opened_at = self._opened_at
            if opened_at is not None and trio.current_time() - opened_at >= self._min_uptime:
                failures = 0
                reauth_available = True
            action = self._classify(cause)
            logger.debug("connection ended (%s): %s", action.value, cause)
            if action is CloseAction.REAUTH:
                if self._token_provider is not None and reauth_available:
                    reauth_available = False
                    immediate = True
                    action = CloseAction.RECONNECT
                else:
                    action = CloseAction.FAIL
            if action is CloseAction.DONE:
                code = cause.code if isinstance(cause, ConnectionClosed) else None
                reason = cause.reason if isinstance(cause, ConnectionClosed) else str(cause)
                self._set_state(StateChange(ClientState.CLOSED, code, reason or "done", cause))
                self._close_subscriptions(None)
                return
            if action is CloseAction.FAIL:
                raise ReconnectFailed(f"connection failed for good: {cause}", cause) from cause
            failures += 1
            max_attempts = self._backoff.max_attempts
            if not immediate and max_attempts is not None and failures >= max_attempts:
                raise ReconnectFailed(
                    f"gave up after {failures} failed attempt(s); last: {cause}", cause
                ) from cause
            self._set_state(
                StateChange(
                    ClientState.RECONNECTING if self._ever_open else ClientState.CONNECTING,
                    cause.code if isinstance(cause, ConnectionClosed) else None,
                    str(cause),
                    cause,
                )
            )

    async def _fresh_token(self) -> str | None:
        if self._token_provider is None:
            return None
        try:
            token = await self._token_provider()
        except Exception as exc:
            raise ReconnectFailed(f"the token provider failed: {exc!r}", exc) from exc
        if not isinstance(token, str) or not token or any(ch in token for ch in "\r\n\0"):
            error = ValueError(f"the token provider must return a non-empty str without CR/LF, got {token!r}")
            raise ReconnectFailed(str(error), error)
        return token

    def _request(self, token: str | None) -> tuple[str, Headers]:
        if token is None:
            return self._url, []
        parts = urllib.parse.urlsplit(self._url)
        query = [
            (k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "token"
        ]
        query.append(("token", token))
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        return url, [(b"authorization", f"Bearer {token}".encode())]

    async def _attempt(self, token: str | None) -> TrioconnError:
        """Run one connection from handshake to end; return why it ended."""
        url, headers = self._request(token)
        try:
            async with trio.open_nursery() as nursery:
                await self._session(nursery, url, headers)
        except BaseException as exc:
            cause = _translate(exc)
            if isinstance(cause, TrioconnError):
                return cause
            if cause is not exc:
                _reraise(cause)
            raise
        raise AssertionError("a session always ends with an exception")  # pragma: no cover

    async def _session(self, nursery: trio.Nursery, url: str, headers: Headers) -> NoReturn:
        ws: trio_websocket.WebSocketConnection | None = None
        link: _Link | None = None
        # 1001 (going away): we end the link only to replace it, unless aclose() says 1000.
        code, reason = 1001, ""
        try:
            try:
                with trio.fail_after(self._connect_timeout):
                    ws = await self._transport(nursery, url, headers)
                    welcome = await self._receive_welcome(ws)
            except trio.TooSlowError:
                raise ConnectionBroken(
                    f"no welcome from the server within connect_timeout ({self._connect_timeout:g} s)"
                ) from None
            link = _Link(ws, welcome)
            await self._serve(link)
        except ProtocolError:
            code, reason = 1002, "protocol error"
            raise
        finally:
            if link is not None:
                self._drop(link)
                if link.failure is not None:
                    code, reason = link.close_code, link.close_reason
            if ws is not None:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose(code, reason)
            nursery.cancel_scope.cancel()

    async def _receive_welcome(self, ws: trio_websocket.WebSocketConnection) -> Welcome:
        frames = parse_server_frames(await ws.get_message())
        if len(frames) != 1 or not isinstance(frames[0], Welcome):
            raise ProtocolError("unexpected-frame", "the first frame from the server must be 'welcome'")
        return frames[0]

    def _drop(self, link: _Link) -> None:
        """The link is over: fail what waited on it and forget per-connection state."""
        link.alive = False
        if self._link is link:
            self._link = None
        for pending in link.pending.values():
            if not pending.done.is_set():
                pending.error = ConnectionBroken(
                    "the connection was lost before the server acknowledged the publish; "
                    "it may or may not have been stored"
                )
                pending.done.set()
        link.pending.clear()
        for sub in self._subs.values():
            sub._answered = False
        self._notify()

    async def _serve(self, link: _Link) -> NoReturn:
        self._link = link
        self._opened_at = trio.current_time()
        self._counters.connects += 1
        if self._ever_open:
            self._counters.reconnects += 1
        self._ever_open = True
        self._set_state(StateChange(ClientState.OPEN, reason=f"session {link.welcome.session}"))
        with trio.CancelScope(deadline=trio.current_time() + link.window) as watchdog:
            link.watchdog = watchdog
            for sub in list(self._subs.values()):
                await self._send_subscribe(link, sub)
            while True:
                message = await link.ws.get_message()
                watchdog.deadline = trio.current_time() + link.window
                for frame in parse_server_frames(message):
                    await self._dispatch(link, frame)
        if link.failure is not None:
            raise link.failure
        raise ConnectionBroken(
            f"heartbeat: nothing from the server for {link.window:g} s "
            f"(its timeout {link.welcome.heartbeat_timeout:g} s + one ping interval)"
        )

    async def _deliver(self, link: _Link, sub: Subscription, item: SubscriptionItem) -> None:
        if sub._send_nowait(item):
            return
        # The consumer is behind. While we wait for it the silence is ours, not the server's,
        # so the watchdog pauses.
        assert link.watchdog is not None
        link.watchdog.deadline = math.inf
        await sub._send_item(item)
        link.watchdog.deadline = trio.current_time() + link.window

    async def _dispatch(self, link: _Link, frame: ServerFrame) -> None:
        counters = self._counters
        if isinstance(frame, Event):
            counters.events_received += 1
            sub = self._subs.get(frame.topic)
            if sub is not None:
                item = sub._on_event(frame)
                if item is not None:
                    await self._deliver(link, sub, item)
        elif isinstance(frame, Ping):
            await link.send(Pong(frame.id).to_json())
            counters.pings_answered += 1
            if frame.rtt is not None:
                counters.last_rtt = frame.rtt
        elif isinstance(frame, Subscribed):  # also Reset
            sub = self._subs.get(frame.topic)
            if sub is None or not sub._matches(frame.ref):
                return
            if isinstance(frame, Reset):
                counters.resets += 1
            for answer_item in sub._on_answer(frame):
                await self._deliver(link, sub, answer_item)
        elif isinstance(frame, End):
            sub = self._subs.get(frame.topic)
            if sub is not None and sub._answered:
                del self._subs[frame.topic]
                sub._finish()
        elif isinstance(frame, Published):
            pending = link.pending.get(frame.ref) if isinstance(frame.ref, int) else None
            if pending is not None:
                pending.offset = frame.offset
                pending.done.set()
        elif isinstance(frame, Error):
            self._on_error(link, frame)
        elif isinstance(frame, Welcome):
            raise ProtocolError("unexpected-frame", "a second 'welcome' on the same connection")

    def _on_error(self, link: _Link, frame: Error) -> None:
        error = ServerError(frame.code, frame.message, frame.ref)
        pending = link.pending.get(frame.ref) if isinstance(frame.ref, int) else None
        if pending is not None:
            pending.error = error
            pending.done.set()
            return
        for topic, sub in self._subs.items():
            if frame.ref is not None and sub._ref == frame.ref:
                del self._subs[topic]
                sub._finish(error)
                return
        logger.warning("error frame from the server that answers nothing we sent: %s", error)


class _StateChanges:
    def __init__(self, client: Client, start: int) -> None:
        self._client = client
        self._next = start
        self._done = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StateChange:
        await trio.lowlevel.checkpoint()
        client = self._client
        while not self._done:
            history = client._history
            oldest, newest = history[0][0], history[-1][0]
            self._next = max(self._next, oldest)
            if self._next <= newest:
                change = history[self._next - oldest][1]
                self._next += 1
                self._done = change.state is ClientState.CLOSED
                return change
            await client._changed.wait()
        raise StopAsyncIteration


# --------------------------------------------------------------------------------------------
# Entry point


def connect(
    url: str,
    *,
    token_provider: Callable[[], Awaitable[str]] | None = None,
    connect_timeout: float = 10.0,
    backoff: BackoffPolicy | None = None,
    min_uptime: float = 10.0,
    close_codes: Mapping[int, CloseAction] | None = None,
    transport: Transport | None = None,
    rng: random.Random | None = None,
) -> AbstractAsyncContextManager[Client]:
    """Connect to a trioconn Hub and keep the connection up until the block ends.

    ``async with connect(url) as client:`` starts connecting in the background and enters the
    block at once (state ``connecting``). Leaving the block, or ``await client.aclose()``,
    closes with 1000; the client then never reconnects.

    Args:
        url: ``ws://host:port/path`` or ``wss://…``.
        token_provider: async callable returning a fresh token; called before every attempt.
            The token is sent as ``?token=`` and as ``Authorization: Bearer``. If it raises,
            the client fails with ``ReconnectFailed``.
        connect_timeout: seconds for TCP, TLS, the opening handshake and ``welcome`` together.
        backoff: the reconnect schedule (default ``Backoff()``: 0.5 s base, factor 2, 30 s cap,
            unlimited attempts, full jitter).
        min_uptime: seconds a connection must stay open before the failure counter resets.
        close_codes: overrides of the close-code table, code → ``CloseAction``.
        transport: opens the WebSocket (default ``tcp_transport``); see ``Transport``.
        rng: the random source of the backoff jitter (seed it for reproducible delays).

    Returns:
        An async context manager yielding the ``Client``.

    Raises:
        TypeError: an argument of the wrong type (raised at call time).
        ValueError: an argument out of range (raised at call time).
        ReconnectFailed: (when the block exits) attempts exhausted, or a final close code,
            handshake refusal or protocol error; ``cause`` holds the last failure. The block
            is cancelled when this happens.
    """
    client = Client(
        url,
        token_provider=token_provider,
        connect_timeout=connect_timeout,
        backoff=backoff,
        min_uptime=min_uptime,
        close_codes=close_codes,
        transport=transport,
        rng=rng,
    )
    return _run_client(client)


@asynccontextmanager
async def _run_client(client: Client) -> AsyncIterator[Client]:
    try:
        async with trio.open_nursery() as nursery:
            client._body_scope = nursery.cancel_scope
            nursery.start_soon(client._run)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        _reraise(_unwrap(group))
    if client._fatal is not None:
        raise client._fatal
