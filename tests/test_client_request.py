"""``client.request(topic, data, timeout=...)``: the answer, errors, timeouts, lost links.

Against the in-memory fake server (tests/_client_fakes.py) under the autojump clock, against the
independent ``websockets`` server over loopback, and against the real Hub's request handlers.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from trioconn import (
    ClientState,
    ConnectionBroken,
    ConnectionClosed,
    EventItem,
    Hub,
    RequestRefused,
    RequestTimeout,
    ServerError,
    TrioconnError,
    connect,
)
from trioconn.testing import open_memory_link

from ._client_fakes import (
    SWALLOW,
    Error,
    MiniHub,
    Reply,
    Request,
    Session,
    bounded,
    hang_handshake,
    reject,
)
from ._independent_server import IndependentServer

URL = "ws://hub.test/live"


def requests_seen(hub: MiniHub) -> list[Request]:
    return [f for s in hub.sessions for f in s.received if isinstance(f, Request)]


@bounded
async def test_request_returns_the_handlers_answer(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.handlers["add"] = lambda data: {"sum": data["a"] + data["b"]}
        async with connect(URL, transport=hub.transport) as client:
            assert await client.request("add", {"a": 2, "b": 3}) == {"sum": 5}
            assert await client.request("add", {"a": 1, "b": -1}, timeout=0.5) == {"sum": 0}
            (first, second) = requests_seen(hub)
            assert first.ref != second.ref
        nursery.cancel_scope.cancel()


@bounded
async def test_concurrent_requests_are_matched_to_their_answers_by_ref(autojump_clock: Any) -> None:
    async def answer_in_reverse(session: Session) -> None:
        await session.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            await trio.testing.wait_all_tasks_blocked()
            assert len([f for f in session.received if isinstance(f, Request)]) == 5
            for frame in reversed([f for f in session.received if isinstance(f, Request)]):
                session.send_nowait(Reply(frame.ref, frame.data * 10))

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(answer_in_reverse)
        hub.handlers["x"] = lambda data: SWALLOW
        answers: dict[int, Any] = {}
        async with connect(URL, transport=hub.transport) as client:

            async def ask(n: int) -> None:
                answers[n] = await client.request("x", n)

            async with trio.open_nursery() as inner:
                for n in range(5):
                    inner.start_soon(ask, n)
        nursery.cancel_scope.cancel()
    assert answers == {n: n * 10 for n in range(5)}


@bounded
async def test_an_error_answer_raises_server_error_with_its_code(autojump_clock: Any) -> None:
    def refuse(data: Any) -> Any:
        raise RequestRefused("not-found", f"no job {data}")

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.handlers["jobs/get"] = refuse
        async with connect(URL, transport=hub.transport) as client:
            with pytest.raises(ServerError) as info:
                await client.request("jobs/get", 7)
            assert (info.value.code, info.value.message) == ("not-found", "no job 7")
            with pytest.raises(ServerError) as info:
                await client.request("nobody/home", None)
            assert info.value.code == "no-handler"
            assert client.state is ClientState.OPEN
            hub.handlers["ok"] = lambda data: "fine"
            assert await client.request("ok", None) == "fine"  # the link is still fine
        nursery.cancel_scope.cancel()


@bounded
async def test_no_answer_within_the_timeout_raises_request_timeout_and_a_late_answer_is_ignored(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.handlers["slow"] = lambda data: SWALLOW
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            started = trio.current_time()
            with pytest.raises(RequestTimeout, match="no answer within 2 s; the handler may or may not"):
                await client.request("slow", 1, timeout=2)
            assert trio.current_time() - started == pytest.approx(2)
            with pytest.raises(RequestTimeout):
                await client.request("slow", 2, timeout=2)
            (first, second) = requests_seen(hub)
            with caplog.at_level(logging.WARNING, logger="trioconn"):
                hub.sessions[0].send_nowait(Reply(first.ref, "late"))
                hub.sessions[0].send_nowait(Error("request-timeout", "the handler was too slow", second.ref))
                await trio.testing.wait_all_tasks_blocked()
            assert caplog.records == []
            assert client.state is ClientState.OPEN
            assert isinstance(RequestTimeout("x"), TrioconnError)
        nursery.cancel_scope.cancel()


@bounded
async def test_waits_while_disconnected_within_the_timeout(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [reject(503), reject(503)]
        hub.handlers["echo"] = lambda data: data
        async with connect(URL, transport=hub.transport, rng=random.Random(1)) as client:
            assert client.state is ClientState.CONNECTING
            assert await client.request("echo", "hello", timeout=60) == "hello"
            assert client.statistics().attempts == 3
        nursery.cancel_scope.cancel()


@bounded
async def test_no_connection_within_the_timeout_sends_nothing(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(hang_handshake)
        hub.handlers["echo"] = lambda data: data
        async with connect(URL, transport=hub.transport, connect_timeout=30) as client:
            with pytest.raises(RequestTimeout, match="no connection within 5 s; nothing was sent"):
                await client.request("echo", 1, timeout=5)
            assert trio.current_time() == pytest.approx(5)
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            assert requests_seen(hub) == []  # not sent later either
        nursery.cancel_scope.cancel()


@bounded
async def test_a_link_lost_after_sending_raises_connection_broken_and_is_never_resent(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.handlers["work"] = lambda data: SWALLOW
        async with connect(URL, transport=hub.transport) as client:
            async with trio.open_nursery() as inner:

                async def drop_when_sent() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    assert len(requests_seen(hub)) == 1
                    hub.close_all(1012, "restart")

                inner.start_soon(drop_when_sent)
                with pytest.raises(ConnectionBroken, match="may or may not have run"):
                    await client.request("work", 1)
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            assert len(requests_seen(hub)) == 1  # the new connection saw no request
        nursery.cancel_scope.cancel()


@bounded
async def test_the_answer_comes_in_order_with_the_subscriptions_events(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)

        def start(data: Any) -> Any:
            hub.write("jobs/1", "started")  # the handler's write goes out before its answer
            return "ok"

        hub.handlers["jobs/start"] = start
        async with connect(URL, transport=hub.transport) as client, client.subscribe("jobs/1") as sub:
            await sub.ready()
            assert await client.request("jobs/start", None) == "ok"
            # the event was read before the answer, so it is already queued
            assert sub._receive.receive_nowait() == EventItem("jobs/1", "epoch-1", 1, "started")
        nursery.cancel_scope.cancel()


@bounded
async def test_request_validates_its_arguments_before_waiting(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(hang_handshake)
        async with connect(URL, transport=hub.transport) as client:
            with pytest.raises(ValueError, match="topic must not be empty"):
                await client.request("", 1)
            with pytest.raises(TypeError, match="not JSON-serializable"):
                await client.request("t", object())
            with pytest.raises(TypeError, match="not JSON-serializable"):
                await client.request("t", math.inf)
            for bad in ("1", True, None):
                with pytest.raises(TypeError, match="timeout must be a number"):
                    await client.request("t", 1, timeout=bad)  # type: ignore[arg-type]
            for bad in (0, -1, math.nan):
                with pytest.raises(ValueError, match="timeout must be > 0"):
                    await client.request("t", 1, timeout=bad)
            assert trio.current_time() == 0  # nothing waited
        nursery.cancel_scope.cancel()


@bounded
async def test_request_after_the_client_closed_raises_connection_closed(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            await client.aclose()
            with pytest.raises(ConnectionClosed) as info:
                await client.request("t", 1)
            assert info.value.code == 1000
        nursery.cancel_scope.cancel()


@bounded
async def test_an_infinite_timeout_waits_for_the_answer(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        answered: list[Any] = []
        hub.handlers["later"] = lambda data: SWALLOW
        async with connect(URL, transport=hub.transport) as client:

            async def ask() -> None:
                answered.append(await client.request("later", 1, timeout=math.inf))

            nursery.start_soon(ask)
            await trio.sleep(3000)  # longer than any default timeout
            (frame,) = requests_seen(hub)
            hub.sessions[0].send_nowait(Reply(frame.ref, "at last"))
            await trio.testing.wait_all_tasks_blocked()
            assert answered == ["at last"]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- against the independent server


async def test_request_against_the_independent_server() -> None:
    with IndependentServer() as server, trio.fail_after(10):
        async with connect(server.url) as client:
            assert await client.request("echo", {"x": [1, 2]}) == {"x": [1, 2]}
            with pytest.raises(ServerError) as info:
                await client.request("refuse", "busy")
            assert info.value.code == "busy"
            with pytest.raises(ServerError) as info:
                await client.request("other", None)
            assert info.value.code == "no-handler"


# ------------------------------------------------------------------------- against the real Hub


@pytest.mark.skipif(
    not hasattr(Hub, "on_request"),
    reason="the Hub's request handlers (hub.on_request) are not on this branch",
)
@bounded
async def test_request_against_the_real_hub(autojump_clock: Any) -> None:
    hub = Hub(heartbeat_interval=2, heartbeat_timeout=6)

    async def add(request: Any) -> Any:
        if request.data["b"] == 0:
            raise RequestRefused("zero", "b must not be 0")
        return request.data["a"] + request.data["b"]

    hub.on_request("math/add", add)  # type: ignore[attr-defined]
    async with open_memory_link(hub.serve_stream) as link:
        async with connect(URL, transport=link.transport) as client:
            assert await client.request("math/add", {"a": 1, "b": 2}) == 3
            with pytest.raises(ServerError) as info:
                await client.request("math/add", {"a": 1, "b": 0})
            assert (info.value.code, info.value.message) == ("zero", "b must not be 0")
            with pytest.raises(ServerError) as info:
                await client.request("math/mul", {})
            assert info.value.code == "no-handler"
        await hub.aclose()
