"""The reconnecting client against an in-memory fake server (tests/_client_fakes.py).

Everything timed runs on pytest-trio's ``autojump_clock`` (a MockClock that jumps ahead as soon
as every task is blocked), so heartbeats, timeouts and backoff take no wall time.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from _client_fakes import (
    MiniHub,
    Session,
    close_after_welcome,
    frozen,
    hang_handshake,
    reject,
    stream_closed,
)
from trioconn._backoff import Backoff
from trioconn._client import ClientState, StateChange, connect
from trioconn._exceptions import (
    ConnectionBroken,
    ConnectionClosed,
    HandshakeRejected,
    ReconnectFailed,
    ServerError,
)
from trioconn._protocol import CloseAction, Event, Publish, Subscribe, Unsubscribe
from trioconn._subscription import EventItem, ResetItem, SnapshotItem

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


async def test_subscribe_receives_live_events_and_publish_returns_the_offset(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("prices") as sub:
                await client.wait_state(ClientState.OPEN)
                assert await client.publish("prices", {"p": 1}) == 1
                assert await client.publish("prices", {"p": 2}) == 2
                items = await collect(sub, 2)
        nursery.cancel_scope.cancel()
    assert items == [
        EventItem("prices", "epoch-1", 1, {"p": 1}),
        EventItem("prices", "epoch-1", 2, {"p": 2}),
    ]


async def test_leaving_the_block_closes_with_1000_and_never_reconnects(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            await client.wait_state(ClientState.OPEN)
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


async def test_publish_while_disconnected_waits_for_the_link(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script += [reject(503), reject(503)]
        async with connect(URL, transport=hub.transport, rng=random.Random(1)) as client:
            assert client.state is ClientState.CONNECTING
            assert await client.publish("t", "hello") == 1
            assert client.statistics().attempts == 3
        nursery.cancel_scope.cancel()


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


async def test_resume_too_old_for_history_is_a_reset_not_a_silent_gap(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery, history_size=2)
        async with connect(URL, transport=hub.transport, rng=random.Random(3)) as client:
            async with client.subscribe("feed") as sub:
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


async def test_duplicate_or_stale_events_are_never_delivered(autojump_clock: Any) -> None:
    async def replaying_twice(session: Session) -> None:
        await session.accept()
        session.received  # noqa: B018
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            while not session.subs:
                await trio.sleep(0.1)
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
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("feed") as sub:
                await client.wait_state(ClientState.OPEN)
                await trio.testing.wait_all_tasks_blocked()
                hub.write("feed", "fresh")
                items = await collect(sub, 1)
        nursery.cancel_scope.cancel()
    assert items == [EventItem("feed", "epoch-1", 1, "fresh")]


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


async def test_second_subscription_to_the_same_topic_is_refused(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("t"):
                with pytest.raises(RuntimeError, match="already subscribed"):
                    async with client.subscribe("t"):
                        pass  # pragma: no cover
        nursery.cancel_scope.cancel()


async def test_subscribe_refused_by_server_raises_from_iteration(autojump_clock: Any) -> None:
    async def refuse(session: Session) -> None:
        await session.accept()

        class Refusing(Session):
            pass

        original = session.handle

        def handle(frame: Any) -> None:
            if isinstance(frame, Subscribe):
                from trioconn._protocol import Error

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
