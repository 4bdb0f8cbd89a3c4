"""The reconnect decision: what the client does after a connection attempt ends. No I/O, no trio.

Theory of operation
-------------------
Every connection attempt ends, and the end is described once, as an ``AttemptEnd``: a close
frame received from the server (its code decides, whatever failed afterwards while sending), an
HTTP status refusing the opening handshake, a server frame that broke the protocol, a server
certificate that failed TLS verification, a broken transport (refused, reset, end of stream), or
a local timeout (connect, heartbeat, send). With how long the link had been open (``uptime``),
that is all the decision looks at.

``classify`` maps an end to a ``CloseAction`` through the one close-code table
(``CLOSE_CODES`` in ``_protocol``) and the handshake-status rule below. ``decide`` adds what must
be remembered between attempts (a ``Tally``) and returns a ``Decision``:

* ``DONE``: end normally (close 1000);
* ``FAIL``: give up and raise (final codes, auth refusals, protocol errors, an untrusted
  certificate, attempts exhausted): retrying cannot fix any of them;
* ``REAUTH``: reconnect at once with a fresh token; only with a token provider and once per
  healthy link; this retry is not counted in ``max_attempts`` and waits for no backoff;
* ``RECONNECT``: wait ``delay`` seconds, then try again.

Counting. ``max_attempts`` is the number of connection attempts in a row that may fail. An
attempt has failed if it never reached ``welcome`` or its link lasted less than ``min_uptime``;
a link that lasted ``min_uptime`` is *healthy*, and losing it is not a failure: the count starts
again from zero, so with ``max_attempts=5`` a dropped healthy connection gets 5 reconnect
attempts. The very first attempt counts (``max_attempts=3`` means at most 3 attempts to get the
first connection). The backoff ceiling grows with every consecutive unhealthy end (the loss of a
healthy link counts as the first, so even it waits a jittered ``delay(1)``: a crowd of clients
that lost the same server does not come back in the same instant).

``decision_table()`` gives the rules as plain JSON-able data, so other clients (the browser
client) can be tested against the same table.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from typing import Any

import attrs

from .backoff import BackoffPolicy
from .protocol import CLOSE_CODES, HANDSHAKE_RETRY_STATUSES, CloseAction, close_action

__all__ = [
    "HANDSHAKE_RETRY_STATUSES",
    "AttemptEnd",
    "Decision",
    "EndKind",
    "Tally",
    "classify",
    "decide",
    "decision_table",
]


class EndKind(enum.Enum):
    """What ended a connection attempt."""

    #: The server sent a close frame (``code``, ``reason``). It decides, whatever happened after.
    CLOSED = "closed"
    #: The server answered the opening handshake with an HTTP status (``status``).
    REJECTED = "rejected"
    #: A frame from the server broke protocol v1 (a bad ``welcome``, invalid JSON, a bad field).
    PROTOCOL_ERROR = "protocol-error"
    #: The server's TLS certificate failed verification (untrusted issuer, wrong host name,
    #: expired). Final: retrying cannot fix a certificate.
    CERTIFICATE = "certificate"
    #: The transport failed without a close frame: refused, reset, end of stream, another TLS error.
    BROKEN = "broken"
    #: A local deadline passed: connect timeout, heartbeat (dead link), or a send that hung.
    TIMEOUT = "timeout"


@attrs.frozen
class AttemptEnd:
    """How one connection attempt ended; the input of ``decide``.

    Attributes:
        kind: what ended it.
        code: the close code received (``CLOSED`` only).
        reason: the close reason, or a short description of the failure.
        status: the HTTP status of the refusal (``REJECTED`` only).
        uptime: seconds the link was open after ``welcome``; None if it never opened.
    """

    kind: EndKind
    code: int | None = None
    reason: str = ""
    status: int | None = None
    uptime: float | None = None

    def __attrs_post_init__(self) -> None:
        if (self.kind is EndKind.CLOSED) != (self.code is not None):
            raise ValueError("a close code is given exactly when the kind is CLOSED")
        if (self.kind is EndKind.REJECTED) != (self.status is not None):
            raise ValueError("an HTTP status is given exactly when the kind is REJECTED")


@attrs.frozen
class Tally:
    """What the decision remembers between attempts (start with ``Tally()``).

    Attributes:
        attempts: counted attempts since the last healthy link, the one that just ended included
            (the first attempt of a client counts, so a new client starts at 1).
        failures: consecutive unhealthy ends: the backoff's ``failures`` argument.
        reauth_used: the fresh-token retry has been spent (it comes back with a healthy link).
    """

    attempts: int = 1
    failures: int = 0
    reauth_used: bool = False


@attrs.frozen
class Decision:
    """What to do after an attempt ended.

    Attributes:
        action: ``DONE``, ``FAIL``, ``REAUTH`` (at once, fresh token) or ``RECONNECT``.
        delay: seconds to wait before the next attempt (0 unless ``RECONNECT``).
        tally: the tally to pass to the next ``decide``.
        exhausted: ``FAIL`` only because ``max_attempts`` attempts in a row failed.
    """

    action: CloseAction
    delay: float
    tally: Tally
    exhausted: bool = False


def classify(end: AttemptEnd, overrides: Mapping[int, CloseAction] | None = None) -> CloseAction:
    """What the end of an attempt calls for, before counting attempts.

    Args:
        end: how the attempt ended.
        overrides: the client's ``close_codes`` overrides (code → action).

    Returns:
        The ``CloseAction`` from the close-code table (close frames), the handshake-status rule
        (refusals), ``FAIL`` for protocol errors and untrusted certificates, ``RECONNECT`` for
        broken links and timeouts.
    """
    if end.kind is EndKind.CLOSED:
        assert end.code is not None
        return close_action(end.code, overrides)
    if end.kind is EndKind.REJECTED:
        return CloseAction.RECONNECT if end.status in HANDSHAKE_RETRY_STATUSES else CloseAction.FAIL
    if end.kind in (EndKind.PROTOCOL_ERROR, EndKind.CERTIFICATE):
        return CloseAction.FAIL
    return CloseAction.RECONNECT


def decide(
    end: AttemptEnd,
    tally: Tally,
    *,
    backoff: BackoffPolicy,
    rng: random.Random,
    min_uptime: float,
    has_token_provider: bool,
    overrides: Mapping[int, CloseAction] | None = None,
) -> Decision:
    """Decide what follows the end of an attempt (see the module docstring for the rules).

    Args:
        end: how the attempt ended.
        tally: what earlier decisions remembered (``Tally()`` after the first attempt).
        backoff: the schedule (``delay(failures, rng)`` and ``max_attempts``).
        rng: the random source of the backoff jitter.
        min_uptime: seconds a link must have lasted to count as healthy.
        has_token_provider: whether a fresh token can be fetched (4401 → ``REAUTH``).
        overrides: the client's ``close_codes`` overrides.

    Returns:
        The ``Decision``; pass ``decision.tally`` to the next call.
    """
    if end.uptime is not None and end.uptime >= min_uptime:
        tally = Tally(attempts=0, failures=0, reauth_used=False)
    action = classify(end, overrides)
    if action is CloseAction.REAUTH:
        if has_token_provider and not tally.reauth_used:
            return Decision(CloseAction.REAUTH, 0.0, attrs.evolve(tally, reauth_used=True))
        action = CloseAction.FAIL
    if action is not CloseAction.RECONNECT:
        return Decision(action, 0.0, tally)
    failures = tally.failures + 1
    max_attempts = backoff.max_attempts
    if max_attempts is not None and tally.attempts >= max_attempts:
        return Decision(CloseAction.FAIL, 0.0, attrs.evolve(tally, failures=failures), exhausted=True)
    delay = backoff.delay(failures, rng)
    return Decision(
        CloseAction.RECONNECT, delay, attrs.evolve(tally, attempts=tally.attempts + 1, failures=failures)
    )


def _ranges(codes: range, action_of: Any) -> list[dict[str, Any]]:
    """Group consecutive codes with the same action into ``{from, to, action}`` rows."""
    rows: list[dict[str, Any]] = []
    for code in codes:
        action = action_of(code)
        if action is None:
            continue
        if rows and rows[-1]["to"] == code - 1 and rows[-1]["action"] == action:
            rows[-1]["to"] = code
        else:
            rows.append({"from": code, "to": code, "action": action})
    return rows


def decision_table() -> dict[str, Any]:
    """The reconnect rules as plain JSON-able data, for other clients and their tests.

    Returns:
        ``close_codes``: the rows of ``CLOSE_CODES`` (code, name, action, meaning);
        ``unlisted_close_codes``: ranges ``{from, to, action}`` covering every other code in
        1000-4999; ``handshake_statuses``: ranges covering 100-599; ``ends``: the action for each
        ``EndKind`` that carries no code or status; ``reauth``: the fresh-token rule.
    """
    return {
        "close_codes": [
            {"code": info.code, "name": info.name, "action": info.action.value, "meaning": info.meaning}
            for info in CLOSE_CODES.values()
        ],
        "unlisted_close_codes": _ranges(
            range(1000, 5000),
            lambda code: None if code in CLOSE_CODES else close_action(code).value,
        ),
        "handshake_statuses": _ranges(
            range(100, 600),
            lambda status: classify(AttemptEnd(EndKind.REJECTED, status=status)).value,
        ),
        "ends": {
            kind.value: classify(AttemptEnd(kind)).value
            for kind in EndKind
            if kind not in (EndKind.CLOSED, EndKind.REJECTED)
        },
        "reauth": {
            "with_token_provider": "reconnect at once with a fresh token, once per healthy link, "
            "not counted in max_attempts",
            "without_token_provider": CloseAction.FAIL.value,
        },
    }
