"""The reconnect schedule: exponential backoff with full jitter. No I/O, no trio.

Theory of operation
-------------------
Before the ``n``-th reconnect attempt in a row (``n >= 1``) the client sleeps a delay drawn
uniformly from ``[0, min(cap, base * factor ** (n - 1))]`` ("full jitter", see the AWS
architecture blog post *Exponential Backoff And Jitter*): the ceiling grows exponentially so a
broken server is not hammered, and the randomness spreads a crowd of clients that lost the same
server so they do not all come back in the same instant.

The schedule is pure: given the same failure count and the same random source it returns the
same delay, so a test can seed ``random.Random`` and predict every delay. ``BackoffPolicy`` is the
small interface the client reads; pass any object that has it to replace the schedule.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["Backoff", "BackoffPolicy"]


@runtime_checkable
class BackoffPolicy(Protocol):
    """What the client needs from a reconnect schedule.

    Attributes:
        max_attempts: how many connection attempts in a row may fail before the client gives up
            (``None``: never give up; the caller bounds the wait with its own cancel scope). An
            attempt fails if it never reached ``welcome`` or its link lasted less than
            ``min_uptime``; losing a link that lasted longer is not a failure, so after it the
            client makes exactly ``max_attempts`` reconnect attempts. A new client's first
            attempt counts. The decision lives in ``trioconn/_core/decision.py``.
    """

    @property
    def max_attempts(self) -> int | None: ...

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait before reconnect attempt ``failures`` in a row (``failures >= 1``)."""
        ...


def _positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@attrs.frozen
class Backoff:
    """Exponential backoff with full jitter; the default reconnect schedule.

    Args:
        base: ceiling of the first delay, in seconds (default 0.5: a lost server that comes back
            at once is found again within half a second).
        factor: how much the ceiling grows after each further failure (default 2).
        cap: the largest ceiling, in seconds (default 30: a client never waits much longer than
            half a minute once the server is back).
        max_attempts: give up after this many failed attempts in a row: after a healthy link is
            lost, that many reconnect attempts (see ``BackoffPolicy``). ``None`` (the default)
            retries forever, because a live-data client usually wants to come back whenever
            the server does; bound it with your own cancel scope instead.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    max_attempts: int | None = None

    def __attrs_post_init__(self) -> None:
        _positive_number("base", self.base)
        _positive_number("factor", self.factor)
        _positive_number("cap", self.cap)
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if self.cap < self.base:
            raise ValueError(f"cap ({self.cap!r}) must be >= base ({self.base!r})")
        if self.max_attempts is not None:
            if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
                raise TypeError(
                    f"max_attempts must be an int or None, not {type(self.max_attempts).__name__}"
                )
            if self.max_attempts < 1:
                raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts!r}")

    def ceiling(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failures."""
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures!r}")
        # Compare exponents instead of computing factor ** n, which overflows for large n.
        if self.factor > 1 and (failures - 1) * math.log(self.factor) >= math.log(self.cap / self.base):
            return self.cap
        return min(self.cap, self.base * self.factor ** (failures - 1))

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after ``failures`` consecutive failed attempts: uniform in [0, ceiling]."""
        return rng.uniform(0.0, self.ceiling(failures))

    def schedule(self, rng: random.Random) -> Iterator[float]:
        """The delays after failure 1, 2, … (finite when ``max_attempts`` is set).

        For a new client with ``max_attempts = n`` there are ``n - 1`` delays: one before each
        retry after its first attempt. (After a healthy link is lost the client makes ``n``
        reconnect attempts, each after a delay: ``delay(1)`` … ``delay(n)``.)
        """
        failures = 1
        while self.max_attempts is None or failures < self.max_attempts:
            yield self.delay(failures, rng)
            failures += 1
