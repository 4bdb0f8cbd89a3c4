"""The reconnecting client: ``async with trioconn.connect(url) as client``.

Theory of operation
-------------------
``connect()`` opens a nursery that runs one supervisor task (``Client._run``) beside the caller's
block. The supervisor loops over *attempts*. Each attempt opens its own nursery (the transport's
reader task lives there, and the socket dies with it), waits for ``welcome`` within
``connect_timeout``, then hands the connection to a ``Link`` (``link.py``) that serves it until
it ends.

How the attempt ended is described once, as an ``AttemptEnd``, and a close frame received from
the server always decides: when the attempt unwinds, before the client sends any close frame of
its own, it looks at the WebSocket; if the server's close frame was read, its code is the end,
whatever else failed afterwards (a ``pong`` or a ``subscribe`` that could not be sent because
the connection was already closing). The pure ``decide`` (``trioconn/_core/decision.py``) turns the
end into done / fail / reauth / reconnect after a delay; this module only carries that out.

Ending a link: the client sends a close frame only when it chose to end a link whose peer is
alive: ``aclose()`` (1000) and a protocol error from the server (1002), each bounded by
``CLOSE_TIMEOUT``. A dead link (nothing heard for ``timeout + interval``, or a send that could
not finish within the heartbeat timeout) is abandoned at once: the socket is closed without a
closing handshake, because a peer that stopped answering would not answer that either. A
received close frame has already been answered by trio-websocket.

Between attempts the supervisor waits until ``next_attempt_at``. ``pause()`` makes the wait
open-ended, ``resume()`` restores the deadline and ``reconnect_now()`` ends the wait at once;
each change of the wait is recorded as a ``StateChange`` so a status display can follow it.

States::

    connecting ──open──▶ open ──link lost──▶ reconnecting ──open──▶ open …
        │                 │                     │
        └─────────────────┴─────────────────────┴──▶ closed (1000, aclose(), or failure)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Final, NoReturn

import sniffio
import trio
import trio_websocket

from .._core.backoff import Backoff, BackoffPolicy
from .._core.codec import JsonCodec, JsonDumps, JsonLoads, check_hook
from .._core.decision import AttemptEnd, EndKind, Tally, decide
from .._core.exceptions import (
    ConnectionBroken,
    ConnectionClosed,
    HandshakeRejected,
    ProtocolError,
    ReconnectFailed,
    RequestTimeout,
    TrioconnError,
    UntrustedCertificate,
)
from .._core.protocol import (
    CloseAction,
    Publish,
    Request,
    Unsubscribe,
    Welcome,
    parse_server_frames,
    validate_topic,
)
from .errors import redact, reraise, translate, unwrap_nursery_group
from .link import Link, LinkClosing, Pending, RateLimitedLog
from .state import ClientState, ClientStatistics, Counters, StateChange, StateLog
from .subscription import Feed, Subscription
from .transport import Headers, Transport, tcp_transport

__all__ = ["CLOSE_TIMEOUT", "Client", "connect"]

logger = logging.getLogger("trioconn.client")

#: Bound on the closing handshake; after it the socket is closed without waiting for the peer.
CLOSE_TIMEOUT: Final = 5.0
#: The longest session id quoted in a state change's reason.
_SESSION_SHOWN: Final = 64


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


def _check_ssl_context(ssl_context: object, url: str, transport: object) -> ssl.SSLContext:
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, not {type(ssl_context).__name__}")
    if not url.lower().startswith("wss:"):
        raise ValueError(f"ssl_context is only used with wss:// URLs, and url is {url!r}")
    if transport is not None:
        raise ValueError(
            "ssl_context is for the default transport; with a transport of your own, give it the "
            "context (e.g. functools.partial(trioconn.tcp_transport, ssl_context=...))"
        )
    return ssl_context


def _encode(codec: JsonCodec, data: object) -> str:
    """``data`` as JSON text (the client's ``json_dumps``, checked); ``TypeError`` saying why not."""
    try:
        return codec.encode(data)
    except TypeError as exc:
        message = str(exc)
        if not message.startswith(("data ", "json_dumps ")):
            message = f"data is not JSON-serializable: {message}"
        raise TypeError(message) from exc.__cause__


def _check_trio(what: str) -> None:
    """Raise a clear ``TrioconnError`` when called from another event loop than trio's.

    Outside any event loop it passes: ``connect()`` may be called anywhere, the block must run
    under trio.
    """
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return
    if library != "trio":
        raise TrioconnError(
            f"{what} runs on trio, but it was called from {library}. Run the client under trio "
            "(trio.run(main)); from an asyncio program, run it in a thread of its own "
            "(threading.Thread(target=trio.run, args=(main,)), handing results back with "
            "loop.call_soon_threadsafe), or use the browser client trioconn.js in web pages. "
            "(The Hub itself runs on asyncio: see trioconn.asgi.)"
        )


def _valid_token(token: object) -> bool:
    """A bearer token (RFC 6750): visible ASCII, no spaces, quotes or control characters."""
    return isinstance(token, str) and bool(token) and all("!" <= ch <= "~" for ch in token)


class _Attempt:
    """What one attempt saw, gathered while it unwinds; ``conclude`` describes how it ended."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.opened_at: float | None = None
        #: the close frame the server sent (code, reason), read before we sent one of our own.
        self.received: tuple[int, str] | None = None
        #: a local deadline ended it (connect timeout, dead link).
        self.timed_out = False

    def note_close(self, ws: trio_websocket.WebSocketConnection) -> None:
        closed = ws.closed
        if closed is not None and closed.code != 1006:
            self.received = (int(closed.code), redact(closed.reason or "", self.secret))

    def conclude(self, error: TrioconnError) -> tuple[AttemptEnd, TrioconnError]:
        uptime = None if self.opened_at is None else trio.current_time() - self.opened_at
        if self.received is not None:
            code, reason = self.received
            if type(error) is not ConnectionClosed or error.code != code:
                error = ConnectionClosed(code, reason)
            return AttemptEnd(EndKind.CLOSED, code=code, reason=reason, uptime=uptime), error
        if isinstance(error, HandshakeRejected):
            return AttemptEnd(EndKind.REJECTED, status=error.status, reason=str(error), uptime=uptime), error
        if isinstance(error, ProtocolError):
            return AttemptEnd(EndKind.PROTOCOL_ERROR, reason=str(error), uptime=uptime), error
        if isinstance(error, UntrustedCertificate):
            return AttemptEnd(EndKind.CERTIFICATE, reason=str(error), uptime=uptime), error
        if isinstance(error, ConnectionClosed) and not isinstance(error, ConnectionBroken):
            return AttemptEnd(EndKind.CLOSED, code=error.code, reason=error.reason, uptime=uptime), error
        kind = EndKind.TIMEOUT if self.timed_out else EndKind.BROKEN
        return AttemptEnd(kind, reason=str(error), uptime=uptime), error


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
        ssl_context: ssl.SSLContext | None = None,
        json_dumps: JsonDumps | None = None,
        json_loads: JsonLoads | None = None,
    ) -> None:
        self._url = _check_url(url)
        check_hook("json_dumps", json_dumps)
        check_hook("json_loads", json_loads)
        self._codec = JsonCodec(json_dumps, json_loads)
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
        if ssl_context is not None:
            context = _check_ssl_context(ssl_context, self._url, transport)
            self._transport = partial(tcp_transport, ssl_context=context)
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, not {type(rng).__name__}")
        self._rng = rng if rng is not None else random.Random()

        self._log = StateLog()
        self._counters = Counters()
        #: one feed (wire subscription) per topic, shared by the local subscriptions.
        self._subs: dict[str, Feed] = {}
        self._link: Link | None = None
        self._refs = itertools.count(1)
        self._logs = RateLimitedLog(logger, trio.current_time)
        self._ever_open = False
        self._closing = False
        self._fatal: ReconnectFailed | None = None
        self._run_scope = trio.CancelScope()
        self._run_done = trio.Event()
        self._body_scope: trio.CancelScope | None = None
        # the wait between attempts (see pause, resume, reconnect_now)
        self._paused = False
        self._waiting = False
        self._deadline = 0.0  # of the current wait, while _waiting
        self._attempt_now_at: float | None = None  # set by reconnect_now() while _waiting
        self._wait_changed = trio.Event()

    # ------------------------------------------------------------------------------ state

    @property
    def state(self) -> ClientState:
        """The current ``ClientState``."""
        return self._log.state

    @property
    def paused(self) -> bool:
        """Whether automatic reconnection is paused (see ``pause()``)."""
        return self._paused

    def statistics(self) -> ClientStatistics:
        """Return a frozen snapshot of the client's counters."""
        c = self._counters
        return ClientStatistics(
            state=self._log.state,
            attempts=c.attempts,
            connects=c.connects,
            reconnects=c.reconnects,
            pings_answered=c.pings_answered,
            last_rtt=c.last_rtt,
            events_received=c.events_received,
            resets=c.resets,
            subscriptions=sum(len(feed.locals) for feed in self._subs.values()),
            next_attempt_at=self._next_attempt_at(),
            paused=self._paused,
        )

    def state_changes(self) -> AsyncIterator[StateChange]:
        """Iterate over state changes, starting with the current state; ends after ``closed``.

        A reader that falls more than 64 changes behind skips to the oldest one kept.
        """
        return self._log.changes()

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

    def _closed_error(self) -> TrioconnError:
        if self._fatal is not None:
            return ReconnectFailed(str(self._fatal), self._fatal.cause)
        final = self._log.last
        return ConnectionClosed(final.code or 1000, final.reason)

    def _close_subscriptions(self, error: BaseException | None) -> None:
        ready_error = error or self._closed_error()
        for feed in self._subs.values():
            feed.finish(error, ready_error)
        self._subs.clear()

    # ---------------------------------------------------------------------------- controls

    def pause(self) -> None:
        """Pause automatic reconnection: after the link is lost, wait until ``resume()``.

        The current connection (if any) is not touched. While paused, ``next_attempt_at`` is
        None and only ``reconnect_now()`` (one attempt) or ``resume()`` starts an attempt.
        """
        if not self._paused:
            self._paused = True
            self._poke()

    def resume(self) -> None:
        """Resume automatic reconnection; a wait whose delay has passed ends at once."""
        if self._paused:
            self._paused = False
            self._poke()

    def reconnect_now(self) -> bool:
        """Start the next connection attempt at once, skipping the rest of the backoff delay.

        Works while the client waits between attempts, paused or not; the attempt counts like
        any other against ``max_attempts``.

        Returns:
            True if an attempt was started early; False if the client was not waiting (it is
            connected, already attempting, or closed).
        """
        if not self._waiting or self._attempt_now_at is not None:
            return False
        self._attempt_now_at = trio.current_time()
        self._poke()
        return True

    def _next_attempt_at(self) -> float | None:
        if not self._waiting:
            return None
        if self._attempt_now_at is not None:
            return self._attempt_now_at
        return None if self._paused else self._deadline

    def _poke(self) -> None:
        self._wait_changed.set()
        self._wait_changed = trio.Event()

    # ---------------------------------------------------------------------------- requests

    def subscribe(
        self, topic: str, *, last: int | None = None, buffer_size: int = 256, presence: bool = False
    ) -> Subscription:
        """Subscribe to ``topic``; use the result with ``async with`` and ``async for``.

        The subscription lives across reconnects: after each one it is resumed from the last
        item delivered, so each event is seen exactly once, in order, or a ``ResetItem`` says
        that some could not be recovered.

        Several subscriptions to one topic on one client share one subscription on the wire;
        each has its own buffer. One made while another of the topic is open starts where
        that one is now: a state topic's current value first, or up to ``last`` recent events
        kept by the client (see ``docs/client.md``, "Several subscriptions to one topic").

        Args:
            topic: the topic name.
            last: replay up to this many recent events when the subscription starts.
            buffer_size: items queued for this subscription before the client stops reading
                from the server (backpressure; the server's slow-consumer policy applies).
            presence: also yield ``JoinItem`` and ``LeaveItem`` when the server sends presence
                for this topic (its ``authorize`` hook turns it on per subscriber).

        Raises:
            ValueError: invalid topic, ``last`` or ``buffer_size``.
            TypeError: an argument of the wrong type.
        """
        return Subscription(
            topic,
            last=last,
            buffer_size=buffer_size,
            presence=presence,
            register=self._register,
            unregister=self._unregister,
            decode=self._codec.decode_item if self._codec.loads is not None else None,
        )

    async def _register(self, sub: Subscription) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._log.state is ClientState.CLOSED:
            raise self._closed_error()
        feed = self._subs.get(sub.topic)
        if feed is not None:
            feed.add(sub)  # the wire subscription exists: nothing to send
            return
        feed = self._subs[sub.topic] = Feed(sub.topic)
        feed.add(sub)
        link = self._link
        if link is not None and link.alive:
            # If the link is going down, the next connection subscribes again.
            with contextlib.suppress(ConnectionBroken, LinkClosing):
                await link.subscribe(feed)

    async def _unregister(self, sub: Subscription) -> None:
        feed = sub._feed
        if feed is not None and sub in feed.locals and feed.remove(sub) and self._subs.get(sub.topic) is feed:
            del self._subs[sub.topic]
            link = self._link
            if link is not None and link.alive and feed.ref is not None:
                # Shielded: leaving the block while cancelled must still tell the server, or a
                # later subscribe to the same topic on this connection would be refused.
                # If the connection is gone, so is the subscription: nothing to do.
                with trio.CancelScope(shield=True), contextlib.suppress(ConnectionBroken, LinkClosing):
                    await link.send(Unsubscribe(sub.topic, next(self._refs)).to_json())
        sub._finish()

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
        data_json = _encode(self._codec, data)  # TypeError now, not after waiting for a link
        pending = await self._exchange(
            lambda ref: Publish(topic, None, ref).to_json(data_json=data_json),
            "the connection was lost before the server acknowledged the publish; "
            "it may or may not have been stored",
        )
        return pending.offset

    # A timeout of its own (not just the caller's cancel scope): its RequestTimeout says whether
    # the request left the client, which a cancelled scope cannot tell; the browser client's
    # request takes the same option.
    async def request(self, topic: str, data: Any, *, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """Ask the server's request handler for ``topic``; return its answer.

        The request travels on the live connection, after everything sent before it, and its
        answer comes in order with the subscriptions' events. While the client is disconnected
        this waits for the link to come back, within ``timeout``. It is never re-sent: if the
        link drops after the frame was sent, ``ConnectionBroken`` is raised, because the
        handler may or may not have run and running it twice could do the work twice.

        Args:
            topic: the topic whose handler answers (the server's ``hub.on_request``).
            data: any JSON-serializable value.
            timeout: seconds for the whole request (waiting for a link, sending, the answer);
                ``math.inf`` for none (bound it with your own cancel scope then).

        Returns:
            The handler's answer (JSON: dict, list, str, int, float, bool or None), through
            ``json_loads`` if the client has one (an exception it raises comes out of here).

        Raises:
            ValueError: invalid topic or ``timeout``.
            TypeError: ``data`` is not JSON-serializable, or ``timeout`` is not a number.
            ServerError: the server answered with ``error``: ``no-handler``, ``forbidden``,
                ``request-failed`` (the handler raised), ``request-timeout`` (the handler was
                too slow), ``too-many-requests``, or the handler's own ``RequestRefused`` code.
            RequestTimeout: no answer within ``timeout``.
            ConnectionBroken: the link dropped after the request was sent; outcome unknown.
            ConnectionClosed: the client has closed (code 1000).
            ReconnectFailed: the client has failed for good.
        """
        validate_topic(topic)
        data_json = _encode(self._codec, data)  # TypeError now, not after waiting for a link
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
        if not timeout > 0:  # NaN too
            raise ValueError(f"timeout must be > 0 seconds (math.inf: no limit), got {timeout!r}")
        sent: list[int] = []
        with trio.move_on_after(timeout):
            pending = await self._exchange(
                lambda ref: Request(topic, None, ref).to_json(data_json=data_json),
                "the connection was lost before the server answered the request; "
                "the handler may or may not have run",
                sent=sent,
            )
            return self._codec.decode(pending.data)
        if sent:
            raise RequestTimeout(
                f"request to {topic!r}: no answer within {timeout:g} s; the handler may or may not have run"
            )
        raise RequestTimeout(f"request to {topic!r}: no connection within {timeout:g} s; nothing was sent")

    async def _exchange(
        self, frame: Callable[[int], str], lost: str, *, sent: list[int] | None = None
    ) -> Pending:
        """Send ``frame(ref)`` on the live link and wait for the answer to ``ref``; never re-sent.

        Waits for a link first; a link that closes before the frame left this process is
        replaced (nothing was sent). Once sent, ``ref`` is appended to ``sent``, and a lost
        link raises ``ConnectionBroken(lost)``. A caller that stops waiting abandons ``ref``:
        its late answer is ignored.
        """
        while True:
            link = await self._wait_link()
            ref = next(self._refs)
            pending = Pending(lost)
            link.pending[ref] = pending
            try:
                try:
                    await link.send(frame(ref))
                except LinkClosing:
                    continue  # nothing left this process: safe to wait for the next link
                if sent is not None:
                    sent.append(ref)
                await pending.done.wait()
            finally:
                link.abandon(ref)
            if pending.error is not None:
                raise pending.error
            return pending

    async def _wait_link(self) -> Link:
        while True:
            if self._log.state is ClientState.CLOSED:
                raise self._closed_error()
            link = self._link
            if link is not None and link.alive:
                await trio.lowlevel.checkpoint()
                return link
            await self._log.changed.wait()

    async def aclose(self) -> None:
        """Close the connection with code 1000; the client will not reconnect. Idempotent."""
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        try:
            self._log.record(StateChange(ClientState.CLOSED, 1000, "closed by the client"))
            self._close_subscriptions(None)
            link = self._link
            if link is not None and link.alive:
                # The attempt's task closes the link (it must keep the WebSocket reader running
                # until the server answers the close frame); wait for it, within bounds.
                link.fail(ConnectionClosed(1000, "closed by the client"), close_with=(1000, "client closed"))
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
        self._log.record(StateChange(ClientState.CLOSED, code, str(exc), exc))
        self._close_subscriptions(exc)
        if self._body_scope is not None:
            self._body_scope.cancel()

    async def _supervise(self) -> None:
        tally = Tally()
        while True:
            token = await self._fresh_token()
            self._counters.attempts += 1
            end, cause = await self._attempt(token)
            if self._closing:
                return
            decision = decide(
                end,
                tally,
                backoff=self._backoff,
                rng=self._rng,
                min_uptime=self._min_uptime,
                has_token_provider=self._token_provider is not None,
                overrides=self._close_codes,
            )
            tally = decision.tally
            logger.debug("connection attempt ended (%s): %s", decision.action.value, cause)
            code = cause.code if isinstance(cause, ConnectionClosed) else None
            if decision.action is CloseAction.DONE:
                reason = cause.reason if isinstance(cause, ConnectionClosed) else str(cause)
                self._log.record(StateChange(ClientState.CLOSED, code, reason or "done", cause))
                self._close_subscriptions(None)
                return
            if decision.action is CloseAction.FAIL:
                if decision.exhausted:
                    message = f"gave up after {tally.attempts} failed attempt(s) in a row; last: {cause}"
                else:
                    message = f"connection failed for good: {cause}"
                raise ReconnectFailed(message, cause) from cause
            await self._wait_for_next_attempt(
                decision.delay, StateChange(self._waiting_state(), code, str(cause), cause)
            )

    def _waiting_state(self) -> ClientState:
        return ClientState.RECONNECTING if self._ever_open else ClientState.CONNECTING

    async def _wait_for_next_attempt(self, delay: float, change: StateChange) -> None:
        """Wait ``delay`` seconds, or as ``pause()``, ``resume()`` and ``reconnect_now()`` say."""
        self._deadline = trio.current_time() + delay
        self._waiting, self._attempt_now_at = True, None
        shown: float | None = -math.inf  # what the last recorded change said; nothing yet
        try:
            while True:
                at = self._next_attempt_at()
                if at != shown:
                    self._log.record(
                        StateChange(change.state, change.code, change.reason, change.exception, at)
                    )
                    shown = at
                if at is not None and trio.current_time() >= at:
                    return
                changed = self._wait_changed
                with trio.move_on_at(math.inf if at is None else at):
                    await changed.wait()
        finally:
            self._waiting, self._attempt_now_at = False, None

    async def _fresh_token(self) -> str | None:
        if self._token_provider is None:
            return None
        try:
            token = await self._token_provider()
        except Exception as exc:
            raise ReconnectFailed(f"the token provider failed: {exc!r}", exc) from exc
        if not _valid_token(token):
            error = ValueError(
                "the token provider must return a non-empty str of visible ASCII characters "
                f"(no spaces, CR/LF or other control characters); got a {type(token).__name__}"
                + (f" of length {len(token)}" if isinstance(token, str) else "")
            )
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

    async def _attempt(self, token: str | None) -> tuple[AttemptEnd, TrioconnError]:
        """Run one connection from handshake to end; return how it ended and the error for it."""
        url, headers = self._request(token)
        attempt = _Attempt(token)
        try:
            async with trio.open_nursery() as nursery:
                await self._session(nursery, url, headers, attempt)
        except BaseException as exc:
            error = translate(exc, token)
            if not isinstance(error, TrioconnError):
                if error is not exc:
                    reraise(error)
                raise
        else:  # pragma: no cover
            raise AssertionError("a session always ends with an exception")
        return attempt.conclude(error)

    async def _session(
        self, nursery: trio.Nursery, url: str, headers: Headers, attempt: _Attempt
    ) -> NoReturn:
        ws: trio_websocket.WebSocketConnection | None = None
        link: Link | None = None
        close_with: tuple[int, str] | None = None
        try:
            try:
                with trio.fail_after(self._connect_timeout):
                    ws = await self._transport(nursery, url, headers)
                    welcome = await self._receive_welcome(ws)
            except trio.TooSlowError:
                attempt.timed_out = True
                raise ConnectionBroken(
                    f"no welcome from the server within connect_timeout ({self._connect_timeout:g} s)"
                ) from None
            link = Link(
                ws,
                welcome,
                subs=self._subs,
                counters=self._counters,
                next_ref=self._refs.__next__,
                log=self._logs,
            )
            attempt.opened_at = trio.current_time()
            self._open(link)
            await link.run()
        except ProtocolError:
            close_with = (1002, "protocol error")
            raise
        finally:
            if ws is not None:
                attempt.note_close(ws)  # before we send a close frame of our own
            if link is not None:
                self._drop(link)
                attempt.timed_out = attempt.timed_out or link.dead
                close_with = link.close_with or close_with
            if ws is not None and close_with is not None and attempt.received is None:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose(*close_with)
            nursery.cancel_scope.cancel()

    async def _receive_welcome(self, ws: trio_websocket.WebSocketConnection) -> Welcome:
        frames = parse_server_frames(await ws.get_message())
        if len(frames) != 1 or not isinstance(frames[0], Welcome):
            raise ProtocolError("unexpected-frame", "the first frame from the server must be 'welcome'")
        return frames[0]

    def _open(self, link: Link) -> None:
        self._link = link
        self._counters.connects += 1
        if self._ever_open:
            self._counters.reconnects += 1
        self._ever_open = True
        self._log.record(
            StateChange(ClientState.OPEN, reason=f"session {link.welcome.session[:_SESSION_SHOWN]}")
        )

    def _drop(self, link: Link) -> None:
        link.drop()
        if self._link is link:
            self._link = None
        self._log.notify()


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
    ssl_context: ssl.SSLContext | None = None,
    json_dumps: JsonDumps | None = None,
    json_loads: JsonLoads | None = None,
) -> AbstractAsyncContextManager[Client]:
    """Connect to a trioconn Hub and keep the connection up until the block ends.

    ``async with connect(url) as client:`` starts connecting in the background and enters the
    block at once (state ``connecting``). Leaving the block, or ``await client.aclose()``,
    closes with 1000; the client then never reconnects.

    Args:
        url: ``ws://host:port/path`` or ``wss://…``.
        token_provider: async callable returning a fresh token; called before every attempt.
            The token is sent as ``?token=`` and as ``Authorization: Bearer``. If it raises,
            the client fails with ``ReconnectFailed``. The token never appears in an error
            message or a log line.
        connect_timeout: seconds for TCP, TLS, the opening handshake and ``welcome`` together.
        backoff: the reconnect schedule (default ``Backoff()``: 0.5 s base, factor 2, 30 s cap,
            unlimited attempts, full jitter). Its ``max_attempts`` is how many attempts in a row
            may fail: after a healthy link is lost, that many reconnect attempts.
        min_uptime: seconds a connection must stay open to count as healthy (the failure count
            and the backoff start again after a healthy link).
        close_codes: overrides of the close-code table, code → ``CloseAction``.
        transport: opens the WebSocket (default ``tcp_transport``); see ``Transport``.
        rng: the random source of the backoff jitter (seed it for reproducible delays).
        ssl_context: the TLS settings of a ``wss://`` connection, e.g. one that trusts a private
            CA (default: ``ssl.create_default_context()``, the system's CAs). Only with
            ``wss://`` and the default transport. A certificate that fails verification fails
            the client at once (``UntrustedCertificate``): retrying cannot fix it.
        json_dumps: encodes the data of ``publish`` and ``request`` (``str`` or UTF-8 ``bytes``, e.g.
            ``orjson.dumps`` or ``functools.partial(json.dumps, default=...)``). None: the
            standard library, strict. The text is checked as the protocol demands.
        json_loads: decodes received data (events, snapshots) before a subscription yields it,
            e.g. ``functools.partial(json.loads, object_hook=...)``; it is called in the task
            iterating the subscription, and an exception it raises comes out of ``async for``
            for that item; also the answer of ``request``. None: data as parsed.

    Returns:
        An async context manager yielding the ``Client``.

    Raises:
        TypeError: an argument of the wrong type (raised at call time).
        ValueError: an argument out of range, or ``ssl_context`` with ``ws://`` or with a
            ``transport`` (raised at call time).
        ReconnectFailed: (when the block exits) attempts exhausted, or a final close code,
            handshake refusal, untrusted certificate or protocol error; ``cause`` holds the last
            failure. The block is cancelled when this happens.
        TrioconnError: called from asyncio (or any event loop other than trio's); the message
            says what to do instead.
    """
    _check_trio("trioconn.connect()")
    client = Client(
        url,
        token_provider=token_provider,
        connect_timeout=connect_timeout,
        backoff=backoff,
        min_uptime=min_uptime,
        close_codes=close_codes,
        transport=transport,
        rng=rng,
        ssl_context=ssl_context,
        json_dumps=json_dumps,
        json_loads=json_loads,
    )
    return _run_client(client)


@asynccontextmanager
async def _run_client(client: Client) -> AsyncIterator[Client]:
    _check_trio("trioconn.connect()")
    try:
        async with trio.open_nursery() as nursery:
            client._body_scope = nursery.cancel_scope
            nursery.start_soon(client._run)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        reraise(unwrap_nursery_group(group))
    if client._fatal is not None:
        raise client._fatal
