"""Where a hub's topics live: the broker interface and the in-memory default.

Theory of operation
-------------------
A ``Hub`` answers subscribers from its ``TopicRegistry`` and writes through a ``Broker``. The
broker decides what a write's offset is and makes sure every hub that serves the topic applies it
to its registry:

- ``MemoryBroker`` (the default) *is* the registry: a write is applied at once, synchronously,
  so ``publish_nowait`` works and one process serves everything.
- A shared broker (``trioconn.redis.RedisBroker``) stores topics elsewhere; the registry of each
  hub becomes a mirror of the topics its clients follow. ``write`` awaits the shared store and
  the broker's background task (``run``) applies every write, from any process, to the mirror.

Subscribing stays one synchronous step: the connection asks ``ready(topic)`` and, if the topic is
not mirrored yet, awaits ``load(topic)`` first; then answer, replay and registration happen with
no await in between, exactly as with the in-memory broker.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .topics import Subscriber, TopicKind, TopicRegistry

__all__ = ["Broker", "MemoryBroker", "SlowCallback"]

#: Called with each subscriber that could not keep up with a write (the hub closes it with 4001).
SlowCallback = Callable[[Subscriber], None]


class Broker(abc.ABC):
    """The small surface a hub needs from where its topics are stored.

    A broker serves one hub: the hub calls ``bind`` once, from its constructor. Writes raise
    ``TopicEnded`` (the topic has ended), ``ValueError`` (bad name, wrong kind), ``TypeError``
    (data is not JSON) or ``BrokerUnavailable`` (the store cannot be reached: nothing was written).
    """

    #: True if writes complete without I/O, so the hub's ``*_nowait`` methods can use them.
    synchronous: bool = False

    def __init__(self) -> None:
        self._bound: TopicRegistry | None = None

    @property
    def connected(self) -> bool:
        """False while a shared broker cannot reach its store (writes raise ``BrokerUnavailable``)."""
        return True

    def bind(self, registry: TopicRegistry, on_slow: SlowCallback) -> None:
        """Attach the hub's registry (the topics this process serves) and its slow-consumer hook.

        Raises:
            RuntimeError: the broker already serves another hub.
        """
        if self._bound is not None:
            raise RuntimeError("a broker serves one hub; create one broker per Hub")
        self._bound = registry
        self._on_slow = on_slow

    @property
    def registry(self) -> TopicRegistry:
        if self._bound is None:
            raise RuntimeError("the broker is not bound to a hub yet")
        return self._bound

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Background work (following the shared store) until cancelled; the hub runs it.

        ``task_status.started()`` is called once the broker can serve (it may still be
        reconnecting to its store: the broker reports that through ``BrokerUnavailable``).
        """
        task_status.started()
        await anyio.sleep_forever()

    def write_nowait(self, topic: str, kind: TopicKind, data: Any) -> int:
        """Write without waiting; only synchronous brokers can. Returns the new offset."""
        raise RuntimeError(
            f"{type(self).__name__} stores writes over the network and cannot write without "
            "waiting: use `await hub.publish(...)` / `await hub.set_state(...)` / `await hub.end(...)`"
        )

    @abc.abstractmethod
    async def write(self, topic: str, kind: TopicKind, data: Any) -> int:
        """Append one write (``publish`` or ``set_state``) to ``topic``. Returns its offset."""

    def end_nowait(self, topic: str) -> int:
        """End ``topic`` without waiting; only synchronous brokers can. Returns its final offset."""
        return self.write_nowait(topic, "stream", None)  # raises the same explanation

    @abc.abstractmethod
    async def end(self, topic: str) -> int:
        """End ``topic`` (idempotent). Returns its final offset."""

    def ready(self, topic: str) -> bool:
        """True if a subscribe to ``topic`` can be answered from the registry right now."""
        return True

    async def load(self, topic: str) -> None:
        """Make ``topic`` ready: copy it from the shared store into the registry.

        Raises:
            BrokerUnavailable: the store cannot be reached.
        """
        await anyio.lowlevel.checkpoint()

    def _slow(self, subscribers: list[Subscriber]) -> None:
        for sub in subscribers:
            self._on_slow(sub)


class MemoryBroker(Broker):
    """Topics in this process only: the default, with nothing to set up.

    Every write is applied to the hub's registry at once, so ``publish_nowait`` works and a
    write is queued for every subscriber when the call returns.
    """

    synchronous = True

    def write_nowait(self, topic: str, kind: TopicKind, data: Any) -> int:
        offset, slow = self.registry.write(topic, kind, data, anyio.current_time())
        self._slow(slow)
        return offset

    async def write(self, topic: str, kind: TopicKind, data: Any) -> int:
        await anyio.lowlevel.checkpoint()
        return self.write_nowait(topic, kind, data)

    def end_nowait(self, topic: str) -> int:
        return self.registry.end(topic, anyio.current_time())

    async def end(self, topic: str) -> int:
        await anyio.lowlevel.checkpoint()
        return self.end_nowait(topic)
