"""The reconnecting client against an in-memory fake server (tests/_client_fakes.py).

Everything timed runs on pytest-trio's ``autojump_clock`` (a MockClock that jumps ahead as soon
as every task is blocked), so heartbeats, timeouts and backoff take no wall time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from trioconn import (
    Backoff,
    ClientState,
    CloseAction,
    ConnectionBroken,
    ConnectionClosed,
    EventItem,
    HandshakeRejected,
    ProtocolError,
    ReconnectFailed,
    ResetItem,
    ServerError,
    SnapshotItem,
    StateChange,
    connect,
)

from ._client_fakes import (
    End,
    Error,
    Event,
    MiniHub,
    Ping,
    Publish,
    Session,
    Subscribe,
    Unsubscribe,
    bounded,
    close_after_welcome,
    eof_in_handshake,
    frozen,
    garbage_in_handshake,
    hang_handshake,
    reject,
    stream_closed,
    welcome_text,
)

URL = "ws://hub.test/live"


def client_tasks() -> list[str]:
    """Names of every live task started by trioconn's client code."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if "trioconn" in task.name or "_close_on_cancel" in task.name:
            names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return names


async def collect(sub: Any, count: int) -> list[Any]:
    items = []
    async for item in sub:
        items.append(item)
        if len(items) == count:
            break
    return items


# ------------------------------------------------------------------------------------ basics


@bounded
async def test_subscribe_receives_live_events_and_publish_returns_the_offset(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("prices") as sub:
            await client.wait_state(ClientState.OPEN)
            assert await client.publish("prices", {"p": 1}) == 1
            assert await client.publish("prices", {"p": 2}) == 2
            items = await collect(sub, 2)
        nursery.cancel_scope.cancel()
    assert items == [
        EventItem("prices", "epoch-1", 1, {"p": 1}),
        EventItem("prices", "epoch-1", 2, {"p": 2}),
    ]


@bounded
async def test_leaving_the_block_closes_with_1000_and_never_reconnects(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            leaving = trio.current_time()
        assert trio.current_time() == leaving  # the server's close reply is awaited, not a timeout
        await trio.testing.wait_all_tasks_blocked()
        session = hub.sessions[0]
        assert session.ws is not None and session.ws.closed is not None
        assert session.ws.closed.code == 1000
        assert stream_closed(session)
        assert client.state is ClientState.CLOSED
        await trio.sleep(100)
        assert len(hub.sessions) == 1
        assert client_tasks() == []
        nursery.cancel_scope.cancel()


@bounded
async def test_aclose_is_idempotent_and_requests_fail_after_it(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            await client.aclose()
            await client.aclose()
            with pytest.raises(ConnectionClosed) as info:
                await client.publish("t", 1)
            assert info.value.code == 1000
            with pytest.raises(ConnectionClosed):
                async with client.subscribe("t"):
                    pass  # pragma: no cover
        nursery.cancel_scope.cancel()


@bounded
async def test_publish_error_frame_raises_server_error(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.forbidden.add("secret")
        async with connect(URL, transport=hub.transport) as client:
            with pytest.raises(ServerError) as info:
                await client.publish("secret", 1)
            assert info.value.code == "forbidden"
            assert await client.publish("open", 1) == 1  # the link is still fine
        nursery.cancel_scope.cancel()


@bounded
async def test_publish_rejects_bad_arguments_before_waiting(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(hang_handshake)
        async with connect(URL, transport=hub.transport) as client:
            with pytest.raises(TypeError):
                await client.publish("t", object())
            with pytest.raises(TypeError):
                await client.publish("t", math.nan)
            with pytest.raises(ValueError, match="empty"):
                await client.publish("", 1)
        nursery.cancel_scope.cancel()


@bounded
async def test_publish_while_disconnected_waits_for_the_link(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [reject(503), reject(503)]
        async with connect(URL, transport=hub.transport, rng=random.Random(1)) as client:
            assert client.state is ClientState.CONNECTING
            assert await client.publish("t", "hello") == 1
            assert client.statistics().attempts == 3
        nursery.cancel_scope.cancel()


@bounded
async def test_link_lost_after_sending_but_before_the_ack_raises_connection_broken(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.swallow_publish = True
        async with connect(URL, transport=hub.transport) as client:
            async with trio.open_nursery() as inner:

                async def drop_when_published() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    assert any(isinstance(f, Publish) for f in hub.sessions[0].received)
                    hub.close_all(1012, "restart")

                inner.start_soon(drop_when_published)
                with pytest.raises(ConnectionBroken, match="may or may not"):
                    await client.publish("t", 1)
            hub.swallow_publish = False
            # not re-sent on the new link: the server saw exactly one publish frame
            assert await client.publish("t", 2) == 1
            assert sum(isinstance(f, Publish) for s in hub.sessions for f in s.received) == 2
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------------ resume


@bounded
async def test_link_dropped_mid_stream_resumes_with_no_gap_and_no_duplicate(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        for i in range(1, 4):
            hub.write("feed", i)
        async with connect(URL, transport=hub.transport, rng=random.Random(3)) as client:
            async with client.subscribe("feed", last=2) as sub:
                received: list[Any] = []
                async for item in sub:
                    received.append(item)
                    if item.offset == 5:
                        # the server restarts its connections mid stream; writes go on
                        hub.close_all(1012, "restart")
                        for i in range(6, 9):
                            hub.write("feed", i)
                    if item.offset == 4:
                        hub.write("feed", 5)
                    if len(received) == 2:
                        hub.write("feed", 4)
                    if item.offset == 8:
                        hub.write("feed", 9)
                    if item.offset == 9:
                        break
            stats = client.statistics()
        nursery.cancel_scope.cancel()
    assert [(i.offset, i.data) for i in received] == [(n, n) for n in range(2, 10)]
    assert all(isinstance(i, EventItem) for i in received)
    assert stats.connects == 2 and stats.reconnects == 1 and stats.resets == 0
    resume = [f for f in hub.sessions[1].received if isinstance(f, Subscribe)]
    assert resume == [Subscribe("feed", resume[0].ref, epoch="epoch-1", offset=5)]


@bounded
async def test_server_restart_with_new_epoch_delivers_a_reset_item_with_the_snapshot(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.set_state("job", {"progress": 10})
        async with connect(URL, transport=hub.transport, rng=random.Random(3)) as client:
            async with client.subscribe("job") as sub:
                first = await sub.__anext__()
                assert first == SnapshotItem("job", "epoch-1", 1, {"progress": 10})
                # one name for a state topic's value on both items; `value` is the older name
                assert first.data == first.value == {"progress": 10}
                hub.set_state("job", {"progress": 20})
                assert (await sub.__anext__()) == EventItem("job", "epoch-1", 2, {"progress": 20})
                hub.close_all(1012)
                hub.restart()
                hub.set_state("job", {"progress": 30})
                reset = await sub.__anext__()
                hub.set_state("job", {"progress": 40})
                after = await sub.__anext__()
            assert client.statistics().resets == 1
        nursery.cancel_scope.cancel()
    assert reset == ResetItem(
        "job", "epoch-2", 1, "epoch-1", 2, kind="state", snapshot={"progress": 30}, has_snapshot=True
    )
    assert after == EventItem("job", "epoch-2", 2, {"progress": 40})


@bounded
async def test_resume_too_old_for_history_is_a_reset_not_a_silent_gap(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery, history_size=2)
        async with (
            connect(URL, transport=hub.transport, rng=random.Random(3)) as client,
            client.subscribe("feed") as sub,
        ):
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            hub.write("feed", 1)
            assert (await sub.__anext__()).offset == 1
            hub.close_all(1001)
            for i in range(2, 7):
                hub.write("feed", i)  # history keeps only 5 and 6
            reset = await sub.__anext__()
            hub.write("feed", 7)
            after = await sub.__anext__()
        nursery.cancel_scope.cancel()
    assert isinstance(reset, ResetItem)
    assert (reset.epoch, reset.offset, reset.previous_offset) == ("epoch-1", 6, 1)
    assert after == EventItem("feed", "epoch-1", 7, 7)


@bounded
async def test_duplicate_or_stale_events_are_never_delivered(autojump_clock: Any) -> None:
    async def replaying_twice(session: Session) -> None:
        await session.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            await session.subscribed.wait()
            for offset in (1, 2, 2, 1, 3, 3, 4):
                session.send_nowait(Event("feed", offset, offset))

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(replaying_twice)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("feed") as sub:
                items = await collect(sub, 4)
            assert client.statistics().events_received == 7
        nursery.cancel_scope.cancel()
    assert [i.offset for i in items] == [1, 2, 3, 4]


@bounded
async def test_events_before_the_answer_to_this_connections_subscribe_are_ignored(
    autojump_clock: Any,
) -> None:
    async def early_event(session: Session) -> None:
        await session.accept()
        session.send_nowait(Event("feed", 99, "stale"))
        await session.run()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(early_event)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("feed") as sub:
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            hub.write("feed", "fresh")
            items = await collect(sub, 1)
        nursery.cancel_scope.cancel()
    assert items == [EventItem("feed", "epoch-1", 1, "fresh")]


@bounded
async def test_topic_end_finishes_iteration_and_is_not_resubscribed(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("job") as sub:
                await client.wait_state(ClientState.OPEN)
                await trio.testing.wait_all_tasks_blocked()
                hub.write("job", "a")
                hub.write("job", "b")
                hub.end("job")
                items = [item.data async for item in sub]
                assert client.statistics().subscriptions == 0
            assert client.state is ClientState.OPEN
        nursery.cancel_scope.cancel()
    assert items == ["a", "b"]


@bounded
async def test_leaving_a_subscription_sends_unsubscribe(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            async with client.subscribe("t"):
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            assert any(isinstance(f, Unsubscribe) for f in hub.sessions[0].received)
            assert hub.sessions[0].subs == set()
            # subscribing again on the same connection works
            async with client.subscribe("t") as sub:
                await trio.testing.wait_all_tasks_blocked()
                hub.write("t", 1)
                assert (await sub.__anext__()).offset == 1
        nursery.cancel_scope.cancel()


@bounded
async def test_subscribe_refused_by_server_raises_from_iteration(autojump_clock: Any) -> None:
    async def refuse(session: Session) -> None:
        await session.accept()

        class Refusing(Session):
            pass

        original = session.handle

        def handle(frame: Any) -> None:
            if isinstance(frame, Subscribe):
                session.send_nowait(Error("forbidden", "no", frame.ref, frame.topic))
            else:
                original(frame)

        session.handle = handle  # type: ignore[method-assign]
        await session.run()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(refuse)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("secret") as sub:
                with pytest.raises(ServerError, match="forbidden"):
                    await sub.__anext__()
            assert client.state is ClientState.OPEN
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------- close codes


@bounded
async def test_server_closing_1000_after_the_last_event_ends_the_client_cleanly(autojump_clock: Any) -> None:
    async def finish(session: Session) -> None:
        await session.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            await session.subscribed.wait()
            for i in range(1, 4):
                session.send_nowait(Event("feed", i, i))
            session.close_nowait(1000, "all done")

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(finish)
        async with connect(URL, transport=hub.transport) as client:
            changes = client.state_changes()
            async with client.subscribe("feed") as sub:
                items = [item.data async for item in sub]
            final = await client.wait_state(ClientState.CLOSED)
            seen = [change async for change in changes]
            await trio.sleep(60)
        stats = client.statistics()
        nursery.cancel_scope.cancel()
    assert items == [1, 2, 3]
    assert (final.code, final.reason) == (1000, "all done")
    assert [c.state for c in seen] == [ClientState.CONNECTING, ClientState.OPEN, ClientState.CLOSED]
    assert stats.attempts == 1 and stats.reconnects == 0
    assert len(hub.sessions) == 1


@pytest.mark.parametrize("code", [1002, 1003, 1007, 1008, 1009, 4403])
@bounded
async def test_final_close_codes_raise_and_never_retry(autojump_clock: Any, code: int) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(close_after_welcome(code, "nope"))
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL, transport=hub.transport) as client:
                await trio.sleep_forever()
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert isinstance(info.value.cause, ConnectionClosed)
    assert info.value.cause.code == code
    assert len(hub.sessions) == 1
    assert client.state is ClientState.CLOSED
    assert client_tasks() == []


@pytest.mark.parametrize("status", [401, 403])
@bounded
async def test_handshake_auth_failure_raises_and_never_retries(autojump_clock: Any, status: int) -> None:
    async def tokens() -> str:
        return "t0k3n"

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(reject(status))
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL, transport=hub.transport, token_provider=tokens):
                await trio.sleep_forever()
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert isinstance(info.value.cause, HandshakeRejected)
    assert info.value.cause.status == status
    assert info.value.cause.body == b"go away"
    assert len(hub.sessions) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
@bounded
async def test_handshake_overload_statuses_are_retried(autojump_clock: Any, status: int) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [reject(status), reject(status)]
        async with connect(URL, transport=hub.transport) as client:
            change = await client.wait_state(ClientState.OPEN)
            assert change.state is ClientState.OPEN
            assert client.statistics().attempts == 3
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("code", [1001, 1011, 1012, 1013, 4000, 4001])
@bounded
async def test_transient_close_codes_reconnect(autojump_clock: Any, code: int) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(close_after_welcome(code))
        async with connect(URL, transport=hub.transport) as client:
            changes = client.state_changes()
            await client.wait_state(ClientState.RECONNECTING)
            await client.wait_state(ClientState.OPEN)
            seen = [await changes.__anext__() for _ in range(4)]
        nursery.cancel_scope.cancel()
    assert [c.state for c in seen] == [
        ClientState.CONNECTING,
        ClientState.OPEN,
        ClientState.RECONNECTING,
        ClientState.OPEN,
    ]
    assert seen[2].code == code
    assert isinstance(seen[2].exception, ConnectionClosed)


@bounded
async def test_close_code_table_can_be_overridden(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [close_after_welcome(4403), close_after_welcome(1001)]
        overrides = {4403: CloseAction.RECONNECT, 1001: CloseAction.DONE}
        async with connect(URL, transport=hub.transport, close_codes=overrides) as client:
            final = await client.wait_state(ClientState.CLOSED)
        nursery.cancel_scope.cancel()
    assert final.code == 1001
    assert len(hub.sessions) == 2


@bounded
async def test_4401_with_a_token_provider_retries_exactly_once_with_a_fresh_token(
    autojump_clock: Any,
) -> None:
    issued: list[str] = []

    async def tokens() -> str:
        issued.append(f"token-{len(issued) + 1}")
        return issued[-1]

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [close_after_welcome(4401), close_after_welcome(4401)]
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL + "?room=1", transport=hub.transport, token_provider=tokens):
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert isinstance(info.value.cause, ConnectionClosed) and info.value.cause.code == 4401
    assert issued == ["token-1", "token-2"]
    assert [s.query for s in hub.sessions] == [
        {"room": "1", "token": "token-1"},
        {"room": "1", "token": "token-2"},
    ]
    assert [s.headers[b"authorization"] for s in hub.sessions] == [b"Bearer token-1", b"Bearer token-2"]
    # the retry is immediate: a fresh token needs no backoff
    assert hub.attempt_times[1] == hub.attempt_times[0]


@bounded
async def test_4401_without_a_token_provider_fails_at_once(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(close_after_welcome(4401))
        with pytest.raises(ReconnectFailed):
            async with connect(URL, transport=hub.transport):
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert len(hub.sessions) == 1


@bounded
async def test_a_failing_token_provider_fails_the_client(autojump_clock: Any) -> None:
    async def tokens() -> str:
        raise LookupError("vault down")

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL, transport=hub.transport, token_provider=tokens):
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert isinstance(info.value.cause, LookupError)
    assert hub.sessions == []


# ----------------------------------------------------------------------------------- backoff


@bounded
async def test_server_that_accepts_and_closes_at_once_sees_growing_delays(autojump_clock: Any) -> None:
    policy = Backoff(base=1.0, factor=2.0, cap=64.0, max_attempts=8)
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [close_after_welcome(1011)] * 8
        with pytest.raises(ReconnectFailed, match="8 failed") as info:
            async with connect(URL, transport=hub.transport, backoff=policy, rng=random.Random(5)):
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert isinstance(info.value.cause, ConnectionClosed) and info.value.cause.code == 1011
    gaps = [b - a for a, b in zip(hub.attempt_times, hub.attempt_times[1:], strict=False)]
    assert gaps == pytest.approx(list(policy.schedule(random.Random(5))))
    ceilings = [policy.ceiling(n) for n in range(1, 8)]
    assert all(gap <= ceiling for gap, ceiling in zip(gaps, ceilings, strict=True))
    assert sum(gaps) > 10  # no tight loop: the expected total is ~63 s; this seed gives more


@bounded
async def test_failure_counter_resets_only_after_min_uptime(autojump_clock: Any) -> None:
    async def up_for(seconds: float) -> Any:
        async def handler(session: Session) -> None:
            await session.accept()
            with trio.move_on_after(seconds):
                await session.run()
            assert session.ws is not None
            await session.ws.aclose(1011)

        return handler

    policy = Backoff(base=1.0, factor=10.0, cap=1000.0, max_attempts=3)
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        # short-lived connections: the counter keeps growing and the client gives up
        hub.script += [await up_for(1.0)] * 3
        with pytest.raises(ReconnectFailed):
            async with connect(URL, transport=hub.transport, backoff=policy, min_uptime=5.0):
                await trio.sleep_forever()
        assert len(hub.sessions) == 3
        # connections that stay up for min_uptime reset it: the client never gives up
        hub2 = MiniHub(nursery)
        hub2.script += [await up_for(6.0)] * 6
        async with connect(URL, transport=hub2.transport, backoff=policy, min_uptime=5.0) as client:
            while len(hub2.sessions) < 7:
                await client.wait_state(ClientState.RECONNECTING)
                await client.wait_state(ClientState.OPEN)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------- heartbeat


@bounded
async def test_pings_are_answered_and_a_healthy_link_stays_up(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery, interval=5.0, timeout=10.0)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            await trio.sleep(302)
            stats = client.statistics()
            assert client.state is ClientState.OPEN
        nursery.cancel_scope.cancel()
    assert stats.attempts == 1
    assert stats.pings_answered == 60
    assert stats.last_rtt == 0.025


@bounded
async def test_frozen_server_is_detected_within_timeout_plus_margin_then_reconnects(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery, interval=5.0, timeout=10.0)
        hub.script.append(frozen)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            opened = trio.current_time()
            lost = await client.wait_state(ClientState.RECONNECTING)
            detected = trio.current_time() - opened
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            assert stream_closed(hub.sessions[0])
        nursery.cancel_scope.cancel()
    assert detected == pytest.approx(15.0)  # the server's timeout 10 s + one 5 s ping interval
    assert isinstance(lost.exception, ConnectionBroken)
    assert "heartbeat" in lost.reason


@bounded
async def test_handshake_that_never_completes_hits_connect_timeout(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(hang_handshake)
        async with connect(URL, transport=hub.transport, connect_timeout=3.0) as client:
            changes = client.state_changes()
            await client.wait_state(ClientState.OPEN)
            seen = [await changes.__anext__() for _ in range(3)]
        nursery.cancel_scope.cancel()
    assert [c.state for c in seen] == [ClientState.CONNECTING, ClientState.CONNECTING, ClientState.OPEN]
    assert "connect_timeout" in seen[1].reason
    # the timeout, then the first backoff delay (at most 0.5 s), then the second attempt
    gap = hub.attempt_times[1] - hub.attempt_times[0]
    assert seen[1].next_attempt_at == hub.attempt_times[1]
    assert 3.0 <= gap <= 3.5


# ------------------------------------------------------------------------------ cancellation


async def _until_connecting(hub: MiniHub, client: Any) -> None:
    hub.script.append(hang_handshake)
    await trio.testing.wait_all_tasks_blocked()
    assert client.state is ClientState.CONNECTING and len(hub.sessions) == 1


async def _until_backing_off(hub: MiniHub, client: Any) -> None:
    await client.wait_state(ClientState.RECONNECTING)
    await trio.testing.wait_all_tasks_blocked()
    assert len(hub.sessions) == 1  # the client is sleeping before its second attempt


async def _until_open(hub: MiniHub, client: Any) -> None:
    async with client.subscribe("feed"):
        await client.wait_state(ClientState.OPEN)
        await trio.testing.wait_all_tasks_blocked()
        raise _Cancel


async def _until_replaying(hub: MiniHub, client: Any) -> None:
    async with client.subscribe("feed", last=50, buffer_size=1) as sub:
        await trio.testing.wait_all_tasks_blocked()
        first = await sub.__anext__()
        await trio.testing.wait_all_tasks_blocked()
        assert first.offset == 1  # the reader is now blocked handing over the replay
        raise _Cancel


class _Cancel(Exception):
    pass


@pytest.mark.parametrize("where", [_until_connecting, _until_backing_off, _until_open, _until_replaying])
@bounded
async def test_cancelling_in_any_state_leaves_no_task_and_closes_the_socket(
    autojump_clock: Any, where: Any
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        for i in range(1, 51):
            hub.write("feed", i)
        if where is _until_connecting:
            hub.script.append(hang_handshake)
        if where is _until_backing_off:
            hub.script.append(close_after_welcome(1011))
        with trio.CancelScope() as scope:
            async with connect(URL, transport=hub.transport) as client:
                with contextlib.suppress(_Cancel):
                    await where(hub, client)
                started = trio.current_time()
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert trio.current_time() == started  # promptly: no timeout was waited for
        assert client_tasks() == []
        await trio.testing.wait_all_tasks_blocked()
        assert all(stream_closed(session) for session in hub.sessions)
        assert all(session.done.is_set() for session in hub.sessions if session.ws is not None)
        nursery.cancel_scope.cancel()


@bounded
async def test_cancelled_from_outside_while_waiting_on_a_subscription(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        with trio.move_on_after(30) as scope:
            async with connect(URL, transport=hub.transport) as client, client.subscribe("quiet") as sub:
                async for _ in sub:
                    pass  # pragma: no cover
        assert scope.cancelled_caught
        assert client_tasks() == []
        await trio.testing.wait_all_tasks_blocked()
        assert stream_closed(hub.sessions[0])
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------ errors at the edge


@bounded
async def test_an_error_in_the_block_propagates_unwrapped(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        with pytest.raises(KeyError, match="mine"):
            async with connect(URL, transport=hub.transport) as client:
                await client.wait_state(ClientState.OPEN)
                raise KeyError("mine")
        await trio.testing.wait_all_tasks_blocked()
        assert hub.sessions[0].ws is not None and hub.sessions[0].ws.closed is not None
        assert hub.sessions[0].ws.closed.code == 1000
        nursery.cancel_scope.cancel()


@bounded
async def test_exhausted_attempts_raise_reconnect_failed_not_a_group_and_cancel_the_block(
    autojump_clock: Any,
) -> None:
    reached_end = False
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [reject(503)] * 3
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL, transport=hub.transport, backoff=Backoff(max_attempts=3)) as client:
                changes = client.state_changes()
                await client.wait_state(ClientState.OPEN)
                reached_end = True  # pragma: no cover
        # after the fact, the record is complete and waiting for a state says why it cannot be
        seen = [change async for change in changes]
        with pytest.raises(ReconnectFailed):
            await client.wait_state(ClientState.OPEN)
        nursery.cancel_scope.cancel()
    assert not reached_end
    assert type(info.value) is ReconnectFailed
    assert isinstance(info.value.cause, HandshakeRejected) and info.value.cause.status == 503
    assert info.value.__cause__ is info.value.cause
    assert [c.state for c in seen] == [ClientState.CONNECTING] * 3 + [ClientState.CLOSED]
    assert seen[-1].exception is info.value


@bounded
async def test_server_speaking_another_protocol_fails_with_protocol_error(autojump_clock: Any) -> None:
    async def not_welcome(session: Session) -> None:
        await session.accept(welcome=False)
        assert session.ws is not None
        await session.ws.send_message('{"type":"ping","id":1}')
        await session.ws.get_message()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(not_welcome)
        with pytest.raises(ReconnectFailed, match="welcome"):
            async with connect(URL, transport=hub.transport):
                await trio.sleep_forever()
        await trio.testing.wait_all_tasks_blocked()
        assert hub.sessions[0].ws is not None and hub.sessions[0].ws.closed is not None
        assert hub.sessions[0].ws.closed.code == 1002
        nursery.cancel_scope.cancel()


@bounded
async def test_network_errors_from_the_transport_are_translated_and_retried(autojump_clock: Any) -> None:
    calls = 0

    async def flaky(nursery: trio.Nursery, url: str, headers: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError(111, "Connection refused")
        return await hub.transport(nursery, url, headers)

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=flaky) as client:
            changes = client.state_changes()
            await client.wait_state(ClientState.OPEN)
            seen = [await changes.__anext__() for _ in range(4)]
        nursery.cancel_scope.cancel()
    assert isinstance(seen[1].exception, ConnectionBroken)
    assert "refused" in seen[1].reason
    assert isinstance(seen[1].exception.__cause__, OSError)


@bounded
async def test_statistics_is_a_frozen_snapshot(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            before = client.statistics()
            await client.wait_state(ClientState.OPEN)
            after = client.statistics()
            with pytest.raises(AttributeError):
                after.attempts = 5  # type: ignore[misc]
        nursery.cancel_scope.cancel()
    assert (before.state, before.attempts, before.connects) == (ClientState.CONNECTING, 0, 0)
    assert (after.state, after.attempts, after.connects) == (ClientState.OPEN, 1, 1)


@bounded
async def test_state_change_records_are_values(autojump_clock: Any) -> None:
    assert StateChange(ClientState.OPEN) == StateChange(ClientState.OPEN)


# ------------------------------------------------------------------------ argument validation


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((b"ws://x",), {}, TypeError, "url must be a str"),
        (("http://x",), {}, ValueError, "ws:// or wss://"),
        (("ws://",), {}, ValueError, "no host"),
        (("ws://x:notaport",), {}, ValueError, "not valid"),
        ((URL,), {"connect_timeout": 0}, ValueError, "connect_timeout"),
        ((URL,), {"connect_timeout": -1}, ValueError, "connect_timeout"),
        ((URL,), {"connect_timeout": math.inf}, ValueError, "connect_timeout"),
        ((URL,), {"connect_timeout": "10"}, TypeError, "connect_timeout"),
        ((URL,), {"min_uptime": -1}, ValueError, "min_uptime"),
        ((URL,), {"backoff": 3}, TypeError, "backoff"),
        ((URL,), {"token_provider": "secret"}, TypeError, "token_provider"),
        ((URL,), {"transport": "tcp"}, TypeError, "transport"),
        ((URL,), {"rng": 42}, TypeError, "rng"),
        ((URL,), {"close_codes": [1000]}, TypeError, "close_codes"),
        ((URL,), {"close_codes": {"1000": CloseAction.DONE}}, TypeError, "keys"),
        ((URL,), {"close_codes": {999: CloseAction.DONE}}, ValueError, "999"),
        ((URL,), {"close_codes": {4000: "done"}}, TypeError, "CloseAction"),
    ],
)
def test_connect_validates_its_arguments_at_call_time(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        connect(*args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"topic": ""}, ValueError, "empty"),
        ({"topic": 5}, ValueError, "str"),
        ({"topic": "t", "last": -1}, ValueError, "last"),
        ({"topic": "t", "last": 1.5}, TypeError, "last"),
        ({"topic": "t", "buffer_size": 0}, ValueError, "buffer_size"),
        ({"topic": "t", "buffer_size": "8"}, TypeError, "buffer_size"),
    ],
)
@bounded
async def test_subscribe_validates_its_arguments(
    autojump_clock: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            with pytest.raises(error, match=match):
                client.subscribe(**kwargs)
            with pytest.raises(TypeError, match="ClientState"):
                await client.wait_state("open")  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


@bounded
async def test_token_provider_returning_garbage_fails_clearly(autojump_clock: Any) -> None:
    async def tokens() -> str:
        return "a\r\nInjected: yes"

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        with pytest.raises(ReconnectFailed, match="CR/LF"):
            async with connect(URL, transport=hub.transport, token_provider=tokens):
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()


def test_the_close_code_table_in_the_docs_matches_close_codes() -> None:
    from pathlib import Path

    from trioconn import CLOSE_CODES

    text = (Path(__file__).parent.parent / "docs" / "client.md").read_text()
    table = text.split("<!-- close-codes:start -->\n")[1].split("<!-- close-codes:end -->")[0]
    rows = [f"| {c.code} | `{c.name}` | **{c.action.value}** | {c.meaning} |" for c in CLOSE_CODES.values()]
    assert table.strip().splitlines()[2:] == rows


# ------------------------------------------------------------ a received close always decides


def close_at(moment: str, spins: int, code: int = 1000) -> Any:
    """A server that welcomes, then closes with ``code`` at ``moment``, ``spins`` checkpoints late.

    ``ping``: right after a ping (the client's pong races the close); ``burst``: after 300 events
    with a ping every 50 (the reader is busy, pongs race the close); ``welcome``: at once (the
    client's re-sent ``subscribe`` races the close).
    """

    async def handler(session: Session) -> None:
        await session.accept()
        assert session.ws is not None
        if moment == "ping":
            await session.ws.send_message(Ping(1).to_json())
        elif moment == "burst":
            for offset in range(1, 301):
                await session.ws.send_message(Event("feed", offset, offset).to_json())
                if offset % 50 == 0:
                    await session.ws.send_message(Ping(offset).to_json())
        for _ in range(spins):
            await trio.lowlevel.checkpoint()
        await session.ws.aclose(code, "closing")

    return handler


@bounded
async def test_a_close_1000_at_any_moment_ends_the_client_without_a_reconnect_100_of_100(
    autojump_clock: Any,
) -> None:
    outcomes = []
    async with trio.open_nursery() as nursery:
        for run in range(100):
            hub = MiniHub(nursery)
            hub.script.append(close_at(("welcome", "ping", "burst")[run % 3], spins=run // 3))
            async with connect(URL, transport=hub.transport) as client, client.subscribe("feed"):
                final = await client.wait_state(ClientState.CLOSED)
            stats = client.statistics()
            outcomes.append((final.code, stats.attempts, stats.reconnects, len(hub.sessions)))
        nursery.cancel_scope.cancel()
    assert outcomes == [(1000, 1, 0, 1)] * 100


@pytest.mark.parametrize(("code", "token"), [(4403, True), (1008, True), (4401, False)])
@bounded
async def test_a_final_close_after_welcome_fails_once_whatever_races_it(
    autojump_clock: Any, code: int, token: bool
) -> None:
    async def tokens() -> str:
        return "t0k3n"

    async with trio.open_nursery() as nursery:
        for run in range(30):
            hub = MiniHub(nursery)
            hub.script.append(close_at(("welcome", "ping", "burst")[run % 3], spins=run // 3, code=code))
            with pytest.raises(ReconnectFailed) as info:
                async with (
                    connect(URL, transport=hub.transport, token_provider=tokens if token else None) as client,
                    client.subscribe("feed"),
                ):
                    await trio.sleep_forever()
            await trio.sleep(100)
            assert len(hub.sessions) == 1 and client.statistics().attempts == 1
            cause = info.value.cause
            assert type(cause) is ConnectionClosed and type(cause.code) is int and cause.code == code
        nursery.cancel_scope.cancel()


@bounded
async def test_state_changes_carry_plain_int_codes_and_only_public_exceptions(autojump_clock: Any) -> None:
    public = {ConnectionClosed, ConnectionBroken, HandshakeRejected, ProtocolError, ReconnectFailed}
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        # 1001 and 1011 are wsproto enum members when received; 4001 is an application code
        hub.script += [close_at("ping", 0, 1001), close_at("burst", 3, 1011), close_at("welcome", 1, 4001)]
        hub.script += [reject(503), close_at("ping", 2, 1008)]
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL, transport=hub.transport) as client, client.subscribe("feed"):
                changes = client.state_changes()
                await trio.sleep_forever()
        seen = [change async for change in changes]
        nursery.cancel_scope.cancel()
    codes = [change.code for change in seen if change.code is not None]
    assert codes == [1001, 1011, 4001, 1008] and all(type(code) is int for code in codes)
    assert all(type(change.exception) in public for change in seen if change.exception is not None)
    assert type(info.value.cause) is ConnectionClosed and type(info.value.cause.code) is int


# --------------------------------------------------------------------- the opening handshake


@pytest.mark.parametrize("fault", [eof_in_handshake, garbage_in_handshake])
@bounded
async def test_a_server_that_ends_the_handshake_costs_one_backoff_delay_not_connect_timeout(
    autojump_clock: Any, fault: Any
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [fault, fault]
        async with connect(URL, transport=hub.transport, connect_timeout=10.0) as client:
            changes = client.state_changes()
            await client.wait_state(ClientState.OPEN)
            seen = [await changes.__anext__() for _ in range(4)]
        nursery.cancel_scope.cancel()
    assert [c.state for c in seen[:3]] == [ClientState.CONNECTING] * 3
    assert all(type(c.exception) is ConnectionBroken for c in seen[1:3])
    assert all("connect_timeout" not in c.reason for c in seen[1:3])
    times = hub.attempt_times
    assert times[1] - times[0] <= Backoff().ceiling(1)  # the first delay only
    assert times[2] - times[1] <= Backoff().ceiling(2)


# ---------------------------------------------------------------- welcome and frame bounds


def bad_welcome(**heartbeat: Any) -> Any:
    async def handler(session: Session) -> None:
        await session.accept(welcome=False)
        assert session.ws is not None
        await session.ws.send_message(welcome_text(session, **heartbeat))
        await session.run()

    return handler


async def deep_event(session: Session) -> None:
    await session.accept()
    assert session.ws is not None
    await session.ws.send_message(
        '{"type":"event","topic":"feed","offset":1,"data":' + "[" * 5000 + "]" * 5000 + "}"
    )
    await session.run()


@pytest.mark.parametrize(
    "handler",
    [
        bad_welcome(interval=0),
        bad_welcome(timeout=0),
        bad_welcome(interval=0.0099),
        bad_welcome(timeout=3600.5),
        bad_welcome(interval=1e9),
        bad_welcome(interval=10**400),
        bad_welcome(interval=-1),
        bad_welcome(timeout="10"),
        bad_welcome(interval=True),
        deep_event,
    ],
    ids=[
        "interval-0",
        "timeout-0",
        "below-min",
        "above-max",
        "1e9",
        "400-digits",
        "negative",
        "str",
        "bool",
        "deep",
    ],
)
@bounded
async def test_a_server_frame_out_of_bounds_fails_with_a_protocol_error_and_never_retries(
    autojump_clock: Any, handler: Any
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(handler)
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL, transport=hub.transport):
                await trio.sleep_forever()
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert type(info.value.cause) is ProtocolError
    assert info.value.cause.code in ("invalid-field", "invalid-json")
    assert len(hub.sessions) == 1
    session = hub.sessions[0]
    assert session.ws is not None and session.ws.closed is not None and session.ws.closed.code == 1002


@pytest.mark.parametrize("heartbeat", [(0.01, 0.01), (3600, 3600), (0.5, 3600.0)])
@bounded
async def test_a_welcome_at_the_heartbeat_limits_is_accepted(autojump_clock: Any, heartbeat: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery, ping=False)
        hub.script.append(bad_welcome(interval=heartbeat[0], timeout=heartbeat[1]))
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
        nursery.cancel_scope.cancel()


@bounded
async def test_a_flood_of_unmatched_error_frames_is_logged_once_per_period(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioconn.client")

    async def flood(session: Session) -> None:
        await session.accept()
        assert session.ws is not None
        for _ in range(5000):
            await session.ws.send_message(Error("internal", "oops").to_json())
        await trio.sleep(11)
        await session.ws.send_message(Error("internal", "oops again").to_json())
        await session.run()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery, interval=5, timeout=15)
        hub.script.append(flood)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            await trio.sleep(20)
            assert client.state is ClientState.OPEN
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "trioconn.client"]
    assert len(lines) == 2, lines
    assert "oops" in lines[0] and "oops again" in lines[1] and "4999 more" in lines[1]


# ------------------------------------------------------------------------ tokens stay secret


SECRET = "tok-5ecret-TOKEN"


def echo_token_in_close_reason(code: int) -> Any:
    async def handler(session: Session) -> None:
        await session.accept()
        session.close_nowait(code, f"bad {session.query.get('token')}")
        await session.run(ping=False)

    return handler


def reject_echoing_the_request(status: int) -> Any:
    async def handler(session: Session) -> None:
        await session.reject(status, f"refused {session.url} {session.headers}".encode())

    return handler


@bounded
async def test_the_token_never_appears_in_errors_state_changes_or_logs(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioconn")

    async def tokens() -> str:
        return SECRET

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [echo_token_in_close_reason(1012), reject_echoing_the_request(503)]
        hub.script += [reject_echoing_the_request(401)]
        with pytest.raises(ReconnectFailed) as info:
            async with connect(URL, transport=hub.transport, token_provider=tokens) as client:
                changes = client.state_changes()
                await trio.sleep_forever()
        seen = [change async for change in changes]
        nursery.cancel_scope.cancel()
    assert SECRET in hub.sessions[2].url  # the server did get it
    assert isinstance(info.value.cause, HandshakeRejected) and info.value.cause.status == 401
    texts = [r.getMessage() for r in caplog.records]
    for change in seen:
        texts.append(change.reason)
        texts.extend(every_message(change.exception))
    texts.extend(every_message(info.value))
    assert [text for text in texts if SECRET in text] == []
    assert any("<redacted>" in text for text in texts)


def every_message(exc: BaseException | None) -> list[str]:
    """str() and repr() of ``exc`` and of everything chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += [str(exc), repr(exc), repr(getattr(exc, "body", ""))]
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            texts += every_message(cause)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return texts


@bounded
async def test_a_malformed_token_is_refused_without_quoting_it(autojump_clock: Any) -> None:
    async def tokens() -> str:
        return SECRET + "\r\nX-Injected: yes"

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        with pytest.raises(ReconnectFailed, match="visible ASCII") as info:
            async with connect(URL, transport=hub.transport, token_provider=tokens):
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert hub.sessions == []
    assert not [text for text in every_message(info.value) if SECRET in text]


# ------------------------------------------------------- the answer gate on every connection


@bounded
async def test_after_a_reconnect_events_before_the_answer_to_the_resume_are_ignored(
    autojump_clock: Any,
) -> None:
    async def early_event_then_serve(session: Session) -> None:
        # the new connection sends an event (newer than the resume point) before its answer
        await session.accept()
        session.send_nowait(Event("feed", 50, "early"))
        await session.run()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [Session.serve, early_event_then_serve]
        async with connect(URL, transport=hub.transport) as client, client.subscribe("feed") as sub:
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            hub.write("feed", 1)
            first = await sub.__anext__()
            hub.close_all(1012)
            await client.wait_state(ClientState.RECONNECTING)
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            hub.write("feed", 2)
            second = await sub.__anext__()
        nursery.cancel_scope.cancel()
    assert (first.offset, second.offset) == (1, 2)
    assert isinstance(second, EventItem) and second.data == 2


@bounded
async def test_an_end_before_the_answer_on_a_new_connection_does_not_end_the_subscription(
    autojump_clock: Any,
) -> None:
    async def early_end_then_serve(session: Session) -> None:
        await session.accept()
        session.send_nowait(End("feed", 9))
        await session.run()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [Session.serve, early_end_then_serve]
        async with connect(URL, transport=hub.transport) as client, client.subscribe("feed") as sub:
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            hub.write("feed", 1)
            await sub.__anext__()
            hub.close_all(1012)
            await client.wait_state(ClientState.RECONNECTING)
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            hub.write("feed", 2)
            assert (await sub.__anext__()).offset == 2
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------ counting attempts


async def stay_up_until_closed(session: Session) -> None:
    await session.serve()


@pytest.mark.parametrize("max_attempts", [1, 5])
@bounded
async def test_max_attempts_is_the_number_of_reconnect_attempts_after_a_healthy_link_is_lost(
    autojump_clock: Any, max_attempts: int
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [Session.serve] + [reject(503)] * 10
        backoff = Backoff(max_attempts=max_attempts)
        with pytest.raises(ReconnectFailed, match="gave up") as info:
            async with connect(URL, transport=hub.transport, backoff=backoff, min_uptime=5) as client:
                await client.wait_state(ClientState.OPEN)
                await trio.sleep(5)  # healthy
                hub.close_all(1012)
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert len(hub.sessions) == 1 + max_attempts
    assert isinstance(info.value.cause, HandshakeRejected)


@bounded
async def test_the_fresh_token_retry_after_4401_does_not_count_as_an_attempt(autojump_clock: Any) -> None:
    async def tokens() -> str:
        return "t0k3n"

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        # attempt 1 ends with 4401; the free retry is refused; then attempt 2 of 2 is refused
        hub.script += [close_after_welcome(4401), reject(503), reject(503), Session.serve]
        backoff = Backoff(max_attempts=2)
        with pytest.raises(ReconnectFailed, match="gave up after 2"):
            async with connect(URL, transport=hub.transport, backoff=backoff, token_provider=tokens):
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert len(hub.sessions) == 3
    assert hub.attempt_times[1] == hub.attempt_times[0]  # the retry waits for no backoff


# ------------------------------------------------------------------ controls for a status UI


@bounded
async def test_pause_holds_reconnection_until_resume(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport, backoff=Backoff(base=4, cap=4)) as client:
            await client.wait_state(ClientState.OPEN)
            client.pause()
            assert client.paused and client.statistics().paused
            changes = client.state_changes()
            hub.close_all(1012)
            lost = await client.wait_state(ClientState.RECONNECTING)
            assert lost.next_attempt_at is None and lost.code == 1012
            await trio.sleep(1000)
            assert len(hub.sessions) == 1 and client.statistics().next_attempt_at is None
            resumed_at = trio.current_time()
            client.resume()
            await client.wait_state(ClientState.OPEN)
            seen = [await changes.__anext__() for _ in range(4)]
        nursery.cancel_scope.cancel()
    assert [(c.state, c.next_attempt_at) for c in seen[1:]] == [
        (ClientState.RECONNECTING, None),
        (ClientState.RECONNECTING, lost_at_plus_delay := seen[2].next_attempt_at),
        (ClientState.OPEN, None),
    ]
    # resumed after the delay had passed: the attempt starts at once
    assert lost_at_plus_delay is not None and lost_at_plus_delay <= resumed_at
    assert hub.attempt_times[1] == resumed_at


@bounded
async def test_next_attempt_at_counts_down_and_reconnect_now_cuts_the_wait_short(autojump_clock: Any) -> None:
    rng = random.Random(5)
    expected_delay = Backoff(base=100, cap=100).delay(1, random.Random(5))
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(
            URL, transport=hub.transport, backoff=Backoff(base=100, cap=100), rng=rng
        ) as client:
            await client.wait_state(ClientState.OPEN)
            assert client.reconnect_now() is False  # connected: nothing to cut short
            hub.close_all(1012)
            lost_at = trio.current_time()
            lost = await client.wait_state(ClientState.RECONNECTING)
            assert lost.next_attempt_at == pytest.approx(lost_at + expected_delay)
            assert client.statistics().next_attempt_at == lost.next_attempt_at
            await trio.sleep(1)
            changes = client.state_changes()
            now = trio.current_time()
            assert client.reconnect_now() is True
            assert client.reconnect_now() is False  # already on its way
            await client.wait_state(ClientState.OPEN)
            seen = [await changes.__anext__() for _ in range(3)]
            assert client.statistics().next_attempt_at is None
        nursery.cancel_scope.cancel()
    assert hub.attempt_times[1] == now
    assert [(c.state, c.next_attempt_at) for c in seen] == [
        (ClientState.RECONNECTING, lost.next_attempt_at),
        (ClientState.RECONNECTING, now),
        (ClientState.OPEN, None),
    ]


@bounded
async def test_reconnect_now_while_paused_makes_one_attempt(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [Session.serve, reject(503), Session.serve]
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
            client.pause()
            hub.close_all(1012)
            await client.wait_state(ClientState.RECONNECTING)
            assert client.reconnect_now()
            await trio.sleep(1000)  # that one attempt was refused; paused, no other follows
            assert len(hub.sessions) == 2
            assert client.state is ClientState.RECONNECTING and client.statistics().next_attempt_at is None
            assert client.reconnect_now()
            await client.wait_state(ClientState.OPEN)
            assert client.paused  # still paused for the next loss
        nursery.cancel_scope.cancel()
    assert len(hub.sessions) == 3


@bounded
async def test_controls_after_the_client_closed_do_nothing(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
        client.pause()
        client.resume()
        assert client.reconnect_now() is False
        assert client.state is ClientState.CLOSED
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------- errors from the block


@pytest.mark.parametrize("size", [1, 2])
@bounded
async def test_a_users_exception_group_comes_out_as_that_group(autojump_clock: Any, size: int) -> None:
    group = ExceptionGroup("mine", [KeyError("a"), ValueError("b")][:size])
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        with pytest.raises(ExceptionGroup) as info:
            async with connect(URL, transport=hub.transport) as client:
                await client.wait_state(ClientState.OPEN)
                raise group
        nursery.cancel_scope.cancel()
    # the group itself (a trio nursery rebuilds groups it filters Cancelled from: same message,
    # the very same exceptions inside), not one of its members and not wrapped in another group
    assert type(info.value) is ExceptionGroup and info.value.message == "mine"
    assert all(a is b for a, b in zip(info.value.exceptions, group.exceptions, strict=True))


@bounded
async def test_a_users_exception_group_from_a_nursery_in_the_block_is_kept(autojump_clock: Any) -> None:
    async def fail(exc: Exception) -> None:
        raise exc

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        with pytest.raises(ExceptionGroup) as info:
            async with connect(URL, transport=hub.transport), trio.open_nursery() as mine:
                mine.start_soon(fail, KeyError("a"))
                mine.start_soon(fail, ValueError("b"))
        nursery.cancel_scope.cancel()
    assert sorted(type(e).__name__ for e in info.value.exceptions) == ["KeyError", "ValueError"]
