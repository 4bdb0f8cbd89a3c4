"""Client subscriptions: ``ready()``, and several subscriptions to one topic on one client.

Against the in-memory fake server (tests/_client_fakes.py) under the autojump clock, against the
real Hub in memory, and against the independent ``websockets`` server over loopback.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from trioconn import (
    ClientState,
    ConnectionClosed,
    EventItem,
    Hub,
    ResetItem,
    ServerError,
    SnapshotItem,
    Subscribed,
    TrioconnError,
    connect,
)
from trioconn.testing import open_memory_link

from ._client_fakes import Error, MiniHub, Session, Subscribe, Unsubscribe, bounded, hang_handshake
from ._independent_server import Conn, IndependentServer, frame, welcome

URL = "ws://hub.test/live"


async def take(sub: Any, count: int) -> list[Any]:
    items = []
    async for item in sub:
        items.append(item)
        if len(items) == count:
            break
    return items


def pending(sub: Any) -> list[Any]:
    """The items queued for ``sub`` now, taken without waiting."""
    items = list(sub._backlog)
    sub._backlog.clear()
    while True:
        try:
            items.append(sub._receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


def subscribes(hub: MiniHub, session: int = 0) -> list[Subscribe]:
    return [f for f in hub.sessions[session].received if isinstance(f, Subscribe)]


def refusing(session: Session) -> Any:
    original = session.handle

    def handle(frame: Any) -> None:
        if isinstance(frame, Subscribe):
            session.send_nowait(Error("forbidden", "no", frame.ref, frame.topic))
        else:
            original(frame)

    session.handle = handle  # type: ignore[method-assign]


# ------------------------------------------------------------------------------------ ready()


@bounded
async def test_ready_returns_where_the_subscription_starts_even_before_any_write(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        for i in range(3):
            hub.write("logs", i)
        async with (
            connect(URL, transport=hub.transport) as client,
            client.subscribe("empty") as empty,
            client.subscribe("logs", last=1) as logs,
        ):
            assert await empty.ready() == Subscribed("empty", "epoch-2", 0, None)
            assert await logs.ready() == Subscribed("logs", "epoch-1", 3, "stream")
            # nothing was written to "empty": ready() was the only sign; it stays answered
            assert pending(empty) == []
            assert await empty.ready() == Subscribed("empty", "epoch-2", 0, None)
            assert [i.offset for i in await take(logs, 1)] == [3]
        nursery.cancel_scope.cancel()


@bounded
async def test_ready_waits_while_disconnected_and_then_returns(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(hang_handshake)
        hub.set_state("job", 5)
        async with (
            connect(URL, transport=hub.transport, connect_timeout=3) as client,
            client.subscribe("job") as sub,
        ):
            with trio.move_on_after(2):
                await sub.ready()
                pytest.fail("ready() returned before any server answered")  # pragma: no cover
            started = trio.current_time()
            assert await sub.ready() == Subscribed("job", "epoch-1", 1, "state")
            assert trio.current_time() > started  # after the second attempt
            assert client.statistics().attempts == 2
        nursery.cancel_scope.cancel()


@bounded
async def test_ready_raises_server_error_when_the_subscription_is_refused(autojump_clock: Any) -> None:
    async def refuse(session: Session) -> None:
        await session.accept()
        refusing(session)
        await session.run()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(refuse)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("secret") as sub, client.subscribe("secret") as again:
                for each in (sub, again):
                    with pytest.raises(ServerError) as info:
                        await each.ready()
                    assert info.value.code == "forbidden"
                    with pytest.raises(ServerError):
                        await each.__anext__()
            assert client.state is ClientState.OPEN
        nursery.cancel_scope.cancel()


@bounded
async def test_ready_raises_when_the_client_or_the_subscription_ends_first(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(hang_handshake)
        async with connect(URL, transport=hub.transport, connect_timeout=100) as client:
            sub = client.subscribe("t")
            with pytest.raises(RuntimeError, match="async with"):
                await sub.ready()
            async with sub:
                await client.aclose()
                with pytest.raises(ConnectionClosed) as info:
                    await sub.ready()
                assert info.value.code == 1000
        async with connect(URL, transport=hub.transport) as client:
            hub.script.append(hang_handshake)
            async with client.subscribe("t") as sub:
                pass
            with pytest.raises(TrioconnError, match="ended before the server answered"):
                await sub.ready()
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- client-side fan-out


@bounded
async def test_two_subscriptions_to_one_topic_share_one_wire_subscription(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("feed") as a:
                await a.ready()
                async with client.subscribe("feed") as b:
                    assert client.statistics().subscriptions == 2
                    for i in range(1, 4):
                        hub.write("feed", i)
                    assert [i.data for i in await take(a, 3)] == [1, 2, 3]
                    assert [i.data for i in await take(b, 3)] == [1, 2, 3]
                await trio.testing.wait_all_tasks_blocked()
                # b left; a goes on and the server was told nothing
                assert not any(isinstance(f, Unsubscribe) for f in hub.sessions[0].received)
                hub.write("feed", 4)
                assert [i.data for i in await take(a, 1)] == [4]
            await trio.testing.wait_all_tasks_blocked()
            received = hub.sessions[0].received
            assert len(subscribes(hub)) == 1
            assert [type(f) for f in received if isinstance(f, Subscribe | Unsubscribe)] == [
                Subscribe,
                Unsubscribe,
            ]
            assert client.statistics().subscriptions == 0
        nursery.cancel_scope.cancel()


@bounded
async def test_every_local_subscription_resumes_with_no_gap_and_no_duplicate(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with (
            connect(URL, transport=hub.transport, rng=random.Random(2)) as client,
            client.subscribe("feed") as a,
            client.subscribe("feed") as b,
        ):
            await a.ready()
            hub.write("feed", 1)
            hub.write("feed", 2)
            await trio.testing.wait_all_tasks_blocked()
            hub.close_all(1012, "restart")
            for i in range(3, 6):
                hub.write("feed", i)  # while the client is away
            await client.wait_state(ClientState.RECONNECTING)
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            hub.write("feed", 6)
            seen_a = [i.offset for i in await take(a, 6)]
            seen_b = [i.offset for i in await take(b, 6)]
            # one resume on the new connection, from the shared position
            (resume,) = subscribes(hub, 1)
            assert resume == Subscribe("feed", resume.ref, epoch="epoch-1", offset=2)
        nursery.cancel_scope.cancel()
    assert seen_a == seen_b == [1, 2, 3, 4, 5, 6]


@bounded
async def test_a_later_subscription_to_a_state_topic_gets_its_value_first(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.set_state("job", 10)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("job") as first:
            assert await take(first, 1) == [SnapshotItem("job", "epoch-1", 1, 10)]
            hub.set_state("job", 20)
            hub.set_state("job", 30)
            await trio.testing.wait_all_tasks_blocked()
            async with client.subscribe("job") as later:
                assert await later.ready() == Subscribed("job", "epoch-1", 3, "state")
                hub.set_state("job", 40)
                items = await take(later, 2)
                assert items == [SnapshotItem("job", "epoch-1", 3, 30), EventItem("job", "epoch-1", 4, 40)]
                assert [i.data for i in await take(first, 3)] == [20, 30, 40]
            assert len(subscribes(hub)) == 1
        nursery.cancel_scope.cancel()


@bounded
async def test_a_later_subscription_gets_its_last_events_from_the_clients_cache(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        for i in range(1, 11):
            hub.write("logs", i)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("logs", last=5) as first:
            assert [i.data for i in await take(first, 5)] == [6, 7, 8, 9, 10]
            hub.write("logs", 11)
            assert [i.data for i in await take(first, 1)] == [11]
            async with (
                client.subscribe("logs", last=3) as three,
                client.subscribe("logs") as none,
                client.subscribe("logs", last=50) as fifty,
            ):
                hub.write("logs", 12)
                assert [i.data for i in await take(three, 4)] == [9, 10, 11, 12]
                assert [i.data for i in await take(none, 1)] == [12]
                # more than the client kept: what it has (the server's `last` is "up to" too)
                assert [i.data for i in await take(fifty, 6)] == [7, 8, 9, 10, 11, 12]
                # the cache now keeps 50 while `fifty` is open
                for i in range(13, 70):
                    hub.write("logs", i)
                await take(fifty, 57)
                async with client.subscribe("logs", last=50) as another:
                    assert pending(another)[0].data == 20
            assert len(subscribes(hub)) == 1
        nursery.cancel_scope.cancel()


@bounded
async def test_subscriptions_made_before_the_answer_share_the_replay_up_to_their_own_last(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.script.append(hang_handshake)
        for i in range(1, 11):
            hub.write("logs", i)
        async with (
            connect(URL, transport=hub.transport, connect_timeout=1) as client,
            client.subscribe("logs", last=2) as two,
            client.subscribe("logs", last=5) as five,
            client.subscribe("logs") as none,
        ):
            await two.ready()
            (wire,) = subscribes(hub, 1)
            assert wire.last == 5  # the largest asked for
            hub.write("logs", 11)
            assert [i.data for i in await take(two, 3)] == [9, 10, 11]
            assert [i.data for i in await take(five, 6)] == [6, 7, 8, 9, 10, 11]
            assert [i.data for i in await take(none, 1)] == [11]
        nursery.cancel_scope.cancel()


@bounded
async def test_a_later_subscription_of_unknown_kind_gets_the_latest_event(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("job/1") as first:
            assert (await first.ready()).kind is None  # nothing written yet
            hub.set_state("job/1", "started")
            hub.set_state("job/1", "half")
            await take(first, 2)
            async with client.subscribe("job/1") as later:
                # it may be a state topic's value: given rather than lost until the next write
                assert await take(later, 1) == [EventItem("job/1", "epoch-1", 2, "half")]
        nursery.cancel_scope.cancel()


@bounded
async def test_a_slow_local_subscription_holds_the_others_back_and_loses_nothing(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with (
            connect(URL, transport=hub.transport) as client,
            client.subscribe("feed") as fast,
            client.subscribe("feed", buffer_size=1) as slow,
        ):
            await fast.ready()
            for i in range(1, 6):
                hub.write("feed", i)
            await trio.testing.wait_all_tasks_blocked()
            # the reader waits for `slow`: `fast` has had 1 and 2, not more (backpressure)
            assert [i.data for i in pending(fast)] == [1, 2]
            assert [i.data for i in await take(slow, 5)] == [1, 2, 3, 4, 5]
            assert [i.data for i in await take(fast, 3)] == [3, 4, 5]
            assert client.state is ClientState.OPEN
        nursery.cancel_scope.cancel()


@bounded
async def test_the_end_of_the_topic_ends_every_local_subscription(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client:
            async with client.subscribe("job") as a, client.subscribe("job") as b:
                await a.ready()
                hub.write("job", "x")
                hub.end("job")
                assert [i.data async for i in a] == ["x"]
                assert [i.data async for i in b] == ["x"]
                assert client.statistics().subscriptions == 0
                # a new subscription to the ended topic is a new wire subscription
                async with client.subscribe("job") as c:
                    assert (await c.ready()).offset == 1
                    assert [i.data async for i in c] == []
            assert len(subscribes(hub)) == 2
        nursery.cancel_scope.cancel()


@bounded
async def test_a_reset_reaches_every_local_subscription(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with (
            connect(URL, transport=hub.transport, rng=random.Random(4)) as client,
            client.subscribe("job") as a,
            client.subscribe("job") as b,
        ):
            hub.set_state("job", 1)
            await take(a, 1)
            await take(b, 1)
            hub.close_all(1012)
            hub.restart()
            hub.set_state("job", 2)
            reset = ResetItem("job", "epoch-2", 1, "epoch-1", 1, kind="state", snapshot=2, has_snapshot=True)
            assert await take(a, 1) == [reset]
            assert await take(b, 1) == [reset]
            async with client.subscribe("job") as c:
                assert await take(c, 1) == [SnapshotItem("job", "epoch-2", 1, 2)]
        nursery.cancel_scope.cancel()


@bounded
async def test_a_local_subscription_leaving_while_the_reader_waits_for_it_frees_the_others(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("feed") as fast:
            await fast.ready()
            async with client.subscribe("feed", buffer_size=1):
                for i in range(1, 4):
                    hub.write("feed", i)
                await trio.testing.wait_all_tasks_blocked()
                assert [i.data for i in pending(fast)] == [1, 2]
            assert [i.data for i in await take(fast, 1)] == [3]
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ against the real Hub in memory


@bounded
async def test_hub_fan_out_and_ready_against_the_real_hub(autojump_clock: Any) -> None:
    hub = Hub(heartbeat_interval=2, heartbeat_timeout=6)
    async with open_memory_link(hub.serve_stream) as link:
        hub.set_state_nowait("job", {"pct": 10})
        async with (
            connect(URL, transport=link.transport) as client,
            client.subscribe("job") as a,
            client.subscribe("job") as b,
        ):
            info = await a.ready()
            assert (info.kind, info.offset) == ("state", 1)
            assert await b.ready() == info
            await hub.set_state("job", {"pct": 20})
            await trio.testing.wait_all_tasks_blocked()  # it reached the client
            async with client.subscribe("job") as c:
                assert (await take(c, 1))[0].data == {"pct": 20}
                assert hub.statistics().topics["job"].subscribers == 1  # one wire subscription
                (session,) = hub.sessions()
                hub.close(session, 4001, "slow consumer")
                await client.wait_state(ClientState.RECONNECTING)
                await hub.set_state("job", {"pct": 30})
                await client.wait_state(ClientState.OPEN)
                await trio.testing.wait_all_tasks_blocked()
                await hub.end("job")
                for sub in (a, b):
                    assert [i.data async for i in sub] == [{"pct": 10}, {"pct": 20}, {"pct": 30}]
                assert [i.data async for i in c] == [{"pct": 30}]
        await hub.aclose()


# -------------------------------------------------------------------- against the independent server


async def test_ready_and_fan_out_against_the_independent_server() -> None:
    conns: list[Conn] = []

    async def serve(conn: Conn) -> None:
        conns.append(conn)
        await conn.send(welcome())
        sub = await conn.recv_type("subscribe")
        answer = {"topic": "t", "epoch": "E", "offset": 7, "kind": "stream", "replayed": 0}
        await conn.send(frame("subscribed", ref=sub["ref"], **answer))
        go = await conn.recv_type("publish")  # both subscriptions are made by now
        await conn.send(frame("published", topic="go", offset=1, ref=go["ref"]))
        for offset in (8, 9):
            await conn.send(frame("event", topic="t", offset=offset, data=offset))
        await conn.serve_requests()

    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [serve]
        async with connect(server.url) as client, client.subscribe("t") as a:
            assert await a.ready() == Subscribed("t", "E", 7, "stream")
            async with client.subscribe("t") as b:
                assert await b.ready() == Subscribed("t", "E", 7, "stream")
                await client.publish("go", 1)
                seen = [[i.offset for i in await take(s, 2)] for s in (a, b)]
    assert seen == [[8, 9], [8, 9]]
    assert [f["type"] for f in conns[0].received if f["type"] in ("subscribe", "unsubscribe")] == [
        "subscribe",
        "unsubscribe",
    ]
