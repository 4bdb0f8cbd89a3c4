"""Presence on the client: ``subscribe(topic, presence=True)``, ``JoinItem``/``LeaveItem``, ``members``.

Against the in-memory fake server (tests/_client_fakes.py; its members are made by the test),
the independent ``websockets`` server, and the real Hub (``authorize`` returning ``Allow``).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

import trioconn
from trioconn import ClientState, EventItem, Hub, JoinItem, LeaveItem, SnapshotItem, connect
from trioconn.testing import open_memory_link

from ._client_fakes import MiniHub, Session, bounded
from ._independent_server import Conn, IndependentServer, frame, welcome

URL = "ws://hub.test/live"


def pending(sub: Any) -> list[Any]:
    """The items queued for ``sub`` now, taken without waiting."""
    items = list(sub._backlog)
    sub._backlog.clear()
    while True:
        try:
            items.append(sub._receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


def join(session: str, info: Any, since: float, topic: str = "room") -> JoinItem:
    return JoinItem(topic, info, session, since)


@bounded
async def test_presence_items_and_members_follow_joins_and_leaves(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.presence = True
        hub.set_state("room", "open")
        hub.join("room", "a", {"name": "Ann"}, 100.0)
        hub.join("room", "b", None, 101.5)
        async with (
            connect(URL, transport=hub.transport) as client,
            client.subscribe("room", presence=True) as watching,
            client.subscribe("room") as plain,
        ):
            await watching.ready()
            await trio.testing.wait_all_tasks_blocked()
            ann, anonymous = join("a", {"name": "Ann"}, 100.0), join("b", None, 101.5)
            # the data first, then who is there
            assert pending(watching) == [SnapshotItem("room", "epoch-1", 1, "open"), ann, anonymous]
            assert watching.members == plain.members == (ann, anonymous)
            hub.join("room", "c", "Cy", 102.0)
            hub.leave("room", "a")
            hub.set_state("room", "busy")
            await trio.testing.wait_all_tasks_blocked()
            cy = join("c", "Cy", 102.0)
            assert pending(watching) == [
                cy,
                LeaveItem("room", {"name": "Ann"}, "a"),
                EventItem("room", "epoch-1", 2, "busy"),
            ]
            assert watching.members == (anonymous, cy)
            # the subscription that did not ask gets no presence items, but sees the members
            assert pending(plain) == [
                SnapshotItem("room", "epoch-1", 1, "open"),
                EventItem("room", "epoch-1", 2, "busy"),
            ]
            assert plain.members == (anonymous, cy)
        nursery.cancel_scope.cancel()


@bounded
async def test_after_a_reconnect_the_new_member_list_replaces_the_old_with_joins_and_leaves(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.presence = True
        hub.join("room", "a", "Ann", 1.0)
        hub.join("room", "b", "Bo", 2.0)
        async with (
            connect(URL, transport=hub.transport, rng=random.Random(5)) as client,
            client.subscribe("room", presence=True) as sub,
        ):
            await sub.ready()
            await trio.testing.wait_all_tasks_blocked()
            assert pending(sub) == [join("a", "Ann", 1.0), join("b", "Bo", 2.0)]
            hub.close_all(1012, "restart")
            await client.wait_state(ClientState.RECONNECTING)
            hub.leave("room", "a")  # while the client is away: it sees no frame for these
            hub.join("room", "c", "Cy", 3.0)
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            assert pending(sub) == [LeaveItem("room", "Ann", "a"), join("c", "Cy", 3.0)]
            assert sub.members == (join("b", "Bo", 2.0), join("c", "Cy", 3.0))
        nursery.cancel_scope.cancel()


@bounded
async def test_a_later_presence_subscription_starts_with_the_current_members(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.presence = True
        hub.join("room", "a", "Ann", 1.0)
        async with connect(URL, transport=hub.transport) as client, client.subscribe("room") as first:
            await first.ready()
            hub.join("room", "b", "Bo", 2.0)
            await trio.testing.wait_all_tasks_blocked()
            async with client.subscribe("room", presence=True) as later:
                assert pending(later) == [join("a", "Ann", 1.0), join("b", "Bo", 2.0)]
                hub.leave("room", "b")
                await trio.testing.wait_all_tasks_blocked()
                assert pending(later) == [LeaveItem("room", "Bo", "b")]
            assert pending(first) == []
        nursery.cancel_scope.cancel()


@bounded
async def test_presence_frames_before_the_answer_or_for_unknown_members_change_nothing(
    autojump_clock: Any,
) -> None:
    async def early(session: Session) -> None:
        await session.accept()
        session.send_nowait(trioconn._core.protocol.Join("room", "Zed", "z", 9.0))
        await session.run()

    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.presence = True
        hub.script.append(early)
        async with (
            connect(URL, transport=hub.transport) as client,
            client.subscribe("room", presence=True) as sub,
        ):
            await sub.ready()
            session = hub.sessions[0]
            session.send_nowait(trioconn._core.protocol.Leave("room", "Nobody", "n"))
            hub.join("room", "a", "Ann", 1.0)
            session.send_nowait(trioconn._core.protocol.Join("room", "Ann", "a", 1.0))  # again
            await trio.testing.wait_all_tasks_blocked()
            assert pending(sub) == [join("a", "Ann", 1.0)]
            assert sub.members == (join("a", "Ann", 1.0),)
        nursery.cancel_scope.cancel()


@bounded
async def test_an_answer_without_a_member_list_ends_presence_with_leaves(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        hub = MiniHub(nursery)
        hub.presence = True
        hub.join("room", "a", "Ann", 1.0)
        async with (
            connect(URL, transport=hub.transport, rng=random.Random(5)) as client,
            client.subscribe("room", presence=True) as sub,
        ):
            await sub.ready()
            await trio.testing.wait_all_tasks_blocked()
            assert pending(sub) == [join("a", "Ann", 1.0)]
            hub.presence = False  # the server no longer sends this subscriber presence
            hub.close_all(1012, "restart")
            await client.wait_state(ClientState.RECONNECTING)
            await client.wait_state(ClientState.OPEN)
            await trio.testing.wait_all_tasks_blocked()
            assert pending(sub) == [LeaveItem("room", "Ann", "a")]
            assert sub.members == ()
        nursery.cancel_scope.cancel()


def test_presence_must_be_a_bool() -> None:
    client = trioconn.Client("ws://127.0.0.1:1/")
    with pytest.raises(TypeError, match="presence must be a bool"):
        client.subscribe("room", presence="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- against the independent server


async def test_presence_against_the_independent_server() -> None:
    async def serve(conn: Conn) -> None:
        await conn.send(welcome())
        sub = await conn.recv_type("subscribe")
        members = [{"info": "Ann", "session": "a", "since": 1.5}]
        answer = {"topic": "room", "epoch": "E", "offset": 0, "kind": None, "replayed": 0}
        await conn.send(frame("subscribed", ref=sub["ref"], presence=members, **answer))
        await conn.send(frame("join", topic="room", info={"n": 2}, session="b", since=2))
        await conn.send(frame("leave", topic="room", info="Ann", session="a"))
        await conn.serve_requests()

    with IndependentServer() as server, trio.fail_after(10):
        server.script[:] = [serve]
        async with connect(server.url) as client, client.subscribe("room", presence=True) as sub:
            items = [await sub.__anext__() for _ in range(3)]
            members = sub.members
    assert items == [
        join("a", "Ann", 1.5),
        join("b", {"n": 2}, 2.0),
        LeaveItem("room", "Ann", "a"),
    ]
    assert members == (join("b", {"n": 2}, 2.0),)


# ------------------------------------------------------------------------- against the real Hub


@pytest.mark.skipif(
    not hasattr(trioconn, "Allow"), reason="presence on the Hub (trioconn.Allow) is not on this branch"
)
@bounded
async def test_presence_against_the_real_hub(autojump_clock: Any) -> None:
    def authorize(identity: Any, topic: str, action: str) -> Any:
        return trioconn.Allow(presence=True, info={"name": identity})  # type: ignore[attr-defined]

    hub = Hub(heartbeat_interval=2, heartbeat_timeout=6, authenticate=lambda r: r.token, authorize=authorize)
    async with open_memory_link(hub.serve_stream) as link:

        async def as_user(name: str) -> str:
            return name

        async with (
            connect(URL, transport=link.transport, token_provider=lambda: as_user("ann")) as ann,
            ann.subscribe("room", presence=True) as watching,
        ):
            await watching.ready()
            async with (
                connect(URL, transport=link.transport, token_provider=lambda: as_user("bo")) as bo,
                bo.subscribe("room") as bo_sub,
            ):
                await bo_sub.ready()
                await trio.testing.wait_all_tasks_blocked()
                names = [m.identity for m in watching.members]
                assert names == [{"name": "ann"}, {"name": "bo"}]
                joined = [i for i in pending(watching) if isinstance(i, JoinItem)]
                assert [i.identity for i in joined] == [{"name": "ann"}, {"name": "bo"}]
            await trio.testing.wait_all_tasks_blocked()
            left = pending(watching)
            assert [(type(i), i.identity) for i in left] == [(LeaveItem, {"name": "bo"})]
            assert [m.identity for m in watching.members] == [{"name": "ann"}]
        await hub.aclose()
