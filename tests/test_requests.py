"""Request/reply: a client's ``request`` answered by a handler from ``hub.on_request``.

Raw protocol frames over in-memory streams in virtual time (timeouts exactly), the ASGI front
end on both backends, and over loopback with an independent client (``websockets``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing
from websockets.trio.client import connect as ws_connect

import trioconn
from trioconn import Hub, Request, RequestRefused

from .conftest import RawClient, memory_client


async def welcomed(client: RawClient) -> str:
    return (await client.recv_type("welcome"))["session"]


async def ask(client: RawClient, topic: str, data: Any = None, ref: Any = 1) -> dict:
    await client.send({"type": "request", "topic": topic, "data": data, "ref": ref})
    return await client.recv()


def by_token(request: trioconn.HandshakeRequest) -> str | None:
    return request.token


async def test_a_handler_answers_with_a_reply_carrying_the_ref():
    hub = Hub(authenticate=by_token)
    seen: list[Request] = []

    @hub.on_request("jobs/start")
    async def start(request: Request) -> dict:
        seen.append(request)
        return {"job": f"j{request.data['n']}"}

    async with memory_client(hub, "/?token=ann") as client:
        session = await welcomed(client)
        assert await ask(client, "jobs/start", {"n": 7}, ref="q1") == {
            "type": "reply",
            "ref": "q1",
            "data": {"job": "j7"},
        }
    assert seen == [Request("jobs/start", {"n": 7}, "ann", session)]


async def test_a_plain_function_and_a_prefix_handler_answer_the_most_specific_wins():
    hub = Hub()
    hub.on_request("jobs/*", lambda request: f"prefix {request.topic}")
    hub.on_request("jobs/a/*", lambda request: f"longer {request.topic}")
    hub.on_request("jobs/a/exact", lambda request: "exact")
    async with memory_client(hub) as client:
        await welcomed(client)
        assert (await ask(client, "jobs/x"))["data"] == "prefix jobs/x"
        assert (await ask(client, "jobs/a/b"))["data"] == "longer jobs/a/b"
        assert (await ask(client, "jobs/a/exact"))["data"] == "exact"
        no = await ask(client, "other", ref=9)
    assert (no["type"], no["code"], no["ref"], no["topic"]) == ("error", "no-handler", 9, "other")


async def test_request_refused_becomes_an_error_with_its_code_and_message():
    hub = Hub()

    @hub.on_request("jobs/cancel")
    async def cancel(request: Request) -> None:
        raise RequestRefused("not-found", f"no job {request.data!r}")

    async with memory_client(hub) as client:
        await welcomed(client)
        error = await ask(client, "jobs/cancel", "j9", ref=4)
    assert error == {
        "type": "error",
        "code": "not-found",
        "message": "no job 'j9'",
        "ref": 4,
        "topic": "jobs/cancel",
    }


async def test_a_failing_handler_answers_request_failed_logs_once_and_everything_goes_on(caplog):
    hub = Hub()

    @hub.on_request("boom")
    async def boom(request: Request) -> None:
        raise KeyError("secret detail")

    hub.on_request("ok", lambda request: "fine")
    with caplog.at_level(logging.ERROR, logger="trioconn"):
        async with memory_client(hub) as first, memory_client(hub) as second:
            await welcomed(first)
            await welcomed(second)
            for ref in range(3):
                error = await ask(first, "boom", ref=ref)
                assert (error["code"], error["ref"]) == ("request-failed", ref)
                assert "secret" not in json.dumps(error)
            assert (await ask(first, "ok"))["data"] == "fine"  # the connection keeps working
            assert (await ask(second, "ok"))["data"] == "fine"  # and so does everyone else
            assert hub.statistics().connections == 2
    failures = [r for r in caplog.records if "request handler" in r.getMessage()]
    assert len(failures) == 1  # rate-limited: at most one line per handler per 10 s
    assert failures[0].exc_info is not None and "'boom'" in failures[0].getMessage()


async def test_a_reply_that_is_not_json_is_request_failed():
    hub = Hub()
    hub.on_request("bad", lambda request: {1, 2})
    async with memory_client(hub) as client:
        await welcomed(client)
        assert (await ask(client, "bad"))["code"] == "request-failed"


async def test_a_handler_slower_than_request_timeout_is_cancelled_and_answered(autojump_clock):
    hub = Hub(request_timeout=3)
    cancelled = trio.Event()

    @hub.on_request("slow")
    async def slow(request: Request) -> str:
        try:
            await trio.sleep(60)
        finally:
            cancelled.set()
        return "never"

    async with memory_client(hub) as client:
        await welcomed(client)
        start = trio.current_time()
        error = await ask(client, "slow", ref="s")
        assert (error["code"], error["ref"]) == ("request-timeout", "s")
        assert trio.current_time() - start == pytest.approx(3)
        assert cancelled.is_set()


async def test_more_than_max_requests_in_flight_are_refused(autojump_clock):
    hub = Hub(max_requests_in_flight=2)
    release = trio.Event()

    @hub.on_request("wait")
    async def wait(request: Request) -> int:
        await release.wait()
        return int(request.data)

    async with memory_client(hub) as client:
        await welcomed(client)
        for ref in range(3):
            await client.send({"type": "request", "topic": "wait", "data": ref, "ref": ref})
        refused = await client.recv()
        assert (refused["code"], refused["ref"]) == ("too-many-requests", 2)
        release.set()
        replies = sorted([await client.recv() for _ in range(2)], key=lambda f: f["ref"])
        assert [(r["type"], r["data"]) for r in replies] == [("reply", 0), ("reply", 1)]
        assert (await ask(client, "wait", 5, ref=5))["data"] == 5  # room again


async def test_authorize_decides_on_requests_and_forbidden_is_the_answer():
    calls = []

    def authorize(identity: Any, topic: str, action: str) -> bool:
        calls.append((topic, action))
        return topic != "jobs/secret"

    hub = Hub(authorize=authorize)
    hub.on_request("jobs/*", lambda request: "yes")
    async with memory_client(hub) as client:
        await welcomed(client)
        assert (await ask(client, "jobs/open"))["data"] == "yes"
        error = await ask(client, "jobs/secret", ref=2)
    assert (error["code"], error["ref"]) == ("forbidden", 2)
    assert calls == [("jobs/open", "request"), ("jobs/secret", "request")]


async def test_a_request_without_ref_is_an_invalid_field():
    hub = Hub()
    hub.on_request("t", lambda request: 1)
    async with memory_client(hub) as client:
        await welcomed(client)
        await client.send({"type": "request", "topic": "t", "data": 1})
        error = await client.recv()
    assert error["code"] == "invalid-field" and "'ref'" in error["message"]


async def test_a_handler_is_cancelled_when_its_connection_ends_and_nothing_is_left(autojump_clock):
    hub = Hub()
    started, ended = trio.Event(), trio.Event()

    @hub.on_request("forever")
    async def forever(request: Request) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    async with trio.open_nursery() as nursery:
        async with memory_client(hub) as client:
            await welcomed(client)
            await client.send({"type": "request", "topic": "forever", "ref": 1})
            await started.wait()
        # the client is gone: its connection ends and takes the handler with it
        with trio.fail_after(5):
            await ended.wait()
        nursery.cancel_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert hub.statistics().connections == 0


def test_handler_registration_is_checked():
    hub = Hub()
    hub.on_request("t", lambda request: 1)
    with pytest.raises(ValueError, match="'t' already has a request handler"):
        hub.on_request("t", lambda request: 2)
    hub.on_request("t*", lambda request: 3)  # a prefix is another pattern
    with pytest.raises(TypeError, match="handler must be callable"):
        hub.on_request("u", 5)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="topic_or_prefix must be a str"):
        hub.on_request(5, lambda request: 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="topic_or_prefix ''"):
        hub.on_request("", lambda request: 1)
    with pytest.raises(ValueError, match="request_timeout must be a positive"):
        Hub(request_timeout=0)
    with pytest.raises(ValueError, match="max_requests_in_flight must be positive"):
        Hub(max_requests_in_flight=0)


# -- both backends (ASGI front end) -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_requests_are_answered_and_timed_out_on_both_backends(backend):
    from .test_asgi import accepted, served

    async def body() -> None:
        hub = Hub(request_timeout=0.2)

        @hub.on_request("echo")
        async def echo(request: Request) -> Any:
            await anyio.lowlevel.checkpoint()
            return request.data

        @hub.on_request("slow")
        async def slow(request: Request) -> None:
            await anyio.sleep(30)

        async with served(hub) as (app, tasks):
            server = await accepted(app, tasks)
            await server.put_frame({"type": "request", "topic": "echo", "data": [1, "x"], "ref": 1})
            assert (await server.next_frame("reply")) == {"type": "reply", "ref": 1, "data": [1, "x"]}
            await server.put_frame({"type": "request", "topic": "slow", "ref": 2})
            assert (await server.next_frame("error"))["code"] == "request-timeout"
            await server.put({"type": "websocket.disconnect", "code": 1000})
            await server.done.wait()

    anyio.run(body, backend=backend)


# -- over loopback, an independent client ------------------------------------------------------------


async def test_an_independent_client_over_loopback_gets_replies_and_errors(caplog):
    hub = Hub()

    @hub.on_request("add")
    async def add(request: Request) -> int:
        return int(sum(request.data))

    @hub.on_request("refuse")
    async def refuse(request: Request) -> None:
        raise RequestRefused("busy", "try later")

    @hub.on_request("crash")
    async def crash(request: Request) -> None:
        raise RuntimeError("bug")

    async def exchange(ws: Any, frame: dict) -> dict:
        await ws.send(json.dumps(frame))
        while True:
            answer = json.loads(await ws.recv())
            if answer["type"] != "ping":
                return answer  # type: ignore[no-any-return]

    with caplog.at_level(logging.CRITICAL, logger="trioconn"):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            with trio.fail_after(10):
                async with (
                    ws_connect(f"ws://127.0.0.1:{port}/") as ws,
                    ws_connect(f"ws://127.0.0.1:{port}/") as other,
                ):
                    assert json.loads(await ws.recv())["type"] == "welcome"
                    assert json.loads(await other.recv())["type"] == "welcome"
                    reply = await exchange(
                        ws, {"type": "request", "topic": "add", "data": [1, 2], "ref": "a"}
                    )
                    assert reply == {"type": "reply", "ref": "a", "data": 3}
                    refused = await exchange(ws, {"type": "request", "topic": "refuse", "ref": "b"})
                    assert (refused["code"], refused["message"], refused["ref"]) == ("busy", "try later", "b")
                    failed = await exchange(ws, {"type": "request", "topic": "crash", "ref": "c"})
                    assert (failed["code"], failed["ref"]) == ("request-failed", "c")
                    again = await exchange(ws, {"type": "request", "topic": "add", "data": [5], "ref": "d"})
                    assert again["data"] == 5
                    theirs = await exchange(other, {"type": "request", "topic": "add", "data": [2], "ref": 1})
                    assert theirs["data"] == 2
            nursery.cancel_scope.cancel()
