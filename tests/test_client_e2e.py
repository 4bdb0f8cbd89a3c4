"""The client against the real Hub: in memory under virtual time, and over loopback TCP."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trioconn import (
    Backoff,
    ClientState,
    ConnectionBroken,
    EventItem,
    HandshakeRejected,
    HandshakeRequest,
    Hub,
    ReconnectFailed,
    ResetItem,
    ServerError,
    SnapshotItem,
    connect,
)
from trioconn.testing import open_memory_link

URL = "ws://localhost/"


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


async def test_hub_connection_closed_mid_stream_resumes_with_no_gap_and_no_duplicate(
    autojump_clock: Any,
) -> None:
    hub = Hub(heartbeat_interval=2, heartbeat_timeout=6, authorize=allow_all)
    async with open_memory_link(hub.serve_stream) as link:
        for i in range(1, 4):
            hub.publish_nowait("feed", i)
        async with connect(URL, transport=link.transport) as client, client.subscribe("feed", last=3) as sub:
            seen: list[int] = []
            async for item in sub:
                assert isinstance(item, EventItem)
                seen.append(item.data)
                if item.data == 3:
                    (session,) = hub.sessions()
                    hub.close(session, 4001, "slow consumer")
                    for i in range(4, 8):
                        hub.publish_nowait("feed", i)  # published while the client is away
                if item.data == 7:
                    await client.wait_state(ClientState.OPEN)
                    hub.publish_nowait("feed", 8)
                if item.data == 8:
                    break
            stats = client.statistics()
        await hub.aclose()
    assert seen == list(range(1, 9))
    assert (stats.connects, stats.reconnects, stats.resets) == (2, 1, 0)


async def test_hub_restart_gives_a_reset_with_the_fresh_snapshot(autojump_clock: Any) -> None:
    first = Hub(heartbeat_interval=2, heartbeat_timeout=6)
    async with open_memory_link(first.serve_stream) as link:
        first.set_state_nowait("job", {"pct": 10})
        async with connect(URL, transport=link.transport) as client, client.subscribe("job") as sub:
            snapshot = await sub.__anext__()
            assert isinstance(snapshot, SnapshotItem) and snapshot.value == {"pct": 10}
            # the server process restarts: a new hub with fresh epochs
            second = Hub(heartbeat_interval=2, heartbeat_timeout=6)
            second.set_state_nowait("job", {"pct": 70})
            link.serve = second.serve_stream
            await first.aclose()
            reset = await sub.__anext__()
            second.set_state_nowait("job", {"pct": 80})
            after = await sub.__anext__()
            assert client.statistics().resets == 1
        await second.aclose()
    assert isinstance(reset, ResetItem)
    assert reset.has_snapshot and reset.snapshot == {"pct": 70}
    assert reset.previous_epoch == snapshot.epoch != reset.epoch
    assert isinstance(after, EventItem) and after.data == {"pct": 80}


async def test_hub_closing_1000_after_the_last_event_ends_the_client_without_reconnecting(
    autojump_clock: Any,
) -> None:
    hub = Hub(heartbeat_interval=2, heartbeat_timeout=6)
    async with open_memory_link(hub.serve_stream) as link:
        async with connect(URL, transport=link.transport) as client:
            async with client.subscribe("job") as sub:
                await client.wait_state(ClientState.OPEN)
                await trio.testing.wait_all_tasks_blocked()
                for pct in (50, 100):
                    hub.set_state_nowait("job", pct)
                (session,) = hub.sessions()
                hub.close(session, 1000, "done")
                items = [item async for item in sub]
            final = await client.wait_state(ClientState.CLOSED)
            await trio.sleep(100)
        assert link.accepted == 1
        await hub.aclose()
    assert [i.data for i in items if isinstance(i, EventItem)][-1] == 100
    assert (final.code, final.reason) == (1000, "done")


async def test_hub_heartbeat_keeps_the_link_up_and_pings_are_answered(autojump_clock: Any) -> None:
    hub = Hub(heartbeat_interval=2, heartbeat_timeout=6)
    async with open_memory_link(hub.serve_stream) as link:
        async with connect(URL, transport=link.transport) as client:
            await client.wait_state(ClientState.OPEN)
            await trio.sleep(61)
            stats = client.statistics()
        await hub.aclose()
    assert stats.attempts == 1 and stats.state is ClientState.OPEN
    assert stats.pings_answered >= 29
    assert stats.last_rtt is not None


async def test_hub_publish_round_trip_and_forbidden_publish(autojump_clock: Any) -> None:
    def authorize(identity: Any, topic: str, action: str) -> bool:
        return action == "subscribe" or topic.startswith("public/")

    hub = Hub(heartbeat_interval=2, heartbeat_timeout=6, authorize=authorize)
    async with open_memory_link(hub.serve_stream) as link:
        async with connect(URL, transport=link.transport) as client:
            async with client.subscribe("public/chat") as sub:
                assert await client.publish("public/chat", "hi") == 1
                item = await sub.__anext__()
            with pytest.raises(ServerError) as info:
                await client.publish("private/x", "no")
        await hub.aclose()
    assert isinstance(item, EventItem) and item.data == "hi"
    assert info.value.code == "forbidden"


# ----------------------------------------------------------------------- real loopback TCP


async def test_loopback_subscribe_publish_and_token_in_query_and_header() -> None:
    seen: list[HandshakeRequest] = []

    def authenticate(request: HandshakeRequest) -> Any:
        seen.append(request)
        return request.token if request.token == "s3cret" else None

    async def tokens() -> str:
        return "s3cret"

    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3, authenticate=authenticate, authorize=allow_all)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}/live"
            async with connect(url, token_provider=tokens) as client, client.subscribe("t") as sub:
                assert await client.publish("t", {"n": 1}) == 1
                item = await sub.__anext__()
            await hub.aclose()
    assert isinstance(item, EventItem) and item.data == {"n": 1}
    assert seen[0].query["token"] == "s3cret"
    assert seen[0].headers["authorization"] == "Bearer s3cret"


async def test_loopback_auth_rejection_fails_without_retry() -> None:
    attempts = 0

    def authenticate(request: HandshakeRequest) -> Any:
        nonlocal attempts
        attempts += 1
        return None

    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3, authenticate=authenticate)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(f"ws://127.0.0.1:{port}/"):
                    await trio.sleep_forever()
            await hub.aclose()
    assert isinstance(info.value.cause, HandshakeRejected) and info.value.cause.status == 401
    assert attempts == 1


async def test_loopback_hub_shutdown_is_followed_by_reconnect_attempts() -> None:
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    backoff = Backoff(base=0.01, cap=0.05, max_attempts=3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(f"ws://127.0.0.1:{port}/", backoff=backoff) as client:
                    await client.wait_state(ClientState.OPEN)
                    changes = client.state_changes()
                    await hub.aclose()  # 1001, then nobody listens any more
                    await trio.sleep_forever()
    states = [c async for c in changes]
    assert states[1].state is ClientState.RECONNECTING and states[1].code == 1001
    assert client.statistics().attempts == 3
    assert isinstance(info.value.cause, ConnectionBroken)  # nobody listens: connection refused
