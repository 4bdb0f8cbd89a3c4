"""The client's public value types and its record of state changes.

``StateLog`` keeps the current state and the last few ``StateChange`` records; readers of
``client.state_changes()`` walk that record, so a slow reader misses nothing recent and no
reader can make the client wait. ``notify()`` wakes every task waiting for something about the
client to change (a state, a link coming up), which is how ``publish`` waits for a link.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, Self

import attrs
import trio

__all__ = ["ClientState", "ClientStatistics", "Counters", "StateChange", "StateLog"]

#: How many past state changes a slow ``state_changes()`` reader can still catch up on.
HISTORY: Final = 64


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

    While the client waits between attempts it records a change each time the wait changes
    (entered, paused, resumed, cut short by ``reconnect_now()``), so a status display can show
    a countdown from ``next_attempt_at``.

    Attributes:
        state: the state entered.
        code: the close code that caused it, if a close code did (a plain ``int``).
        reason: the close reason or a short description.
        exception: the trioconn error that caused it (``ConnectionClosed``, ``ConnectionBroken``,
            ``HandshakeRejected``, ``ProtocolError``, ``ReconnectFailed`` …), if any.
        next_attempt_at: when the next connection attempt starts, on the ``trio.current_time()``
            clock; None when no attempt is scheduled (open, paused, attempting now, closed).
    """

    state: ClientState
    code: int | None = None
    reason: str = ""
    exception: BaseException | None = attrs.field(default=None, eq=False)
    next_attempt_at: float | None = None


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
        subscriptions: live subscriptions (each ``client.subscribe()``; several of one topic
            share one on the wire).
        next_attempt_at: when the next attempt starts (``trio.current_time()`` clock), or None.
        paused: automatic reconnection is paused (``Client.pause()``).
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
    next_attempt_at: float | None = None
    paused: bool = False


@attrs.define
class Counters:
    """The client's running counters, shared by the supervisor and the link."""

    attempts: int = 0
    connects: int = 0
    reconnects: int = 0
    pings_answered: int = 0
    last_rtt: float | None = None
    events_received: int = 0
    resets: int = 0


class StateLog:
    """The current state, the recent changes, and the event that wakes waiters."""

    def __init__(self) -> None:
        self.state = ClientState.CONNECTING
        self.changed = trio.Event()
        self._seq = 0
        self.history: deque[tuple[int, StateChange]] = deque([(0, StateChange(self.state))], HISTORY)

    @property
    def last(self) -> StateChange:
        return self.history[-1][1]

    def record(self, change: StateChange) -> bool:
        """Enter ``change.state``; False (and nothing recorded) once the client is closed."""
        if self.state is ClientState.CLOSED:
            return False
        self.state = change.state
        self._seq += 1
        self.history.append((self._seq, change))
        self.notify()
        return True

    def notify(self) -> None:
        """Wake every task waiting on ``changed``."""
        self.changed.set()
        self.changed = trio.Event()

    def changes(self) -> StateChanges:
        return StateChanges(self, self.history[-1][0])


class StateChanges:
    """The iterator behind ``Client.state_changes()``."""

    def __init__(self, log: StateLog, start: int) -> None:
        self._log = log
        self._next = start
        self._done = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StateChange:
        await trio.lowlevel.checkpoint()
        log = self._log
        while not self._done:
            history = log.history
            oldest, newest = history[0][0], history[-1][0]
            self._next = max(self._next, oldest)
            if self._next <= newest:
                change = history[self._next - oldest][1]
                self._next += 1
                self._done = change.state is ClientState.CLOSED
                return change
            await log.changed.wait()
        raise StopAsyncIteration
