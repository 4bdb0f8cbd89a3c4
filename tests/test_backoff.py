"""The reconnect schedule is pure: same seed, same delays; no trio."""

from __future__ import annotations

import importlib.util
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from trioconn._core.backoff import Backoff, BackoffPolicy


def test_schedule_is_full_jitter_over_an_exponential_ceiling() -> None:
    policy = Backoff(base=0.5, factor=2.0, cap=8.0)
    expected_rng = random.Random(42)
    expected = [expected_rng.uniform(0, min(8.0, 0.5 * 2.0 ** (n - 1))) for n in range(1, 11)]
    rng = random.Random(42)
    assert [policy.delay(n, rng) for n in range(1, 11)] == expected


def test_ceiling_grows_then_caps() -> None:
    policy = Backoff(base=0.5, factor=2.0, cap=8.0)
    assert [policy.ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.ceiling(10_000) == 8.0  # no overflow


def test_delays_stay_within_their_ceiling() -> None:
    policy = Backoff(base=0.1, factor=3.0, cap=5.0)
    rng = random.Random(7)
    for failures in range(1, 200):
        assert 0 <= policy.delay(failures, rng) <= policy.ceiling(failures)


def test_same_seed_gives_the_same_schedule_and_other_seeds_differ() -> None:
    policy = Backoff(max_attempts=6)
    first = list(policy.schedule(random.Random(1)))
    assert first == list(policy.schedule(random.Random(1)))
    assert first != list(policy.schedule(random.Random(2)))
    assert len(first) == 5  # one delay before each of the 5 retries


def test_factor_one_is_a_constant_ceiling() -> None:
    assert {Backoff(base=2.0, factor=1.0, cap=2.0).ceiling(n) for n in range(1, 50)} == {2.0}


def test_backoff_satisfies_the_policy_protocol() -> None:
    assert isinstance(Backoff(), BackoffPolicy)


def test_unlimited_schedule_is_endless() -> None:
    schedule = Backoff().schedule(random.Random(0))
    assert len([next(schedule) for _ in range(1000)]) == 1000


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"base": 0}, ValueError, "base"),
        ({"base": -1}, ValueError, "base"),
        ({"base": math.nan}, ValueError, "base"),
        ({"base": "1"}, TypeError, "base"),
        ({"factor": 0.5}, ValueError, "factor"),
        ({"cap": math.inf}, ValueError, "cap"),
        ({"base": 2.0, "cap": 1.0}, ValueError, "cap"),
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts"),
        ({"max_attempts": True}, TypeError, "max_attempts"),
    ],
)
def test_invalid_arguments_are_refused_with_a_clear_message(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_failures_must_be_positive() -> None:
    with pytest.raises(ValueError, match="failures"):
        Backoff().delay(0, random.Random())


def test_backoff_module_does_not_import_trio() -> None:
    path = Path(__file__).parent.parent / "trioconn" / "_core" / "backoff.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('backoff_alone', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert 'trio' not in sys.modules, sorted(m for m in sys.modules if 'trio' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert importlib.util.find_spec("trioconn._core.backoff") is not None
