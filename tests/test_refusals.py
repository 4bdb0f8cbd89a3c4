"""Refusals a browser can see: ``Hub(refuse_with="close")`` accepts a refused upgrade and closes it.

The mapping from HTTP status to close code is one pure function (``refusal_close_code``), checked
here against the decision table for every status; then the standalone hub carries it out over
memory streams (every row of the mapping) and over loopback TCP, where the Python client decides
on the close code as on any other (4401 → one retry with a fresh token, 4403 → fail), and an
independent client (``websockets``) sees the upgrade succeed and then the close code with its
reason. The ASGI front end is in ``test_asgi.py`` (messages) and ``test_asgi_refusals.py``
(uvicorn, hypercorn).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
import websockets.exceptions
from websockets.trio.client import connect as ws_connect

import trioconn
from trioconn import (
    ClientState,
    ConnectionClosed,
    HandshakeRejected,
    HandshakeRequest,
    Hub,
    ReconnectFailed,
    Refused,
    connect,
    tcp_transport,
)
from trioconn._core.decision import AttemptEnd, EndKind, classify
from trioconn._core.protocol import CLOSE_CODES, CloseAction, close_action, refusal_close_code

from ._client_fakes import token_sequence

# -- the mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, 4401),
        (403, 4403),
        (503, 1001),
        (500, 1011),
        (408, 1013),
        (425, 1013),
        (429, 1013),
        (502, 1013),
        (504, 1013),
        (599, 1013),
        (400, 1008),
        (404, 1008),
        (426, 1008),
        (302, 1008),
        (100, 1008),
    ],
)
def test_each_refusal_status_has_its_close_code(status: int, code: int) -> None:
    assert refusal_close_code(status) == code
    assert Refused(status, "why").close_code == code


def test_a_client_decides_on_the_close_code_as_on_the_status_except_that_401_may_reauth() -> None:
    for status in range(100, 600):
        code = refusal_close_code(status)
        assert code in CLOSE_CODES, status  # always a code every client knows by name
        on_close = close_action(code)
        on_status = classify(AttemptEnd(EndKind.REJECTED, status=status))
        if status == 401:
            assert (on_status, on_close) == (CloseAction.FAIL, CloseAction.REAUTH)
        else:
            assert on_close is on_status, status


def test_the_close_reason_is_cut_to_what_a_close_frame_carries() -> None:
    refusal = Refused(403, "é" * 100)  # 200 bytes of UTF-8
    assert refusal.close_reason == "é" * 61  # 122 bytes: the 123rd would split a character
    assert Refused(401, "unauthorized").close_reason == "unauthorized"


def test_the_mapping_table_in_the_server_docs_is_the_function() -> None:
    text = (Path(__file__).parent.parent / "docs" / "server.md").read_text()
    table = text.split("<!-- refusal-codes:start -->\n")[1].split("<!-- refusal-codes:end -->")[0]
    rows = [line.split("|")[1:-1] for line in table.strip().splitlines()[2:]]
    examples = {"any other": [302, 400, 404, 426], "408, 425, 429, other 5xx": [408, 425, 429, 502, 599]}
    seen = set()
    for status_cell, code_cell, _when, action_cell in rows:
        statuses = examples.get(status_cell.strip()) or [int(status_cell)]
        code = int(code_cell)
        action = action_cell.strip().split("**")[1]
        for status in statuses:
            assert refusal_close_code(status) == code, status
        assert close_action(code).value == action, code
        seen.add(code)
    assert seen == {refusal_close_code(status) for status in range(100, 600)}


# -- the standalone hub, in memory ----------------------------------------------------------


async def open_raw(hub: Hub, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    """Open a raw WebSocket to ``hub`` over memory streams; the close reason (or a frame) it got."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with client_stream, trio.open_nursery() as nursery:
        nursery.start_soon(hub.serve_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]  # annotated for sockets, takes any stream
            "localhost",
            path,
            extra_headers=headers,
        )
        try:
            return await ws.get_message()  # a refused client gets no welcome
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason
        finally:
            await ws.aclose()


def hook_refusing_with(status: int | None) -> Callable[[HandshakeRequest], Awaitable[Any]]:
    async def authenticate(request: HandshakeRequest) -> Any:
        if request.token == "good":
            return "user"
        if status is None:
            raise RuntimeError("a bug in the hook")
        if status == 401:
            return None
        raise HandshakeRejected(status, f"refused with {status}".encode())

    return authenticate


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (401, 4401, "unauthorized"),
        (403, 4403, "refused with 403"),
        (404, 1008, "refused with 404"),
        (429, 1013, "refused with 429"),
        (502, 1013, "refused with 502"),
        (503, 1001, "refused with 503"),
        (None, 1011, "internal error"),  # the hook raised: HTTP 500
    ],
)
async def test_close_mode_accepts_then_closes_with_the_code_and_reason_and_counts_it(
    autojump_clock: Any, status: int | None, code: int, reason: str
) -> None:
    hub = Hub(refuse_with="close", authenticate=hook_refusing_with(status))
    closed = await open_raw(hub, "/?token=bad")
    assert isinstance(closed, trio_websocket.CloseReason), closed
    assert (closed.code, closed.reason) == (code, reason)
    stats = hub.statistics()
    assert stats.disconnects == {f"refused-{status or 500}": 1}
    assert stats.accepted == 0  # no connection, no session
    assert "welcome" in await open_raw(hub, "/?token=good")  # the good token still gets in


async def test_close_mode_refuses_a_foreign_origin_with_4403(autojump_clock: Any) -> None:
    hub = Hub(refuse_with="close", allowed_origins=["https://app.example"])
    closed = await open_raw(hub, headers=[(b"Origin", b"https://evil.example")])
    assert (closed.code, closed.reason) == (4403, "origin https://evil.example is not allowed")
    assert hub.statistics().disconnects == {"refused-403": 1}
    assert "welcome" in await open_raw(hub, headers=[(b"Origin", b"https://app.example")])


async def test_close_mode_a_client_that_never_answers_the_close_is_let_go_after_2_s(
    autojump_clock: Any,
) -> None:
    hub = Hub(refuse_with="close", authenticate=lambda request: None)
    client, server = trio.testing.memory_stream_pair()
    close_frame = b"\x88\x0e" + (4401).to_bytes(2, "big") + b"unauthorized"
    served_for = -1.0

    async def serve() -> None:
        nonlocal served_for
        start = trio.current_time()
        await hub.serve_stream(server)
        served_for = trio.current_time() - start

    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client.send_all(
            b"GET /?token=x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        received = b""
        while close_frame not in received:  # the 101, then the close frame; never answered
            received += await client.receive_some()
        assert received.startswith(b"HTTP/1.1 101 ")
    assert 0 < served_for <= 2.0  # the close handshake is bounded: the socket is let go
    assert hub.statistics().disconnects == {"refused-401": 1}


async def test_http_mode_is_the_default_and_answers_with_the_status(autojump_clock: Any) -> None:
    hub = Hub(authenticate=hook_refusing_with(401))
    assert hub.config.refuse_with == "http"
    with pytest.RaisesGroup(trio_websocket.ConnectionRejected, flatten_subgroups=True) as info:
        await open_raw(hub, "/?token=bad")
    assert info.value.exceptions[0].status_code == 401  # type: ignore[union-attr]
    assert hub.statistics().disconnects == {"refused-401": 1}


# -- over loopback: the Python client and an independent one --------------------------------


def only_good(seen: list[str | None]) -> Callable[[HandshakeRequest], Any]:
    def authenticate(request: HandshakeRequest) -> Any:
        seen.append(request.token)
        return request.token if request.token == "good" else None

    return authenticate


async def with_origin(nursery: trio.Nursery, url: str, headers: list[tuple[bytes, bytes]]) -> Any:
    return await tcp_transport(nursery, url, [*headers, (b"origin", b"https://evil.example")])


async def test_loopback_4401_makes_the_client_fetch_a_fresh_token_once_and_connect() -> None:
    seen: list[str | None] = []
    provide, handed = token_sequence("expired", "good")
    hub = Hub(refuse_with="close", authenticate=only_good(seen), authorize=lambda *args: True)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            async with connect(f"ws://127.0.0.1:{port}/", token_provider=provide) as client:
                async with client.subscribe("t", last=10) as sub:  # replays what came first
                    await client.wait_state(ClientState.OPEN)
                    await hub.publish("t", "hello")
                    item = await sub.__anext__()
                stats = client.statistics()
            await hub.aclose()
    assert isinstance(item, trioconn.EventItem) and item.data == "hello"
    assert handed == ["expired", "good"] and seen == ["expired", "good"]
    assert (stats.attempts, stats.connects) == (2, 1)
    assert hub.statistics().disconnects["refused-401"] == 1


async def test_loopback_4401_again_after_the_fresh_token_fails_after_exactly_two_attempts() -> None:
    seen: list[str | None] = []
    provide, handed = token_sequence("bad")
    hub = Hub(refuse_with="close", authenticate=only_good(seen))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(f"ws://127.0.0.1:{port}/", token_provider=provide) as client:
                    await trio.sleep_forever()
            await hub.aclose()
    cause = info.value.cause
    assert type(cause) is ConnectionClosed and (cause.code, cause.reason) == (4401, "unauthorized")
    assert len(handed) == len(seen) == client.statistics().attempts == 2
    assert hub.statistics().disconnects == {"refused-401": 2}


async def test_loopback_refused_origin_fails_with_4403_after_one_attempt() -> None:
    hub = Hub(refuse_with="close", allowed_origins=["https://app.example"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(f"ws://127.0.0.1:{port}/", transport=with_origin) as client:
                    await trio.sleep_forever()
            await hub.aclose()
    cause = info.value.cause
    assert type(cause) is ConnectionClosed and cause.code == 4403
    assert cause.reason == "origin https://evil.example is not allowed"
    assert client.statistics().attempts == 1
    assert hub.statistics().disconnects == {"refused-403": 1}


async def test_an_independent_client_sees_the_upgrade_succeed_then_4401_with_the_reason() -> None:
    hub = Hub(refuse_with="close", authenticate=lambda request: None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            async with ws_connect(
                f"ws://127.0.0.1:{port}/?token=nope", proxy=None, open_timeout=5, close_timeout=5
            ) as ws:
                assert ws.response is not None and ws.response.status_code == 101
                with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                    await ws.recv()
            await hub.aclose()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4401, "unauthorized")
    assert hub.statistics().disconnects == {"refused-401": 1}
