"""The client against an independent server written with the ``websockets`` package.

The server (tests/_independent_server.py) shares no code with trioconn and runs on asyncio in a
thread of its own, over real sockets on 127.0.0.1; each test scripts what it does, connection by
connection. Times here are real, so every test keeps them short and bounds itself.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import time
from typing import Any

import pytest
import trio

from trioconn import (
    Backoff,
    ClientState,
    ConnectionBroken,
    ConnectionClosed,
    EventItem,
    HandshakeRejected,
    ProtocolError,
    ReconnectFailed,
    connect,
)

from ._independent_server import (
    Conn,
    IndependentServer,
    close_handshake,
    frame,
    reject_handshake,
    reset_handshake,
    welcome,
    well_behaved,
)

FAST = Backoff(base=0.01, cap=0.01)
PUBLIC = {ConnectionClosed, ConnectionBroken, HandshakeRejected, ProtocolError, ReconnectFailed}


def close_after(code: int, *, ping: bool = False, burst: int = 0, reason: str = "closing") -> Any:
    """Welcome, then (a burst of events with a ping every 50, a ping), then close with ``code``."""

    async def handler(conn: Conn) -> None:
        await conn.send(welcome())
        for offset in range(1, burst + 1):
            await conn.send(frame("event", topic="feed", offset=offset, data=offset))
            if offset % 50 == 0:
                await conn.send(frame("ping", id=offset))
        if ping:
            await conn.send(frame("ping", id=1))
        await conn.close(code, reason)

    return handler


MOMENTS = [
    close_after(1000),
    close_after(1000, ping=True),
    close_after(1000, burst=300),
]


async def test_a_close_1000_at_any_moment_ends_the_client_without_a_reconnect_100_of_100() -> None:
    outcomes = []
    with IndependentServer() as server, trio.fail_after(30):
        for run in range(100):
            before = server.connections
            # a second connection would also be closed with 1000, so a wrong reconnect shows
            server.script[:] = [MOMENTS[run % 3]] * 2
            async with connect(server.url, backoff=FAST) as client, client.subscribe("feed"):
                final = await client.wait_state(ClientState.CLOSED)
            outcomes.append((final.code, client.statistics().attempts, server.connections - before))
    assert outcomes == [(1000, 1, 1)] * 100


@pytest.mark.parametrize(("code", "token"), [(4403, True), (1008, True), (4401, False)])
async def test_a_final_close_after_welcome_fails_once_whatever_races_it(code: int, token: bool) -> None:
    async def tokens() -> str:
        return "t0k3n"

    with IndependentServer() as server, trio.fail_after(30):
        for run in range(15):
            before = server.connections
            server.script[:] = [close_after(code, ping=run % 3 == 1, burst=300 if run % 3 == 2 else 0)] * 2
            with pytest.raises(ReconnectFailed) as info:
                async with (
                    connect(server.url, backoff=FAST, token_provider=tokens if token else None) as client,
                    client.subscribe("feed"),
                ):
                    await trio.sleep_forever()
            assert server.connections - before == 1 and client.statistics().attempts == 1
            cause = info.value.cause
            assert type(cause) is ConnectionClosed and type(cause.code) is int and cause.code == code


async def test_4401_with_a_token_provider_retries_once_at_once_with_a_fresh_token() -> None:
    issued: list[str] = []

    async def tokens() -> str:
        issued.append(f"token-{len(issued) + 1}")
        return issued[-1]

    paths: list[str] = []

    async def expired(conn: Conn) -> None:
        paths.append(conn.path)
        await conn.send(welcome())
        await conn.close(4401, "token expired")

    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [expired] * 3
        with pytest.raises(ReconnectFailed) as info:
            async with connect(server.url, token_provider=tokens, backoff=Backoff(base=5, cap=5)):
                await trio.sleep_forever()
    assert isinstance(info.value.cause, ConnectionClosed) and info.value.cause.code == 4401
    assert paths == ["/live?token=token-1", "/live?token=token-2"]
    times = server.connect_times
    assert times[1] - times[0] < 1  # no backoff delay (its ceiling here is 5 s)


async def test_plain_int_codes_and_public_exceptions_in_every_state_change() -> None:
    with IndependentServer() as server, trio.fail_after(10):
        # 1001 and 1011 arrive as wsproto enum members; 4001 is an application code
        server.script[:] = [close_after(1001, ping=True), close_after(1011), close_after(4001, burst=60)]
        server.script.append(close_after(1008))
        with pytest.raises(ReconnectFailed) as info:
            async with connect(server.url, backoff=FAST) as client, client.subscribe("feed"):
                changes = client.state_changes()
                await trio.sleep_forever()
        seen = [change async for change in changes]
    codes = [change.code for change in seen if change.code is not None]
    assert codes == [1001, 1011, 4001, 1008] and all(type(code) is int for code in codes)
    assert all(type(change.exception) in PUBLIC for change in seen if change.exception is not None)
    assert type(info.value.cause) is ConnectionClosed and type(info.value.cause.code) is int


async def test_subscribe_and_publish_work_against_the_independent_server() -> None:
    with IndependentServer() as server, trio.fail_after(10):
        async with connect(server.url) as client, client.subscribe("feed"):
            assert await client.publish("feed", {"n": 1}) == 1
            assert await client.publish("feed", {"n": 2}) == 2
            assert client.state is ClientState.OPEN


async def test_the_json_hooks_shape_what_goes_on_the_wire_and_what_comes_back() -> None:
    """json_dumps (a ``default=`` for datetimes) encodes the request's data as the independent
    server receives it; json_loads (an ``object_hook``) decodes the echoed answer."""

    def revive(obj: dict[str, Any]) -> Any:
        return datetime.datetime.fromisoformat(obj["at"]) if set(obj) == {"at"} else obj

    when = datetime.datetime(2026, 11, 29, 12, 30, tzinfo=datetime.UTC)
    dumps = functools.partial(json.dumps, default=lambda value: {"at": value.isoformat()})
    loads = functools.partial(json.loads, object_hook=revive)
    conns: list[Conn] = []

    async def recorded(conn: Conn) -> None:
        conns.append(conn)
        await well_behaved(conn)

    with IndependentServer() as server, trio.fail_after(10):
        server.script.append(recorded)
        async with connect(server.url, json_dumps=dumps, json_loads=loads) as client:
            assert await client.request("echo", {"done": when}) == {"done": when}
    [request] = [obj for obj in conns[0].received if obj.get("type") == "request"]
    assert request["data"] == {"done": {"at": "2026-11-29T12:30:00+00:00"}}


# --------------------------------------------------------------------------------- dead link


async def test_a_server_that_stops_answering_is_reported_at_timeout_plus_interval() -> None:
    interval, timeout = 0.1, 0.2

    async def pinging(conn: Conn) -> None:
        await conn.send(welcome(interval, timeout))
        for ping_id in range(1, 1000):
            await conn.send(frame("ping", id=ping_id))
            await conn.recv_type("pong")
            await asyncio.sleep(interval)  # handlers run on the server's asyncio loop

    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [pinging]
        async with connect(server.url, connect_timeout=0.5, backoff=FAST) as client:
            await client.wait_state(ClientState.OPEN)
            while client.statistics().pings_answered < 2:  # noqa: ASYNC110 - real server, real time
                await trio.sleep(0.01)
            server.freeze()  # the process stops: sockets open, nothing answers
            stopped = trio.current_time()
            lost = await client.wait_state(ClientState.RECONNECTING)
            reported = trio.current_time()
    assert "heartbeat" in lost.reason and type(lost.exception) is ConnectionBroken
    # at most timeout + interval after the last frame, which came before the stop; waiting for a
    # close handshake with the stopped server would add 5 s
    assert reported - stopped < timeout + interval + 0.3


# --------------------------------------------------------------------- the opening handshake


async def test_a_server_that_resets_or_closes_during_the_handshake_costs_a_backoff_delay_each() -> None:
    with IndependentServer() as server, trio.fail_after(10):
        server.handshake_script[:] = [reset_handshake, close_handshake, reset_handshake]
        started = time.monotonic()
        async with connect(server.url, connect_timeout=10, backoff=Backoff(base=0.05, cap=0.05)) as client:
            changes = client.state_changes()
            await client.wait_state(ClientState.OPEN)
            opened = time.monotonic()
            seen = [await changes.__anext__() for _ in range(5)]
    assert [c.state for c in seen] == [ClientState.CONNECTING] * 4 + [ClientState.OPEN]
    assert all(type(c.exception) is ConnectionBroken and "handshake" in c.reason for c in seen[1:4])
    assert len(server.connect_times) == 4
    assert opened - started < 3 * 0.05 + 0.5  # three backoff delays, not three connect timeouts


async def test_a_refused_handshake_fails_or_retries_by_status() -> None:
    with IndependentServer() as server, trio.fail_after(10):
        server.handshake_script[:] = [reject_handshake(503), reject_handshake(429), reject_handshake(403)]
        with pytest.raises(ReconnectFailed) as info:
            async with connect(server.url, backoff=FAST):
                await trio.sleep_forever()
    assert isinstance(info.value.cause, HandshakeRejected) and info.value.cause.status == 403
    assert len(server.connect_times) == 3


# ------------------------------------------------------------------------------------ bounds


def welcome_then(*texts: str) -> Any:
    async def handler(conn: Conn) -> None:
        for text in texts:
            await conn.send(text)
        await conn.serve_requests()

    return handler


@pytest.mark.parametrize(
    "texts",
    [
        (welcome(interval=0),),
        (welcome(timeout=0),),
        (welcome(interval=1e9),),
        (welcome(interval=10**400),),
        (welcome(), '{"type":"event","topic":"feed","offset":1,"data":' + "[" * 5000 + "]" * 5000 + "}"),
        (welcome(), frame("published", topic="feed", offset=1, ref="r" * 129)),
        (welcome(), "not json"),
    ],
    ids=[
        "interval-0",
        "timeout-0",
        "interval-1e9",
        "interval-400-digits",
        "deep",
        "ref-129",
        "json",
    ],
)
async def test_a_frame_out_of_bounds_fails_with_a_protocol_error_and_is_never_retried(
    texts: tuple[str, ...],
) -> None:
    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [welcome_then(*texts)] * 2
        with pytest.raises(ReconnectFailed) as info:
            async with connect(server.url, backoff=FAST):
                await trio.sleep_forever()
    assert type(info.value.cause) is ProtocolError
    assert server.connections == 1


async def test_a_ref_of_128_characters_is_accepted() -> None:
    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [
            welcome_then(welcome(), frame("published", topic="feed", offset=1, ref="r" * 128))
        ]
        async with connect(server.url, backoff=FAST) as client:
            await client.wait_state(ClientState.OPEN)
            assert await client.publish("feed", 1) == 1  # the link survived the odd frame
        assert server.connections == 1


async def test_a_flood_of_unmatched_error_frames_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trioconn.client")
    flood = [frame("error", code="internal", message=f"oops {i}") for i in range(3000)]
    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [welcome_then(welcome(), *flood)]
        async with connect(server.url) as client:
            await client.wait_state(ClientState.OPEN)
            assert await client.publish("feed", 1) == 1  # every error frame was read by then
    lines = [r.getMessage() for r in caplog.records if r.name == "trioconn.client"]
    assert len(lines) == 1 and "oops 0" in lines[0]


# ------------------------------------------------------------------------ tokens stay secret


SECRET = "tok-5ecret-TOKEN"


async def test_the_token_never_appears_in_errors_state_changes_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioconn")

    async def tokens() -> str:
        return SECRET

    def echo(connection: Any, request: Any) -> Any:
        return connection.respond(401, f"no entry for {request.path} {dict(request.headers)}\n")

    async def echo_in_close_reason(conn: Conn) -> None:
        await conn.send(welcome())
        await conn.close(1012, conn.path[-40:])

    with IndependentServer() as server, trio.fail_after(10):
        server.handshake_script[:] = [lambda c, r: None, echo]
        server.script[:] = [echo_in_close_reason]
        with pytest.raises(ReconnectFailed) as info:
            async with connect(server.url, token_provider=tokens, backoff=FAST) as client:
                changes = client.state_changes()
                await trio.sleep_forever()
        seen = [change async for change in changes]
    texts = [r.getMessage() for r in caplog.records]
    for change in seen:
        texts.append(change.reason)
        texts.extend(messages(change.exception))
    texts.extend(messages(info.value))
    assert isinstance(info.value.cause, HandshakeRejected) and info.value.cause.status == 401
    assert [text for text in texts if SECRET in text] == []
    assert sum("<redacted>" in text for text in texts) >= 2  # the close reason and the 401 body


def messages(exc: BaseException | None) -> list[str]:
    texts: list[str] = []
    while exc is not None:
        texts += [str(exc), repr(exc), repr(getattr(exc, "body", ""))]
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException) and cause is not exc.__cause__:
            texts += messages(cause)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return texts


# -------------------------------------------------------------------------- counting attempts


async def test_max_attempts_after_a_healthy_link_is_lost_is_that_many_reconnect_attempts() -> None:
    with IndependentServer() as server, trio.fail_after(10):
        server.handshake_script[:] = [lambda c, r: None] + [reject_handshake(503)] * 10
        server.script[:] = [close_after(1012)]
        backoff = Backoff(base=0.01, cap=0.01, max_attempts=3)
        with pytest.raises(ReconnectFailed, match="gave up after 3"):
            async with connect(server.url, backoff=backoff, min_uptime=0):
                await trio.sleep_forever()
    assert len(server.connect_times) == 1 + 3


async def test_the_fresh_token_retry_after_4401_does_not_count_as_an_attempt() -> None:
    async def tokens() -> str:
        return "t0k3n"

    with IndependentServer() as server, trio.fail_after(10):
        # attempt 1 is accepted and closed with 4401; the free retry and attempt 2 are refused
        server.handshake_script[:] = [lambda c, r: None] + [reject_handshake(503)] * 5
        server.script[:] = [close_after(4401)]
        backoff = Backoff(base=0.01, cap=0.01, max_attempts=2)
        with pytest.raises(ReconnectFailed, match="gave up after 2"):
            async with connect(server.url, backoff=backoff, token_provider=tokens):
                await trio.sleep_forever()
    assert len(server.connect_times) == 3


# ------------------------------------------------------------------ controls for a status UI


async def test_pause_resume_and_reconnect_now_against_the_independent_server() -> None:
    async def close_when_asked(conn: Conn) -> None:
        await conn.send(welcome())
        await conn.recv_type("publish")
        await conn.close(1012, "restart")

    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [close_when_asked]
        async with connect(server.url, backoff=Backoff(base=60, cap=60)) as client:
            await client.wait_state(ClientState.OPEN)
            client.pause()
            with pytest.raises(ConnectionBroken):
                await client.publish("t", 1)  # the server closes instead of answering
            lost = await client.wait_state(ClientState.RECONNECTING)
            assert lost.next_attempt_at is None and lost.code == 1012
            await trio.sleep(0.1)
            assert server.connections == 1
            client.resume()  # the backoff (up to 60 s) applies again
            assert client.statistics().next_attempt_at is not None
            assert client.reconnect_now()
            await client.wait_state(ClientState.OPEN)
            assert server.connections == 2


async def test_a_users_exception_group_comes_out_as_that_group_against_the_independent_server() -> None:
    group = ExceptionGroup("mine", [KeyError("a"), ValueError("b")])
    with IndependentServer() as server, trio.fail_after(10), pytest.raises(ExceptionGroup) as info:
        async with connect(server.url) as client:
            await client.wait_state(ClientState.OPEN)
            raise group
    assert info.value.message == "mine"
    assert all(a is b for a, b in zip(info.value.exceptions, group.exceptions, strict=True))


async def test_events_flow_and_resume_against_the_independent_server() -> None:
    async def events(conn: Conn) -> None:
        await conn.send(welcome())
        sub = await conn.recv_type("subscribe")
        answer = frame(
            "subscribed", topic="feed", epoch="e1", offset=0, kind="stream", replayed=0, ref=sub["ref"]
        )
        await conn.send(answer)
        for offset in (1, 2, 2, 3):  # a duplicate is dropped
            await conn.send(frame("event", topic="feed", offset=offset, data=offset))
        await conn.serve_requests()

    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [events]
        async with connect(server.url) as client, client.subscribe("feed") as sub:
            items = [await sub.__anext__() for _ in range(3)]
    assert items == [EventItem("feed", "e1", n, n) for n in (1, 2, 3)]
    assert json.loads(json.dumps([i.data for i in items])) == [1, 2, 3]
