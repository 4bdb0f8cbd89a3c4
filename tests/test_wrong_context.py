"""Hub methods called from the wrong thread get a ``TrioconnError`` that names ``hub.from_thread()``;
a connection interrupted while closing (trio raises a KeyboardInterrupt in whatever task runs) is
still forgotten, so the hub can shut down."""

from __future__ import annotations

import threading

import anyio
import anyio.to_thread
import pytest
import trio
import trio.lowlevel

import trioconn
from trioconn import Hub, TrioconnError


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda hub: hub.publish_nowait("t", 1), "publish_nowait"),
        (lambda hub: hub.set_state_nowait("s", 1), "set_state_nowait"),
        (lambda hub: hub.end_nowait("t"), "end_nowait"),
        (lambda hub: hub.presence("t"), "presence"),
    ],
)
async def test_a_worker_thread_is_told_to_use_from_thread(call, name):
    hub = Hub()
    hub.publish_nowait("t", 0)  # the hub's loop thread is this one

    def worker() -> BaseException | None:
        try:
            call(hub)
        except BaseException as exc:
            return exc
        return None

    error = await trio.to_thread.run_sync(worker)
    assert isinstance(error, TrioconnError)
    assert f"hub.{name}()" in str(error) and "hub.from_thread()" in str(error)
    assert hub.statistics().topics["t"].offset == 1  # nothing more was written


def test_a_thread_without_a_loop_before_the_hub_ever_ran_gets_the_same_answer():
    hub = Hub()
    with pytest.raises(TrioconnError, match=r"hub\.set_state_nowait\(\).*hub\.from_thread\(\)"):
        hub.set_state_nowait("job", 1)


async def test_from_thread_itself_called_in_a_worker_says_where_to_call_it():
    hub = Hub()

    def worker() -> None:
        hub.from_thread()

    with pytest.raises(TrioconnError, match=r"call it in the hub's event loop"):
        await trio.to_thread.run_sync(worker)


async def test_the_handle_from_from_thread_still_works_in_the_worker():
    hub = Hub()
    handle = hub.from_thread()
    assert await trio.to_thread.run_sync(handle.set_state, "job", 5) == 1


async def test_another_event_loop_in_another_thread_is_refused_while_the_hub_serves():
    hub = Hub()
    errors: list[BaseException] = []

    def other_loop() -> None:
        async def publish() -> None:
            try:
                hub.publish_nowait("t", 1)
            except TrioconnError as exc:
                errors.append(exc)

        trio.run(publish)

    async with hub.running():
        thread = threading.Thread(target=other_loop)
        await trio.to_thread.run_sync(thread.start)
        await trio.to_thread.run_sync(thread.join, 10)
    assert len(errors) == 1 and "another thread's event loop" in str(errors[0])
    assert "hub.from_thread()" in str(errors[0])


def test_a_hub_idle_after_one_run_can_be_used_in_a_later_run_on_another_thread():
    hub = Hub()

    async def publish() -> int:
        return hub.set_state_nowait("t", "x")  # a state topic: each run's clock is its own

    assert trio.run(publish) == 1
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(trio.run(publish)))
    thread.start()
    thread.join(10)
    assert results == [2]


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_worker_thread_is_refused_on_both_backends(backend):
    async def body() -> None:
        hub = Hub()
        hub.set_state_nowait("job", 0)
        with pytest.raises(TrioconnError, match=r"hub\.set_state_nowait\(\).*hub\.from_thread\(\)"):
            await anyio.to_thread.run_sync(hub.set_state_nowait, "job", 1)
        handle = hub.from_thread()
        assert await anyio.to_thread.run_sync(handle.set_state, "job", 2) == 2

    anyio.run(body, backend=backend)


class _Interrupt(BaseException):
    """Stands for a KeyboardInterrupt that trio raised in a connection's task."""


class _InterruptedSocket(trioconn.ServerSocket):
    """A client that leaves at once, and whose close is interrupted."""

    remote = "test"

    @property
    def closed(self) -> trioconn.Closed | None:
        return trioconn.Closed(1000, "")

    async def receive(self) -> str:
        await trio.lowlevel.checkpoint()
        raise trioconn.SocketClosed("gone")

    async def send(self, message: str) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self, code: int, reason: str, *, abort: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        raise _Interrupt


async def test_a_connection_interrupted_while_closing_is_still_forgotten_so_shutdown_ends():
    hub = Hub()
    with pytest.raises(_Interrupt):
        await hub.serve_socket(_InterruptedSocket(), None)
    assert hub.statistics().connections == 0
    with trio.fail_after(5):
        await hub.aclose()  # it waits for every connection it knows
