"""Publishing from plain threads (a job running in a worker thread).

Every call hops into the hub's trio thread with ``trio.from_thread.run_sync``, so the hub's state
is only ever touched by trio and many threads can publish at once. The call returns when the
write is queued for every subscriber (not when clients received it), so it cannot deadlock on
a slow client, and it raises as soon as the hub is gone instead of losing progress silently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._exceptions import HubStopped

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["HubThreadHandle"]

T = TypeVar("T")


class HubThreadHandle:
    """Thread-safe publishing into a hub; get one from ``Hub.from_thread()`` inside trio."""

    def __init__(self, hub: Hub, token: trio.lowlevel.TrioToken) -> None:
        self._hub = hub
        self._token = token

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        result: T = self._enter(trio.from_thread.run_sync, fn, *args)
        return result

    def _call_async(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        result: T = self._enter(trio.from_thread.run, fn, *args)
        return result

    def _enter(self, via: Callable[..., Any], fn: Callable[..., Any], *args: Any) -> Any:
        try:
            current = trio.lowlevel.current_trio_token()
        except RuntimeError:
            current = None
        if current is self._token:
            raise RuntimeError(
                "HubThreadHandle is for other threads; in trio code call the hub's *_nowait methods"
            )
        try:
            return via(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise HubStopped("the trio run that hosted the hub has finished") from None

    def publish(self, topic: str, data: Any) -> int:
        """Publish to a stream topic; returns the offset. See ``Hub.publish_nowait``.

        With a shared broker this waits until the broker stored the write (``Hub.publish``).
        """
        if self._hub._broker.synchronous:
            return self._call(self._hub.publish_nowait, topic, data)
        return self._call_async(self._hub.publish, topic, data)

    def set_state(self, topic: str, value: Any) -> int:
        """Set a state topic's value; returns the offset. See ``Hub.set_state_nowait``."""
        if self._hub._broker.synchronous:
            return self._call(self._hub.set_state_nowait, topic, value)
        return self._call_async(self._hub.set_state, topic, value)

    def end(self, topic: str) -> int:
        """End a topic; returns its final offset. See ``Hub.end_nowait``."""
        if self._hub._broker.synchronous:
            return self._call(self._hub.end_nowait, topic)
        return self._call_async(self._hub.end, topic)
