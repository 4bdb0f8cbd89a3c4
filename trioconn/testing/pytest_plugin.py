"""pytest fixtures for testing code that uses trioconn; loaded by pytest through an entry point.

Installing trioconn registers this module as the pytest plugin ``trioconn`` (entry point
``pytest11``), so a project's tests can ask for the fixtures by name, with no import. They are
trio fixtures: they need pytest-trio, and the tests that use them are trio tests (``trio_mode =
true``, or ``@pytest.mark.trio``). See ``docs/testing.md``.

- ``trioconn_hub`` → ``RunningHub``: a ``Hub`` serving on a free port of 127.0.0.1 (``.hub``,
  ``.url``, ``.port``, ``.connect()``), closed after the test.
- ``trioconn_memory`` → ``MemoryHub``: a ``Hub`` behind an in-memory ``MemoryLink`` (``.hub``,
  ``.link``, ``.connect()``, ``.restart()``). A test that uses it runs in virtual time,
  ``MockClock(autojump_threshold=0)``, unless it asks for a clock fixture of its own
  (``mock_clock``, ``autojump_clock``).
- ``trioconn_fault_proxy`` → ``ProxiedHub``: a served ``Hub`` with a ``FaultProxy`` in front
  (``.hub``, ``.proxy``, ``.url`` through the proxy, ``.hub_url``, ``.connect()``).
- ``trioconn_hub_settings``: the ``Hub`` settings the three use (``{}``: the defaults);
  override it in a ``conftest.py`` or a test module to change them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing

from ._fixtures import (
    MemoryHub,
    ProxiedHub,
    RunningHub,
    open_memory_hub,
    open_proxied_hub,
    open_running_hub,
)

__all__ = [
    "pytest_collection_modifyitems",
    "trioconn_fault_proxy",
    "trioconn_hub",
    "trioconn_hub_settings",
    "trioconn_memory",
]


@pytest.fixture
def trioconn_hub_settings() -> dict[str, Any]:
    """Keyword arguments for the ``Hub`` of ``trioconn_hub``, ``trioconn_memory`` and
    ``trioconn_fault_proxy``; override this fixture to change them (e.g. a short heartbeat)."""
    return {}


@pytest.fixture
async def trioconn_hub(trioconn_hub_settings: dict[str, Any]) -> AsyncIterator[RunningHub]:
    """A ``Hub`` serving on a free port of 127.0.0.1; closed (1001 to its clients) after the test."""
    async with open_running_hub(trioconn_hub_settings) as running:  # type: ignore[arg-type]
        yield running


@pytest.fixture
async def trioconn_memory(trioconn_hub_settings: dict[str, Any]) -> AsyncIterator[MemoryHub]:
    """A ``Hub`` behind an in-memory, fault-injecting link, in virtual time; closed after the test."""
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise RuntimeError(
            "trioconn_memory runs under trio.testing.MockClock, and this test runs in real time: "
            "is it a pytest-trio test (trio_mode = true, or @pytest.mark.trio)?"
        )
    async with open_memory_hub(trioconn_hub_settings) as memory:  # type: ignore[arg-type]
        yield memory


@pytest.fixture
async def trioconn_fault_proxy(trioconn_hub_settings: dict[str, Any]) -> AsyncIterator[ProxiedHub]:
    """A served ``Hub`` with a ``FaultProxy`` on 127.0.0.1 in front of it, for the test."""
    async with open_proxied_hub(trioconn_hub_settings) as proxied:  # type: ignore[arg-type]
        yield proxied


def _run_in_virtual_time(
    fn: Callable[[], Any], *, clock: trio.abc.Clock | None = None, **options: Any
) -> Any:
    """``trio.run`` with ``MockClock(autojump_threshold=0)`` unless the test brought a clock."""
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, clock=clock, **options)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use ``trioconn_memory`` run under a ``MockClock`` by default.

    pytest-trio takes the clock from the test's own arguments only, so a fixture cannot bring
    one; its documented ``@pytest.mark.trio(run=...)`` can. The marker goes first, before the one
    ``trio_mode`` adds, because pytest-trio uses the first ``run`` it finds; a test that asks for a
    clock fixture keeps that clock (``_run_in_virtual_time`` uses the one pytest-trio passes).
    """
    for item in items:
        if "trioconn_memory" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.trio(run=_run_in_virtual_time), append=False)
