"""The reconnect decision is pure: every close code, every status, every counting rule; no trio."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trioconn import CLOSE_CODES, Backoff, CloseAction
from trioconn._core.decision import (
    AttemptEnd,
    Decision,
    EndKind,
    Tally,
    classify,
    decide,
    decision_table,
)

D, F, R, A = CloseAction.DONE, CloseAction.FAIL, CloseAction.RECONNECT, CloseAction.REAUTH
HEALTHY, SHORT = 60.0, 1.0  # uptimes around min_uptime=10


def run(
    end: AttemptEnd,
    tally: Tally | None = None,
    *,
    max_attempts: int | None = None,
    token: bool = False,
    overrides: dict[int, CloseAction] | None = None,
    seed: int = 0,
) -> Decision:
    return decide(
        end,
        tally or Tally(),
        backoff=Backoff(base=1.0, factor=2.0, cap=8.0, max_attempts=max_attempts),
        rng=random.Random(seed),
        min_uptime=10.0,
        has_token_provider=token,
        overrides=overrides,
    )


def closed(code: int, uptime: float | None = SHORT) -> AttemptEnd:
    return AttemptEnd(EndKind.CLOSED, code=code, uptime=uptime)


BROKEN = AttemptEnd(EndKind.BROKEN, reason="reset")
REFUSED_503 = AttemptEnd(EndKind.REJECTED, status=503)


TABLE = decision_table()


def table_action(code: int) -> str:
    table = TABLE
    for row in table["close_codes"]:
        if row["code"] == code:
            return str(row["action"])
    for row in table["unlisted_close_codes"]:
        if row["from"] <= code <= row["to"]:
            return str(row["action"])
    raise AssertionError(f"code {code} is not covered by the table")


# ----------------------------------------------------------------------------- the table


def test_decision_module_does_not_import_trio() -> None:
    # ``import trioconn`` imports trio (the hub, the client), so load the package without its
    # ``__init__`` and import only the decision and what it needs.
    package = Path(__file__).parent.parent / "trioconn"
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('trioconn'); package.__path__ = [{str(package)!r}]\n"
        "sys.modules['trioconn'] = package\n"
        "import trioconn._core.decision\n"
        "assert 'trio' not in sys.modules, sorted(m for m in sys.modules if 'trio' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_close_code_is_classified_as_the_exported_table_says() -> None:
    for code in range(1000, 5000):
        action = classify(closed(code))
        assert action.value == table_action(code), code
        if code in CLOSE_CODES:
            assert action is CLOSE_CODES[code].action


def test_the_table_rows_are_the_close_codes_table_and_the_ranges_cover_the_rest() -> None:
    table = decision_table()
    assert [row["code"] for row in table["close_codes"]] == list(CLOSE_CODES)
    covered = {row["code"] for row in table["close_codes"]}
    for row in table["unlisted_close_codes"]:
        span = set(range(row["from"], row["to"] + 1))
        assert not span & covered
        covered |= span
    assert covered == set(range(1000, 5000))
    assert table["unlisted_close_codes"][0] == {"from": 1004, "to": 1005, "action": "fail"}


def test_the_table_is_plain_json() -> None:
    table = decision_table()
    assert json.loads(json.dumps(table)) == table


def test_every_handshake_status_is_classified_as_the_exported_table_says() -> None:
    for status in range(100, 600):
        expected = R if status in (408, 425, 429) or 500 <= status <= 599 else F
        assert classify(AttemptEnd(EndKind.REJECTED, status=status)) is expected, status
        (row,) = [r for r in TABLE["handshake_statuses"] if r["from"] <= status <= r["to"]]
        assert row["action"] == expected.value, status


def test_ends_without_a_code_or_status() -> None:
    assert classify(AttemptEnd(EndKind.BROKEN)) is R
    assert classify(AttemptEnd(EndKind.TIMEOUT)) is R
    assert classify(AttemptEnd(EndKind.PROTOCOL_ERROR)) is F
    assert classify(AttemptEnd(EndKind.CERTIFICATE)) is F  # retrying cannot fix a certificate
    assert decision_table()["ends"] == {
        "protocol-error": "fail",
        "certificate": "fail",
        "broken": "reconnect",
        "timeout": "reconnect",
    }


def test_overrides_win_over_the_table() -> None:
    assert classify(closed(4403), {4403: R}) is R
    assert classify(closed(1000), {1000: R}) is R
    assert classify(closed(4403), {4000: D}) is F


def test_attempt_end_fields_match_their_kind() -> None:
    with pytest.raises(ValueError, match="close code"):
        AttemptEnd(EndKind.BROKEN, code=1000)
    with pytest.raises(ValueError, match="close code"):
        AttemptEnd(EndKind.CLOSED)
    with pytest.raises(ValueError, match="status"):
        AttemptEnd(EndKind.REJECTED)


# ------------------------------------------------------------------- one decision at a time


@pytest.mark.parametrize("uptime", [None, SHORT, HEALTHY])
@pytest.mark.parametrize("token", [False, True])
@pytest.mark.parametrize("code", [1000, 1002, 1003, 1007, 1008, 1009, 4403])
def test_final_codes_end_the_client_whatever_the_tally(code: int, token: bool, uptime: float | None) -> None:
    for tally in (Tally(), Tally(attempts=7, failures=7, reauth_used=True)):
        decision = run(closed(code, uptime), tally, token=token, max_attempts=3)
        assert decision.action is (D if code == 1000 else F)
        assert decision.delay == 0 and not decision.exhausted


def test_4401_without_a_token_provider_fails_at_once() -> None:
    decision = run(closed(4401), token=False)
    assert decision.action is F and not decision.exhausted


def test_4401_with_a_token_provider_reauths_once_without_counting_or_waiting() -> None:
    first = run(closed(4401), Tally(attempts=2, failures=2), token=True, max_attempts=2)
    assert first == Decision(A, 0.0, Tally(attempts=2, failures=2, reauth_used=True))
    again = run(closed(4401), first.tally, token=True)
    assert again.action is F
    # after a healthy link, the allowance is back
    assert run(closed(4401, HEALTHY), first.tally, token=True).action is A


def test_a_reauth_retry_is_not_counted_in_max_attempts() -> None:
    tally = Tally()  # the first attempt
    decision = run(closed(4401), tally, token=True, max_attempts=2)
    assert decision.action is A
    decision = run(BROKEN, decision.tally, token=True, max_attempts=2)  # the fresh-token retry broke
    assert decision.action is R  # attempt 2 of 2 follows
    decision = run(BROKEN, decision.tally, token=True, max_attempts=2)
    assert decision.action is F and decision.exhausted


@pytest.mark.parametrize("kind", [EndKind.BROKEN, EndKind.TIMEOUT])
def test_broken_links_and_timeouts_reconnect_after_a_jittered_delay(kind: EndKind) -> None:
    for failures in range(0, 12):
        decision = run(AttemptEnd(kind), Tally(attempts=1, failures=failures), seed=failures)
        assert decision.action is R
        ceiling = Backoff(base=1.0, factor=2.0, cap=8.0).ceiling(failures + 1)
        assert 0 <= decision.delay <= ceiling
        assert decision.delay == Backoff(base=1.0, cap=8.0).delay(failures + 1, random.Random(failures))
        assert decision.tally == Tally(attempts=2, failures=failures + 1)


def test_losing_a_healthy_link_starts_the_count_and_the_backoff_again() -> None:
    decision = run(closed(1012, HEALTHY), Tally(attempts=9, failures=9, reauth_used=True), max_attempts=3)
    assert decision.action is R
    assert decision.tally == Tally(attempts=1, failures=1, reauth_used=False)
    assert decision.delay <= 1.0  # delay(1): still jittered, a crowd must not return at once


def test_a_short_lived_link_counts_as_a_failed_attempt() -> None:
    decision = run(closed(1012, SHORT), Tally(attempts=3, failures=3), max_attempts=3)
    assert decision.action is F and decision.exhausted


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_max_attempts_is_the_number_of_reconnect_attempts_after_a_healthy_link_is_lost(
    max_attempts: int,
) -> None:
    decision = run(closed(1001, HEALTHY), Tally(), max_attempts=max_attempts)
    reconnects = 0
    while decision.action is R:
        reconnects += 1
        decision = run(BROKEN, decision.tally, max_attempts=max_attempts)
    assert decision.action is F and decision.exhausted
    assert reconnects == max_attempts


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_max_attempts_counts_the_first_attempt_of_a_new_client(max_attempts: int) -> None:
    attempts = 1
    decision = run(REFUSED_503, Tally(), max_attempts=max_attempts)
    while decision.action is R:
        attempts += 1
        decision = run(REFUSED_503, decision.tally, max_attempts=max_attempts)
    assert decision.exhausted and attempts == max_attempts


def test_unlimited_attempts_never_give_up() -> None:
    tally = Tally()
    for _ in range(10_000):
        decision = run(BROKEN, tally)
        assert decision.action is R
        tally = decision.tally
    assert tally.attempts == 10_001


def test_every_combination_keeps_the_invariants() -> None:
    ends: list[AttemptEnd] = [
        *(
            closed(code, uptime)
            for code in (*CLOSE_CODES, 1004, 2999, 3000, 4999)
            for uptime in (None, SHORT, HEALTHY)
        ),
        *(AttemptEnd(EndKind.REJECTED, status=s) for s in (401, 403, 404, 429, 503)),
        *(
            AttemptEnd(kind, uptime=u)
            for kind in (EndKind.BROKEN, EndKind.TIMEOUT, EndKind.PROTOCOL_ERROR, EndKind.CERTIFICATE)
            for u in (None, HEALTHY)
        ),
    ]
    tallies = [Tally(a, f, r) for a, f, r in itertools.product((0, 1, 2, 3), (0, 1, 5), (False, True))]
    for end, tally, token, max_attempts in itertools.product(ends, tallies, (False, True), (None, 3)):
        decision = run(end, tally, token=token, max_attempts=max_attempts)
        healthy = end.uptime is not None and end.uptime >= 10.0
        base = Tally(0, 0, False) if healthy else tally
        action = classify(end)
        context: Any = (end, tally, token, max_attempts, decision)
        if decision.action is not R:
            assert decision.delay == 0, context
        if decision.action is A:
            assert action is A and token and not base.reauth_used, context
            assert decision.tally == Tally(base.attempts, base.failures, True), context
        elif action is A:
            assert decision.action is F, context
        if decision.action is R:
            assert action is R, context
            assert decision.tally.attempts == base.attempts + 1, context
            assert decision.tally.failures == base.failures + 1, context
        if decision.exhausted:
            assert action is R and max_attempts is not None and base.attempts >= max_attempts, context
        if action in (D, F):
            assert decision.action is action and not decision.exhausted, context
