"""``hub.publications``: what clients publish, read in-process with the publisher's identity.

Raw protocol frames over in-memory streams, both backends through the ASGI front end, and an
independent client (``websockets``) over loopback. Redis (exactly once across processes) is in
``test_app_redis.py``.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import trio
from websockets.trio.client import connect as ws_connect

import trioconn
from trioconn import Hub, HubStopped, Publication, PublicationsLost

from .conftest import RawClient, memory_client


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


def by_token(request: trioconn.HandshakeRequest) -> str | None:
    return request.token


async def publish(client: RawClient, topic: str, data: Any, ref: Any = 1) -> dict:
    await client.send({"type": "publish", "topic": topic, "data": data, "ref": ref})
    return await client.recv()


async def test_a_client_publication_arrives_with_identity_session_and_offset():
    hub = Hub(authenticate=by_token, authorize=allow_all)
    hub.publish_nowait("jobs/control", "from the app")
    async with hub.publications("jobs/control") as publications, memory_client(hub, "/?token=ann") as client:
        session = (await client.recv_type("welcome"))["session"]
        ack = await publish(client, "jobs/control", {"start": "build"})
        assert (ack["type"], ack["offset"]) == ("published", 2)
        with trio.fail_after(5):
            publication = await publications.__anext__()
    assert publication == Publication("jobs/control", {"start": "build"}, 2, "ann", session)


async def test_exact_topics_and_prefixes_match_and_every_reader_gets_its_copy():
    hub = Hub(authorize=allow_all)
    async with (
        hub.publications("jobs/*") as prefix,
        hub.publications("jobs/a") as exact,
        hub.publications("*") as everything,
        memory_client(hub) as client,
    ):
        await client.recv_type("welcome")
        for topic in ("jobs/a", "jobs/b", "other"):
            assert (await publish(client, topic, topic))["type"] == "published"
        with trio.fail_after(5):
            assert [(await prefix.__anext__()).topic for _ in range(2)] == ["jobs/a", "jobs/b"]
            assert (await exact.__anext__()).topic == "jobs/a"
            assert [(await everything.__anext__()).topic for _ in range(3)] == ["jobs/a", "jobs/b", "other"]
        with trio.move_on_after(0.01) as scope:
            await exact.__anext__()
        assert scope.cancelled_caught  # jobs/b was not for it


async def test_the_applications_own_writes_and_refused_publishes_are_not_publications():
    hub = Hub(authorize=lambda identity, topic, action: topic != "locked")
    hub.set_state_nowait("state", 1)
    async with hub.publications("*") as publications, memory_client(hub) as client:
        await client.recv_type("welcome")
        await hub.publish("open", "app")
        assert (await publish(client, "locked", 1))["code"] == "forbidden"
        assert (await publish(client, "state", 2))["code"] == "wrong-kind"
        assert (await publish(client, "open", "client"))["type"] == "published"
        with trio.fail_after(5):
            publication = await publications.__anext__()
    assert (publication.data, publication.offset) == ("client", 2)


async def test_a_reader_that_falls_behind_gets_publications_lost_at_the_gap_and_goes_on():
    hub = Hub(authorize=allow_all)
    async with hub.publications("t", buffer_size=3) as publications, memory_client(hub) as client:
        await client.recv_type("welcome")
        for i in range(1, 9):
            assert (await publish(client, "t", i, ref=i))["offset"] == i
        with trio.fail_after(5):
            first = [(await publications.__anext__()).data for _ in range(3)]
            with pytest.raises(PublicationsLost) as lost:
                await publications.__anext__()
            assert await publish(client, "t", 9, ref=9)
            after = (await publications.__anext__()).data
    assert first == [1, 2, 3]
    assert lost.value.count == 5  # 4-8: never silently
    assert after == 9
    assert hub.statistics().topics["t"].offset == 9  # the publications themselves were stored


async def test_leaving_the_block_stops_delivery_and_closing_the_hub_ends_iteration():
    hub = Hub(authorize=allow_all)
    async with hub.publications("t") as left:
        pass
    assert left._closed
    async with hub.publications("t") as publications, trio.open_nursery() as nursery:
        nursery.start_soon(hub.aclose)
        with trio.fail_after(5):
            assert [p async for p in publications] == []
    with pytest.raises(HubStopped):
        async with hub.publications("t"):
            pass


@pytest.mark.parametrize(
    ("pattern", "kwargs", "error", "words"),
    [
        (5, {}, TypeError, "topic_or_prefix must be a str"),
        ("", {}, ValueError, "topic_or_prefix ''"),
        ("t", {"buffer_size": 0}, ValueError, "buffer_size must be >= 1"),
    ],
)
async def test_invalid_arguments_are_named(pattern, kwargs, error, words):
    with pytest.raises(error, match=words):
        async with Hub().publications(pattern, **kwargs):
            pass


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_publications_reach_the_application_on_both_backends(backend):
    from .test_asgi import accepted, served

    async def body() -> None:
        hub = Hub(authorize=allow_all)
        async with served(hub) as (app, tasks), hub.publications("jobs/*") as publications:
            server = await accepted(app, tasks)
            await server.put_frame({"type": "publish", "topic": "jobs/1", "data": "go", "ref": 1})
            assert (await server.next_frame("published"))["offset"] == 1
            with anyio.fail_after(5):
                publication = await publications.__anext__()
            assert (publication.topic, publication.data, publication.offset) == ("jobs/1", "go", 1)
            await server.put({"type": "websocket.disconnect", "code": 1000})
            await server.done.wait()

    anyio.run(body, backend=backend)


async def test_an_independent_client_over_loopback_publishes_to_the_application():
    hub = Hub(authenticate=by_token, authorize=allow_all)
    async with trio.open_nursery() as nursery, hub.publications("jobs/control") as publications:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        with trio.fail_after(10):
            async with ws_connect(f"ws://127.0.0.1:{port}/?token=bob") as ws:
                session = json.loads(await ws.recv())["session"]
                await ws.send(
                    json.dumps({"type": "publish", "topic": "jobs/control", "data": {"n": 1}, "ref": 1})
                )
                publication = await publications.__anext__()
        assert publication == Publication("jobs/control", {"n": 1}, 1, "bob", session)
        nursery.cancel_scope.cancel()
