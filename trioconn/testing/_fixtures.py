"""What the pytest fixtures of ``trioconn.testing.pytest_plugin`` yield, and how each is set up.

Each fixture is a thin wrapper around one async context manager here, so that the setup lives in
one place and can be read (and used) without pytest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from .._client.client import Client, connect
from .._frontends.trio_wsproto import Hub
from .._server.config import HubSettings
from .._server.groups import unwrap_group
from ._faults import FaultProxy, MemoryLink, open_fault_proxy, open_memory_link

__all__ = ["MemoryHub", "ProxiedHub", "RunningHub", "open_memory_hub", "open_proxied_hub", "open_running_hub"]


@attrs.define
class RunningHub:
    """A ``Hub`` serving on a free port of 127.0.0.1 (the ``trioconn_hub`` fixture).

    Attributes:
        hub: the hub; publish to it from the test.
        url: ``ws://127.0.0.1:<port>/``, for ``trioconn.connect`` or a client under test.
        port: the bound port.
    """

    hub: Hub
    url: str
    port: int

    def connect(self, **options: Any) -> AbstractAsyncContextManager[Client]:
        """``trioconn.connect(self.url, **options)``."""
        return connect(self.url, **options)


@attrs.define
class MemoryHub:
    """A ``Hub`` behind an in-memory, fault-injecting link (the ``trioconn_memory`` fixture).

    No sockets, so it runs in virtual time. ``connect()`` opens clients through ``link``;
    ``link``'s controls (``stall``, ``cut``, ``delay``, ``throttle``, ``drop_for``) act on them.

    Attributes:
        hub: the hub the link leads to now (see ``restart``).
        link: the ``MemoryLink``.
        url: the URL clients are given (its host is ignored; its path and query are sent).
    """

    hub: Hub
    link: MemoryLink
    url: str = "ws://trioconn.test/"
    settings: dict[str, Any] = attrs.field(factory=dict)

    def connect(self, **options: Any) -> AbstractAsyncContextManager[Client]:
        """``trioconn.connect`` through the link; ``options`` are ``connect``'s keywords."""
        return connect(self.url, transport=self.link.transport, **options)

    async def restart(self) -> Hub:
        """Replace the hub by a new one with the same settings, as a restarted process would be.

        The old hub is closed (its clients get 1001 and reconnect, through the link, to the
        new one); topics start again with new epochs, so resuming clients get ``reset``.

        Returns:
            The new hub (also ``self.hub``).
        """
        old, self.hub = self.hub, Hub(**self.settings)
        self.link.serve = self.hub.serve_stream
        await old.aclose()
        return self.hub


@attrs.define
class ProxiedHub:
    """A served ``Hub`` with a ``FaultProxy`` in front of it (the ``trioconn_fault_proxy`` fixture).

    Attributes:
        hub: the hub.
        proxy: the proxy; its controls act on every connection through it.
        url: the proxy's URL: connect clients here.
        hub_url: the hub's own URL, past the proxy.
    """

    hub: Hub
    proxy: FaultProxy
    url: str
    hub_url: str

    def connect(self, **options: Any) -> AbstractAsyncContextManager[Client]:
        """``trioconn.connect(self.url, **options)``: a client through the proxy."""
        return connect(self.url, **options)


@asynccontextmanager
async def open_running_hub(settings: HubSettings | None = None) -> AsyncIterator[RunningHub]:
    """Serve a new ``Hub(**settings)`` on 127.0.0.1, port 0, for the block; then close it."""
    hub = Hub(**(settings or {}))
    with unwrap_group():
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(hub.serve, "127.0.0.1", 0)
            try:
                yield RunningHub(hub, f"ws://127.0.0.1:{port}/", port)
            finally:
                with trio.CancelScope(shield=True):
                    await hub.aclose()
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_memory_hub(settings: HubSettings | None = None) -> AsyncIterator[MemoryHub]:
    """A new ``Hub(**settings)`` behind an in-memory link, for the block; then close it."""
    hub = Hub(**(settings or {}))
    memory: MemoryHub | None = None
    try:
        async with open_memory_link(hub.serve_stream) as link:
            memory = MemoryHub(hub, link, settings=dict(settings or {}))
            yield memory
    finally:
        with trio.CancelScope(shield=True):
            await (memory.hub if memory is not None else hub).aclose()


@asynccontextmanager
async def open_proxied_hub(settings: HubSettings | None = None) -> AsyncIterator[ProxiedHub]:
    """A served ``Hub(**settings)`` with a ``FaultProxy`` in front, for the block."""
    async with (
        open_running_hub(settings) as running,
        open_fault_proxy("127.0.0.1", running.port) as proxy,
    ):
        yield ProxiedHub(running.hub, proxy, f"ws://127.0.0.1:{proxy.port}/", running.url)
