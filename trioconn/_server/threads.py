"""Publishing from plain threads (a job running in a worker thread).

Every call hops into the hub's event loop thread with ``anyio.from_thread``, so the hub's state
is only ever touched there and many threads can publish at once (under trio or asyncio alike).
The call returns when the
write is queued for every subscriber (not when clients received it), so it cannot deadlock on
a slow client, and it raises as soon as the hub is gone instead of losing progress silently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.lowlevel import EventLoopToken

from .._core.exceptions import HubStopped

__all__ = ["HubThreadHandle", "Publisher"]

T = TypeVar("T")


class Publisher(Protocol):
    """What a thread handle calls, in the event loop thread: the hub's publishing methods."""

    @property
    def synchronous(self) -> bool:
        """True if the ``*_nowait`` methods work (the broker writes without I/O)."""

    def publish_nowait(self, topic: str, data: Any) -> int: ...
    async def publish(self, topic: str, data: Any) -> int: ...
    def set_state_nowait(self, topic: str, value: Any) -> int: ...
    async def set_state(self, topic: str, value: Any) -> int: ...
    def end_nowait(self, topic: str) -> int: ...
    async def end(self, topic: str) -> int: ...


class HubThreadHandle:
    """Thread-safe publishing into a hub; get one from ``Hub.from_thread()`` in the hub's event loop."""

    def __init__(self, hub: Publisher, token: EventLoopToken) -> None:
        self._hub = hub
        self._token = token

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        result: T = self._enter(anyio.from_thread.run_sync, fn, *args)
        return result

    def _call_async(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        result: T = self._enter(anyio.from_thread.run, fn, *args)
        return result

    def _enter(self, via: Callable[..., Any], fn: Callable[..., Any], *args: Any) -> Any:
        try:
            current: EventLoopToken | None = anyio.lowlevel.current_token()
        except RuntimeError:
            current = None
        if current is not None and current.native_token == self._token.native_token:
            raise RuntimeError(
                "HubThreadHandle is for other threads; in the event loop call the hub's methods"
            )
        try:
            return via(fn, *args, token=self._token)
        except anyio.RunFinishedError:
            raise HubStopped("the event loop that hosted the hub has finished") from None

    def publish(self, topic: str, data: Any) -> int:
        """Publish to a stream topic; returns the offset. See ``Hub.publish_nowait``.

        With a shared broker this waits until the broker stored the write (``Hub.publish``).
        """
        if self._hub.synchronous:
            return self._call(self._hub.publish_nowait, topic, data)
        return self._call_async(self._hub.publish, topic, data)

    def set_state(self, topic: str, value: Any) -> int:
        """Set a state topic's value; returns the offset. See ``Hub.set_state_nowait``."""
        if self._hub.synchronous:
            return self._call(self._hub.set_state_nowait, topic, value)
        return self._call_async(self._hub.set_state, topic, value)

    def end(self, topic: str) -> int:
        """End a topic; returns its final offset. See ``Hub.end_nowait``."""
        if self._hub.synchronous:
            return self._call(self._hub.end_nowait, topic)
        return self._call_async(self._hub.end, topic)
