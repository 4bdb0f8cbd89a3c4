"""Presence: who is subscribed, for the application and (opted in by ``authorize``) for clients.

Raw protocol frames over in-memory streams (virtual time for the heartbeat case), the ASGI front
end on both backends, and an independent client (``websockets``) over loopback.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
import trio
import trio.testing
import trio_websocket
from websockets.trio.client import connect as ws_connect

import trioconn
from trioconn import Allow, Hub, Joined, Left

from .conftest import RawClient, memory_client, raw_client


def by_token(request: trioconn.HandshakeRequest) -> str | None:
    return request.token


def with_presence(identity: Any, topic: str, action: str) -> bool | Allow:
    """Everyone in a room sees the others by name; ``quiet`` users see nothing; others: no presence."""
    if not topic.startswith("room"):
        return True
    if identity.startswith("quiet"):
        return Allow(info={"name": identity})
    return Allow(presence=True, info={"name": identity})


async def subscribed(client: RawClient, topic: str, **extra: Any) -> dict:
    await client.send({"type": "subscribe", "topic": topic, **extra})
    return await client.recv_type("subscribed")


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_subscribers_with_presence_see_the_members_and_who_comes_and_goes():
    hub = Hub(authenticate=by_token, authorize=with_presence)
    before = time.time()
    async with memory_client(hub, "/?token=ann") as ann:
        ann_session = (await ann.recv_type("welcome"))["session"]
        first = await subscribed(ann, "room")
        assert [(m["info"], m["session"]) for m in first["presence"]] == [({"name": "ann"}, ann_session)]
        assert before <= first["presence"][0]["since"] <= time.time()
        async with memory_client(hub, "/?token=bob") as bob:
            bob_session = (await bob.recv_type("welcome"))["session"]
            second = await subscribed(bob, "room")
            assert [m["info"]["name"] for m in second["presence"]] == ["ann", "bob"]
            join = await ann.recv_type("join")
            assert join == {
                "type": "join",
                "topic": "room",
                "info": {"name": "bob"},
                "session": bob_session,
                "since": second["presence"][1]["since"],
            }
            members = hub.presence("room")
            assert [(m.identity, m.session, m.info) for m in members] == [
                ("ann", ann_session, {"name": "ann"}),
                ("bob", bob_session, {"name": "bob"}),
            ]
            assert hub.statistics().topics["room"].members == 2
            await bob.send({"type": "unsubscribe", "topic": "room"})
            await bob.recv_type("unsubscribed")
            leave = await ann.recv_type("leave")
            assert leave == {
                "type": "leave",
                "topic": "room",
                "info": {"name": "bob"},
                "session": bob_session,
            }
            assert [m.identity for m in hub.presence("room")] == ["ann"]


async def test_without_presence_a_subscriber_gets_no_frames_but_is_an_anonymous_member():
    hub = Hub(authenticate=by_token, authorize=lambda identity, topic, action: True)
    async with memory_client(hub, "/?token=ann") as ann, memory_client(hub, "/?token=bob") as bob:
        await ann.recv_type("welcome")
        await bob.recv_type("welcome")
        assert "presence" not in await subscribed(ann, "room")
        await subscribed(bob, "room")
        hub.publish_nowait("room", "after")
        assert (await ann.recv())["type"] == "event"  # no join before it
        assert [(m.identity, m.info) for m in hub.presence("room")] == [("ann", None), ("bob", None)]


async def test_info_is_shown_to_others_and_quiet_members_are_shown_but_told_nothing():
    hub = Hub(authenticate=by_token, authorize=with_presence)
    async with memory_client(hub, "/?token=ann") as ann, memory_client(hub, "/?token=quiet-q") as quiet:
        await ann.recv_type("welcome")
        await quiet.recv_type("welcome")
        await subscribed(ann, "room")
        assert "presence" not in await subscribed(quiet, "room")
        assert (await ann.recv_type("join"))["info"] == {"name": "quiet-q"}
        await subscribed(ann, "lobby")  # authorize said True there: no presence
        hub.publish_nowait("room", "x")
        assert (await quiet.recv())["type"] == "event"


@pytest.mark.parametrize("how", ["close", "drop", "heartbeat", "server-close"])
async def test_a_member_leaves_when_its_connection_ends_in_any_way(how, autojump_clock):
    hub = Hub(authenticate=by_token, authorize=with_presence, heartbeat_interval=5, heartbeat_timeout=12)
    async with memory_client(hub, "/?token=ann") as ann, trio.open_nursery() as nursery:
        await ann.recv_type("welcome")
        await subscribed(ann, "room")
        send, frames = trio.open_memory_channel[dict](100)

        async def read_ann() -> None:  # ann keeps answering pings while bob goes silent
            while True:
                await send.send(await ann.recv())

        nursery.start_soon(read_ann)
        stream_client, stream_server = trio.testing.memory_stream_pair()
        nursery.start_soon(hub.serve_stream, stream_server)
        async with raw_client(stream_client, "/?token=bob") as bob:
            bob_session = (await bob.recv_type("welcome"))["session"]
            await subscribed(bob, "room")
            assert (await frames.receive())["type"] == "join"
            if how == "close":
                await bob.ws.aclose()
            elif how == "drop":
                await stream_client.aclose()
            elif how == "heartbeat":
                bob.answer_pings = False
                assert (await bob.closed()).code == 4000
            else:
                assert hub.close(bob_session)
                await bob.closed()
        with trio.fail_after(60):
            leave = await frames.receive()
        assert (leave["type"], leave["session"]) == ("leave", bob_session)
        assert [m.identity for m in hub.presence("room")] == ["ann"]
        assert hub.statistics().topics["room"].members == 1
        nursery.cancel_scope.cancel()


async def test_the_topics_end_ends_membership_without_leave_frames():
    hub = Hub(authenticate=by_token, authorize=with_presence)
    async with (
        hub.presence_changes("room") as changes,
        memory_client(hub, "/?token=ann") as ann,
        memory_client(hub, "/?token=bob") as bob,
    ):
        await ann.recv_type("welcome")
        await bob.recv_type("welcome")
        await subscribed(ann, "room")
        await subscribed(bob, "room")
        await ann.recv_type("join")
        hub.end_nowait("room")
        assert (await ann.recv())["type"] == "end"  # no leave before or after it
        assert (await bob.recv())["type"] == "end"
        hub.publish_nowait("elsewhere", 1)
        assert hub.presence("room") == ()
        with trio.fail_after(5):
            kinds = [type(await changes.__anext__()).__name__ for _ in range(4)]
        assert kinds == ["Joined", "Joined", "Left", "Left"]


async def test_the_application_reads_joined_and_left_with_identities():
    hub = Hub(authenticate=by_token)
    async with hub.presence_changes("rooms/*") as changes:
        async with memory_client(hub, "/?token=ann") as ann:
            session = (await ann.recv_type("welcome"))["session"]
            await subscribed(ann, "rooms/1")
            await subscribed(ann, "other")
            await ann.send({"type": "unsubscribe", "topic": "rooms/1"})
            await ann.recv_type("unsubscribed")
        with trio.fail_after(5):
            joined, left = await changes.__anext__(), await changes.__anext__()
    assert isinstance(joined, Joined) and isinstance(left, Left)
    assert (joined.topic, joined.identity, joined.session, joined.info) == ("rooms/1", "ann", session, None)
    assert (left.topic, left.identity, left.session, left.since) == ("rooms/1", "ann", session, joined.since)


async def test_a_change_reader_behind_gets_the_net_changes_and_stays_bounded():
    hub = Hub(authenticate=by_token)
    async with (
        hub.presence_changes("room", buffer_size=2) as changes,
        memory_client(hub, "/?token=stays") as stays,
    ):
        await stays.recv_type("welcome")
        await subscribed(stays, "room")
        async with memory_client(hub, "/?token=churn") as churn:
            await churn.recv_type("welcome")
            for _ in range(50):  # nobody reads the changes meanwhile
                await subscribed(churn, "room")
                await churn.send({"type": "unsubscribe", "topic": "room"})
                await churn.recv_type("unsubscribed")
        assert len(changes._queue) <= 3
        got = []
        with trio.move_on_after(0.01):
            async for change in changes:
                got.append((type(change).__name__, change.identity))
    # what the reader builds from the changes is right: only "stays" is a member
    members: set[str] = set()
    for kind, identity in got:
        (members.add if kind == "Joined" else members.discard)(identity)
    assert members == {"stays"}
    assert got[0] == ("Joined", "stays")


def test_allow_checks_its_fields():
    assert Allow() == Allow(presence=False, info=None)
    with pytest.raises(TypeError, match="must be JSON"):
        Allow(presence=True, info={1, 2})
    with pytest.raises(TypeError, match=r"presence=\.\.\.\) must be a bool"):
        Allow(presence="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topic must be a str"):
        Hub().presence(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_presence_on_both_backends(backend):
    from .test_asgi import accepted, served

    async def body() -> None:
        hub = Hub(authenticate=lambda request: request.query.get("token"), authorize=with_presence)
        async with served(hub) as (app, tasks), hub.presence_changes("room") as changes:
            one = await accepted(app, tasks)
            await one.put_frame({"type": "subscribe", "topic": "room", "ref": 1})
            assert len((await one.next_frame("subscribed"))["presence"]) == 1
            two = await accepted(app, tasks)
            await two.put_frame({"type": "subscribe", "topic": "room", "ref": 1})
            await two.next_frame("subscribed")
            assert (await one.next_frame("join"))["info"] == {"name": "good"}
            await two.put({"type": "websocket.disconnect", "code": 1000})
            await two.done.wait()
            assert (await one.next_frame("leave"))["info"] == {"name": "good"}
            with anyio.fail_after(5):
                kinds = [type(await changes.__anext__()).__name__ for _ in range(3)]
            assert kinds == ["Joined", "Joined", "Left"]
            await one.put({"type": "websocket.disconnect", "code": 1000})
            await one.done.wait()

    anyio.run(body, backend=backend)


async def test_an_independent_client_over_loopback_sees_members_joins_and_leaves():
    hub = Hub(authenticate=by_token, authorize=with_presence)

    async def frame_of(ws: Any, kind: str) -> dict:
        while True:
            frame = json.loads(await ws.recv())
            for inner in frame["frames"] if frame["type"] == "batch" else [frame]:
                if inner["type"] == kind:
                    return inner  # type: ignore[no-any-return]

    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        with trio.fail_after(10):
            async with ws_connect(f"ws://127.0.0.1:{port}/?token=ann") as ann:
                await frame_of(ann, "welcome")
                await ann.send(json.dumps({"type": "subscribe", "topic": "room", "ref": 1}))
                assert [m["info"] for m in (await frame_of(ann, "subscribed"))["presence"]] == [
                    {"name": "ann"}
                ]
                async with ws_connect(f"ws://127.0.0.1:{port}/?token=bob") as bob:
                    bob_session = (await frame_of(bob, "welcome"))["session"]
                    await bob.send(json.dumps({"type": "subscribe", "topic": "room", "ref": 1}))
                    names = [m["info"]["name"] for m in (await frame_of(bob, "subscribed"))["presence"]]
                    assert names == ["ann", "bob"]
                    assert (await frame_of(ann, "join"))["session"] == bob_session
                assert (await frame_of(ann, "leave"))["session"] == bob_session
        nursery.cancel_scope.cancel()


async def test_a_subscriber_that_does_not_read_its_presence_frames_is_a_slow_consumer(autojump_clock):
    hub = Hub(authenticate=by_token, authorize=with_presence, outbox_size=3, send_timeout=1000)
    async with trio.open_nursery() as nursery:
        # ann on a lockstep stream (no buffer): once she stops reading, the hub's sends block
        client_stream, server_stream = trio.testing.lockstep_stream_pair()
        nursery.start_soon(hub.serve_stream, server_stream)
        ann = RawClient(
            await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", "/?token=ann")
        )
        await ann.recv_type("welcome")
        await subscribed(ann, "room")  # then she reads nothing more
        async with memory_client(hub, "/?token=quiet-bob") as bob:  # bob gets no presence himself
            await bob.recv_type("welcome")
            for _ in range(10):  # 20 presence frames for ann, 3 fit
                await subscribed(bob, "room")
                await bob.send({"type": "unsubscribe", "topic": "room"})
                await bob.recv_type("unsubscribed")
            await settle()
            assert hub.statistics().disconnects.get("slow-consumer") == 1
            assert hub.presence("room") == ()  # ann left with her connection
        nursery.cancel_scope.cancel()


class _Plain:
    """A subscriber as the presence registry sees it: counts the frames it is given."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def deliver_presence(self, encoded: str) -> None:
        self.frames.append(encoded)


def test_plain_subscribers_cost_no_work_per_member_as_others_come_and_go(monkeypatch):
    # A topic with thousands of subscribers that did not ask for presence: before, every
    # subscribe built the whole member list and walked every member (quadratic connects).
    from trioconn._server import presence as presence_module

    listed: list[object] = []
    public = presence_module._Entry.public
    monkeypatch.setattr(presence_module._Entry, "public", lambda self: listed.append(self) or public(self))
    presence = presence_module.Presence(clock=lambda: 0.0)
    plain = [_Plain() for _ in range(500)]
    for i, sub in enumerate(plain):
        member, members = presence.prepare("t", None, f"s{i}", None, listed=False)
        assert members is None
        presence.join("t", member, sub, receives=False)
    for i in range(0, 500, 2):
        presence.leave("t", f"s{i}")
    assert listed == [] and all(sub.frames == [] for sub in plain)
    assert presence.count("t") == 250
    # one subscriber with presence: its list holds everybody, and only it hears of changes
    receiver = _Plain()
    member, members = presence.prepare("t", None, "r", None, listed=True)
    assert members is not None and len(members) == 251 and len(listed) == 250
    presence.join("t", member, receiver, receives=True)
    member, _ = presence.prepare("t", None, "late", None, listed=False)
    presence.join("t", member, _Plain(), receives=False)
    presence.leave("t", "s1")
    assert [json.loads(frame)["type"] for frame in receiver.frames] == ["join", "leave"]
    assert all(sub.frames == [] for sub in plain)
