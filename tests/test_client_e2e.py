"""The client against the real Hub: in memory under virtual time, and over loopback TCP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio
import trio.testing

from trioconn import (
    Backoff,
    ClientState,
    ConnectionBroken,
    ConnectionClosed,
    EventItem,
    HandshakeRejected,
    HandshakeRequest,
    Hub,
    ReconnectFailed,
    ResetItem,
    ServerError,
    SnapshotItem,
    connect,
    wrap_client_stream,
)
from trioconn.testing import open_fault_proxy, open_memory_link

from ._client_fakes import bounded

URL = "ws://localhost/"


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


@bounded
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


@bounded
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


@bounded
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


@bounded
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


@bounded
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
    assert type(states[1].code) is int and type(states[1].exception) is ConnectionClosed
    assert client.statistics().attempts == 3
    assert isinstance(info.value.cause, ConnectionBroken)  # nobody listens: connection refused


# ------------------------------------------------------------ a received close always decides


async def close_session_at(hub: Hub, moment: str, spins: int, code: int) -> None:
    """Close the one session with ``code`` at ``moment`` (see the MiniHub version in test_client)."""
    (session,) = hub.sessions()
    if moment != "welcome":
        await trio.sleep(hub.config.heartbeat_interval)  # the moment the hub queues a ping
    if moment == "burst":
        for offset in range(300):
            hub.publish_nowait("feed", offset)
    for _ in range(spins):
        await trio.lowlevel.checkpoint()
    hub.close(session, code, "closing")


@bounded
async def test_hub_closing_1000_at_any_moment_ends_the_client_without_a_reconnect_100_of_100(
    autojump_clock: Any,
) -> None:
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=30)
    outcomes = []
    async with open_memory_link(hub.serve_stream) as link:
        for run in range(100):
            async with (
                connect(URL, transport=link.transport) as client,
                client.subscribe("feed", buffer_size=512),
            ):
                await client.wait_state(ClientState.OPEN)
                await close_session_at(hub, ("welcome", "ping", "burst")[run % 3], run // 3, 1000)
                final = await client.wait_state(ClientState.CLOSED)
            stats = client.statistics()
            outcomes.append((final.code, stats.attempts, stats.reconnects))
            await link.wait_connections(0)
        accepted = link.accepted
        await hub.aclose()
    assert outcomes == [(1000, 1, 0)] * 100
    assert accepted == 100


@pytest.mark.parametrize(("code", "token"), [(4403, True), (4401, False)])
@bounded
async def test_hub_closing_with_a_final_code_after_welcome_fails_once(
    autojump_clock: Any, code: int, token: bool
) -> None:
    async def tokens() -> str:
        return "t0k3n"

    hub = Hub(heartbeat_interval=1, heartbeat_timeout=30)
    async with open_memory_link(hub.serve_stream) as link:
        for run in range(15):
            with pytest.raises(ReconnectFailed) as info:
                async with (
                    connect(
                        URL, transport=link.transport, token_provider=tokens if token else None
                    ) as client,
                    client.subscribe("feed", buffer_size=512),
                ):
                    await client.wait_state(ClientState.OPEN)
                    await close_session_at(hub, ("welcome", "ping", "burst")[run % 3], run // 3, code)
                    await trio.sleep_forever()
            assert client.statistics().attempts == 1
            assert isinstance(info.value.cause, ConnectionClosed) and info.value.cause.code == code
        await trio.sleep(60)
        assert link.accepted == 15
        await hub.aclose()


async def test_loopback_hub_closing_1000_after_a_burst_or_at_welcome_never_reconnects() -> None:
    # pings every 20 ms, so one is in flight during most bursts
    hub = Hub(heartbeat_interval=0.02, heartbeat_timeout=2, outbox_size=10_000)
    outcomes = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            for run in range(10):
                async with (
                    connect(f"ws://127.0.0.1:{port}/") as client,
                    client.subscribe("feed", buffer_size=4096) as sub,
                ):
                    await client.wait_state(ClientState.OPEN)
                    (session,) = hub.sessions()
                    if run % 2:
                        for i in range(3000):
                            await hub.publish("feed", i)
                    hub.close(session, 1000, "done")
                    async for _ in sub:
                        pass
                    final = await client.wait_state(ClientState.CLOSED)
                stats = client.statistics()
                outcomes.append((final.code, stats.attempts, stats.reconnects))
                with trio.fail_after(5):
                    while hub.statistics().connections:  # noqa: ASYNC110 - the hub has no event for it
                        await trio.sleep(0.001)
            await hub.aclose()
    assert outcomes == [(1000, 1, 0)] * 10


# --------------------------------------------------------------------------------- dead link


@bounded
async def test_hub_that_stops_answering_is_reported_at_timeout_plus_interval(autojump_clock: Any) -> None:
    hub = Hub(heartbeat_interval=0.3, heartbeat_timeout=0.9)
    async with open_memory_link(hub.serve_stream) as link:
        async with connect(URL, transport=link.transport) as client:
            await client.wait_state(ClientState.OPEN)
            opened = trio.current_time()
            await trio.sleep(0.45)  # the ping at 0.3 was the last frame
            assert client.statistics().pings_answered == 1
            link.stall()  # both sockets stay open: the peer just stops answering (SIGSTOP)
            stopped = trio.current_time()
            lost = await client.wait_state(ClientState.RECONNECTING)
            reported = trio.current_time()
        link.pass_through()
        await hub.aclose()
    assert reported - opened == pytest.approx(0.3 + 1.2)  # last frame + timeout + interval
    assert reported - stopped <= 1.2
    assert isinstance(lost.exception, ConnectionBroken) and "heartbeat" in lost.reason


async def test_loopback_hub_behind_a_stalled_proxy_is_reported_without_waiting_for_a_close() -> None:
    hub = Hub(heartbeat_interval=0.1, heartbeat_timeout=0.3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            async with open_fault_proxy("127.0.0.1", port) as proxy:
                async with connect(f"ws://127.0.0.1:{proxy.port}/") as client:
                    await client.wait_state(ClientState.OPEN)
                    proxy.stall()
                    stopped = trio.current_time()
                    await client.wait_state(ClientState.RECONNECTING)
                    reported = trio.current_time()
                    proxy.pass_through()
                # let the proxy's connections end by themselves (cancelling one leaks a socket)
                await proxy.wait_connections(0)
            await hub.aclose()
    # timeout + interval = 0.4 s at most after the last frame; a close handshake would add 5 s
    assert reported - stopped < 0.4 + 0.3


# ------------------------------------------------------------------- the opening handshake


@pytest.mark.parametrize("reset", [False, True])
async def test_loopback_connections_dropped_during_the_handshake_cost_a_backoff_delay_each(
    reset: bool,
) -> None:
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            async with open_fault_proxy("127.0.0.1", port) as proxy:
                # accepted at TCP level, then closed (or reset) before any answer
                proxy.drop_for(0.3, reset=reset)
                started = trio.current_time()
                backoff = Backoff(base=0.02, cap=0.02)
                async with connect(
                    f"ws://127.0.0.1:{proxy.port}/", backoff=backoff, connect_timeout=10
                ) as client:
                    await client.wait_state(ClientState.OPEN)
                    opened = trio.current_time()
                    attempts = client.statistics().attempts
            await hub.aclose()
    assert proxy.refused >= 3 and attempts == proxy.refused + 1
    assert opened - started < 0.3 + 0.5  # not connect_timeout (10 s) per dropped attempt


# -------------------------------------------------------------------------- counting attempts


@pytest.mark.parametrize("max_attempts", [1, 5])
@bounded
async def test_hub_gone_after_a_healthy_link_gets_max_attempts_reconnect_attempts(
    autojump_clock: Any, max_attempts: int
) -> None:
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    async with open_memory_link(hub.serve_stream) as link:
        with pytest.raises(ReconnectFailed, match=f"gave up after {max_attempts} failed") as info:
            backoff = Backoff(max_attempts=max_attempts)
            async with connect(URL, transport=link.transport, backoff=backoff, min_uptime=5) as client:
                await client.wait_state(ClientState.OPEN)
                await trio.sleep(6)
                link.drop_for(10_000)  # the server is gone: every new connection is refused
                await trio.sleep_forever()
        await hub.aclose()
    assert link.refused == max_attempts
    assert client.statistics().attempts == 1 + max_attempts
    assert isinstance(info.value.cause, ConnectionBroken)


HUB_PROCESS = """
import sys, trio, trioconn
async def main():
    hub = trioconn.Hub(heartbeat_interval=float(sys.argv[1]), heartbeat_timeout=float(sys.argv[2]))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        print(port, flush=True)
        await trio.sleep_forever()
trio.run(main)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX")
async def test_a_hub_process_stopped_with_sigstop_is_reported_within_timeout_plus_interval() -> None:
    interval, timeout = 0.1, 0.3
    with trio.fail_after(10):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", HUB_PROCESS, str(interval), str(timeout)], stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            port = int((await process.stdout.receive_some(100)).decode())
            async with connect(f"ws://127.0.0.1:{port}/", connect_timeout=1) as client:
                await client.wait_state(ClientState.OPEN)
                os.kill(process.pid, signal.SIGSTOP)
                stopped = trio.current_time()
                lost = await client.wait_state(ClientState.RECONNECTING)
                reported = trio.current_time()
                os.kill(process.pid, signal.SIGCONT)
        finally:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()  # this test's own process, by PID
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()
    assert "heartbeat" in lost.reason
    # declared at timeout + interval after the last frame (before the stop), plus scheduling slack;
    # waiting for a close handshake with the stopped process would add CLOSE_TIMEOUT (5 s)
    assert reported - stopped < timeout + interval + 0.5


# ------------------------------------------- the hub's outbox, seen by a client that stops reading


async def _close_when_cancelled(stream: trio.abc.AsyncResource) -> None:
    try:
        await trio.sleep_forever()
    finally:
        await trio.aclose_forcefully(stream)


def lockstep_transport(hub: Hub, nursery: trio.Nursery) -> Any:
    """A transport whose every send waits until the other side reads: a client that stops
    reading stops the hub's sender at once (no socket buffer in between)."""

    async def transport(attempt: trio.Nursery, url: str, headers: Any) -> Any:
        client_stream, server_stream = trio.testing.lockstep_stream_pair()
        nursery.start_soon(hub.serve_stream, server_stream)
        attempt.start_soon(_close_when_cancelled, client_stream)
        return await wrap_client_stream(attempt, client_stream, url, headers)

    return transport


def queued(hub: Hub) -> int:
    (session,) = hub.statistics().sessions
    return session.queued


@bounded
async def test_hub_outbox_full_a_state_value_still_replaces_the_queued_one_and_a_new_one_overflows(
    autojump_clock: Any,
) -> None:
    hub = Hub(heartbeat_interval=100, heartbeat_timeout=300, outbox_size=2)
    async with trio.open_nursery() as nursery:
        async with (
            connect(URL, transport=lockstep_transport(hub, nursery)) as client,
            client.subscribe("t", buffer_size=1),
            client.subscribe("s", buffer_size=1),
            client.subscribe("s2", buffer_size=1),
        ):
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            # nobody consumes: publish until the hub's sender is stuck and one event waits
            for i in range(100):
                hub.publish_nowait("t", i)
                await trio.testing.wait_all_tasks_blocked()
                if queued(hub) == 1:
                    break
            assert queued(hub) == 1
            hub.set_state_nowait("s", 1)
            assert queued(hub) == 2  # the outbox is full
            for value in range(2, 10):
                hub.set_state_nowait("s", value)  # replaces the queued value: no overflow
                await trio.testing.wait_all_tasks_blocked()
                assert hub.statistics().connections == 1 and queued(hub) == 2
            # a value for another state topic needs a slot of its own: that overflows, and the
            # connection is dropped at once, not after flushing for drain_timeout
            hub.set_state_nowait("s2", 1)
            overflowed = trio.current_time()
            with trio.fail_after(60):
                while hub.statistics().connections:
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.sleep(0.001)
            assert trio.current_time() - overflowed < 0.01  # drain_timeout is 5 s
            assert hub.statistics().disconnects.get("slow-consumer") == 1
        nursery.cancel_scope.cancel()
    await hub.aclose()


# ------------------------------------------------------------------- bounds, tokens, controls


async def test_loopback_hub_refusing_a_token_never_shows_it() -> None:
    secret = "tok-5ecret-TOKEN"

    async def tokens() -> str:
        return secret

    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3, authenticate=lambda request: None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(f"ws://127.0.0.1:{port}/", token_provider=tokens):
                    await trio.sleep_forever()
            await hub.aclose()
    cause = info.value.cause
    assert isinstance(cause, HandshakeRejected) and cause.status == 401
    assert secret not in f"{info.value} {info.value!r} {cause} {cause!r} {cause.__cause__!r}"


@bounded
async def test_hub_pause_reconnect_now_and_next_attempt_at(autojump_clock: Any) -> None:
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    async with open_memory_link(hub.serve_stream) as link:
        async with connect(URL, transport=link.transport, backoff=Backoff(base=30, cap=30)) as client:
            await client.wait_state(ClientState.OPEN)
            client.pause()
            (session,) = hub.sessions()
            hub.close(session, 4001, "go away")
            lost = await client.wait_state(ClientState.RECONNECTING)
            assert lost.next_attempt_at is None and client.statistics().paused
            await trio.sleep(300)
            assert link.accepted == 1
            client.resume()
            waiting = client.statistics().next_attempt_at
            assert waiting is not None and waiting <= trio.current_time() + 30
            now = trio.current_time()
            assert client.reconnect_now()
            await client.wait_state(ClientState.OPEN)
            assert trio.current_time() == now and link.accepted == 2
        await hub.aclose()


@bounded
async def test_hub_a_users_exception_group_comes_out_as_that_group(autojump_clock: Any) -> None:
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    group = ExceptionGroup("mine", [KeyError("a"), ValueError("b")])
    async with open_memory_link(hub.serve_stream) as link:
        with pytest.raises(ExceptionGroup) as info:
            async with connect(URL, transport=link.transport) as client:
                await client.wait_state(ClientState.OPEN)
                raise group
        await hub.aclose()
    assert info.value.message == "mine"
    assert all(a is b for a, b in zip(info.value.exceptions, group.exceptions, strict=True))
