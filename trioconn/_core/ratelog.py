"""A log line for a recurring condition, written at most once per period.

A peer that floods us with the same oddity (thousands of unmatched ``error`` frames a second,
sockets arriving while the process is out of descriptors) must not flood the log. The next line
written after a quiet period says how many were left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Writes a repeated log line at most once per ``period`` seconds (of the given clock), per key."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float], period: float = 10.0) -> None:
        self._clock = clock
        self._logger = logger
        self._period = period
        #: key -> [time until which the key is quiet, lines left out meanwhile]
        self._quiet: dict[str, list[float]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        self._log(logging.WARNING, key, message, args)

    def exception(self, key: str, message: str, *args: object) -> None:
        """Log at ERROR with the traceback of the exception being handled (rate-limited too)."""
        self._log(logging.ERROR, key, message, args, exc_info=True)

    def _log(
        self, level: int, key: str, message: str, args: tuple[object, ...], exc_info: bool = False
    ) -> None:
        now = self._clock()
        quiet = self._quiet.get(key)
        if quiet is not None and now < quiet[0]:
            quiet[1] += 1
            return
        skipped = int(quiet[1]) if quiet is not None else 0
        self._quiet[key] = [now + self._period, 0]
        if skipped:
            message += " (and %d more like it not logged)"
            args = (*args, skipped)
        self._logger.log(level, message, *args, exc_info=True if exc_info else None)
