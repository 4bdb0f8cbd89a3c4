"""Keep trioconn's own nurseries out of the exceptions users see.

Theory of operation
-------------------
A trio nursery or anyio task group wraps whatever leaves it in an ``ExceptionGroup`` (strict
exception groups, the default since trio 0.25 and in anyio 4). When the nursery is trioconn's
implementation detail — the one inside ``Hub.serve``, ``hub.running()``, ``open_memory_link`` —
that group is a level the user did not ask for: ``serve`` on a busy port should raise
``OSError``, and an exception raised in the user's own ``async with`` block should come out as
itself.

``unwrap_group`` removes exactly that one level, as trio's guide recommends for nurseries that are
an implementation detail ("Designing for multiple errors") and as websockets' trio client does:

- one exception besides ``Cancelled`` in the group: that exception, even if it is itself a group
  (a user block that raised a group of several gets that very group back);
- only ``Cancelled``: the first of them, so cancellation keeps working;
- several exceptions besides ``Cancelled``: the group, unchanged — they really happened together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["unwrap_group"]


@contextmanager
def unwrap_group() -> Iterator[None]:
    """Around a nursery or task group: re-raise a one-exception group as that exception.

    The exception keeps its own traceback, ``__cause__`` and ``__context__``; the group is dropped.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        single = _single(group)
        if single is None:
            raise
        context = single.__context__
        try:
            raise single
        finally:
            single.__context__ = context  # not the group: it was never part of the story
            del single, context, group


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    cancelled = anyio.get_cancelled_exc_class()
    others = [exc for exc in group.exceptions if not isinstance(exc, cancelled)]
    if len(others) == 1:
        return others[0]
    if not others:
        return group.exceptions[0]
    return None
