"""The reconnecting client against an in-memory fake server (tests/_client_fakes.py).

Everything timed runs on pytest-trio's ``autojump_clock`` (a MockClock that jumps ahead as soon
as every task is blocked), so heartbeats, timeouts and backoff take no wall time.
"""

from __future__ import annotations

import contextlib
import functools
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
    ReconnectFailed,
    ResetItem,
    ServerError,
    SnapshotItem,
    StateChange,
    connect,
)

from ._client_fakes import (
    Error,
    Event,
    MiniHub,
    Publish,
    Session,
    Subscribe,
    Unsubscribe,
    close_after_welcome,
    frozen,
    hang_handshake,
    reject,
    stream_closed,
)

URL = "ws://hub.test/live"


def bounded(test: Any) -> Any:
    """Fail a test that waits forever (in virtual time) instead of hanging the run."""

    @functools.wraps(test)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        with trio.fail_after(3600):
            await test(*args, **kwargs)

    return wrapper


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
async def test_second_subscription_to_the_same_topic_is_refused(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("t"):
            with pytest.raises(RuntimeError, match="already subscribed"):
                async with client.subscribe("t"):
                    pass  # pragma: no cover
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
            assert hub.attempt_times[0] == 0 or hub.attempt_times[1] - hub.attempt_times[0] >= 3.0
        nursery.cancel_scope.cancel()
    assert [c.state for c in seen] == [ClientState.CONNECTING, ClientState.CONNECTING, ClientState.OPEN]
    assert "connect_timeout" in seen[1].reason


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
