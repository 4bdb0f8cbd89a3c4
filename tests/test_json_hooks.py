"""JSON hooks: ``json_dumps``/``json_loads`` on the hub and on the client, for data only.

The wire stays JSON text; frames are encoded by trioconn's strict codec; whatever a hook produces
is held to the protocol's limits (one JSON value, finite numbers, at most 32 levels deep).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from functools import partial
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import trio
import trio.testing

import trioconn
from trioconn import EventItem, HubConfig, ResetItem, ServerError, SnapshotItem
from trioconn.testing import open_memory_link

from .conftest import memory_client
from .test_redis import redis_server  # noqa: F401 - the fixture


@dataclasses.dataclass
class Progress:
    job: uuid.UUID
    at: datetime.datetime
    pct: int


def default(value: Any) -> Any:
    """What the application's ``default=`` does: datetimes, UUIDs and dataclasses."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


dumps_with_default = partial(json.dumps, default=default)
JOB = uuid.UUID("12345678-1234-5678-1234-567812345678")
AT = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
WIRE = {"job": str(JOB), "at": "2024-05-06T07:08:09+00:00", "pct": 50}


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


async def connected(link: Any, task_status: Any, **options: Any) -> None:
    async with trioconn.connect("ws://app.invalid/", transport=link.transport, **options) as client:
        task_status.started(client)
        await trio.sleep_forever()


# -- the hub's json_dumps ----------------------------------------------------------------------------


async def test_hub_json_dumps_with_default_sends_datetime_uuid_and_dataclass_as_json(autojump_clock):
    hub = trioconn.Hub(json_dumps=dumps_with_default)
    async with memory_client(hub) as raw:
        await raw.recv_type("welcome")
        await raw.send({"type": "subscribe", "topic": "jobs"})
        await raw.recv_type("subscribed")
        assert await hub.publish("jobs", Progress(JOB, AT, 50)) == 1
        event = await raw.recv_type("event")
        assert event["data"] == WIRE
        hub.set_state_nowait("job/1", {"job": JOB, "at": AT})
        await raw.send({"type": "subscribe", "topic": "job/1"})
        answer = await raw.recv_type("subscribed")
        assert answer["snapshot"] == {"job": str(JOB), "at": WIRE["at"]}


async def test_the_same_data_without_a_hook_is_refused_with_type_error(autojump_clock):
    hub = trioconn.Hub()
    with pytest.raises(TypeError, match="not JSON serializable"):
        hub.publish_nowait("jobs", Progress(JOB, AT, 50))


async def test_hub_json_dumps_may_return_bytes_orjson(autojump_clock):
    hub = trioconn.Hub(json_dumps=orjson.dumps)  # orjson knows dataclasses, datetimes and UUIDs
    async with memory_client(hub) as raw:
        await raw.recv_type("welcome")
        await raw.send({"type": "subscribe", "topic": "jobs"})
        await raw.recv_type("subscribed")
        hub.publish_nowait("jobs", Progress(JOB, AT, 50))
        event = await raw.recv_type("event")
        assert event["data"] == {"job": str(JOB), "at": "2024-05-06T07:08:09+00:00", "pct": 50}


async def test_worker_threads_publish_through_the_hook(autojump_clock):
    hub = trioconn.Hub(json_dumps=dumps_with_default)
    handle = hub.from_thread()
    offset = await trio.to_thread.run_sync(handle.publish, "jobs", {"at": AT})
    assert offset == 1
    async with memory_client(hub) as raw:
        await raw.recv_type("welcome")
        await raw.send({"type": "subscribe", "topic": "jobs", "last": 1})
        await raw.recv_type("subscribed")
        assert (await raw.recv_type("event"))["data"] == {"at": WIRE["at"]}


@pytest.mark.parametrize(
    ("hook", "data", "message"),
    [
        (partial(json.dumps, allow_nan=True), float("nan"), "not strict JSON.*NaN"),
        (partial(json.dumps, allow_nan=True), [float("inf")], "not strict JSON.*Infinity"),
        (lambda data: "1e999", 1, "not strict JSON.*out of range"),
        (lambda data: "[" * 100 + "]" * 100, 1, "nested more than 32 levels"),
        (lambda data: '{"a": ', 1, "not strict JSON"),
        (lambda data: "1 2", 1, "not strict JSON"),
        (lambda data: "", 1, "not strict JSON"),
        (lambda data: b"\xff", 1, "bytes that are not UTF-8"),
        (lambda data: 42, 1, "must return str or bytes, not int"),
        (lambda data: None, 1, "must return str or bytes, not NoneType"),
    ],
    ids=[
        "nan",
        "infinity",
        "huge-number",
        "deep",
        "truncated",
        "two-values",
        "empty",
        "not-utf8",
        "int",
        "none",
    ],
)
async def test_what_a_dumps_hook_produces_is_held_to_the_protocol_limits(autojump_clock, hook, data, message):
    hub = trioconn.Hub(json_dumps=hook)
    with pytest.raises(TypeError, match=message):
        hub.publish_nowait("t", data)
    with pytest.raises(TypeError, match=message):
        hub.set_state_nowait("s", data)
    assert hub.statistics().topics == {}  # a refused write leaves nothing behind


async def test_a_dumps_hook_that_raises_gives_type_error_with_its_message(autojump_clock):
    def hook(data: Any) -> str:
        raise ValueError("cannot encode a Widget")

    hub = trioconn.Hub(json_dumps=hook)
    with pytest.raises(TypeError, match="json_dumps raised ValueError: cannot encode a Widget") as info:
        await hub.publish("t", object())
    assert isinstance(info.value.__cause__, ValueError)


def test_hooks_must_be_callable():
    with pytest.raises(TypeError, match="json_dumps must be callable"):
        HubConfig(json_dumps="orjson")
    with pytest.raises(TypeError, match="json_loads must be callable"):
        trioconn.Hub(json_loads=1)
    with pytest.raises(TypeError, match="json_dumps must be a callable or None, not str"):
        trioconn.connect("ws://127.0.0.1:1/", json_dumps="orjson")
    with pytest.raises(TypeError, match="json_loads must be a callable or None, not int"):
        trioconn.connect("ws://127.0.0.1:1/", json_loads=1)


# -- the client's hooks ------------------------------------------------------------------------------


async def test_client_json_loads_sees_events_snapshots_and_reset_snapshots(autojump_clock):
    seen: list[str] = []

    def loads(text: str) -> Any:
        seen.append(text)
        return json.loads(text, object_hook=lambda obj: SimpleNamespace(**obj))

    hub = trioconn.Hub()
    hub.set_state_nowait("job", {"pct": 10})
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(partial(connected, json_loads=loads), link)
        async with client.subscribe("job") as job:
            first = await job.__anext__()
            assert isinstance(first, SnapshotItem) and first.data == SimpleNamespace(pct=10)
            hub.set_state_nowait("job", {"pct": 20, "detail": {"step": "b"}})
            second = await job.__anext__()
            assert isinstance(second, EventItem)
            assert second.data == SimpleNamespace(pct=20, detail=SimpleNamespace(step="b"))

            other = trioconn.Hub()  # a restarted server: new epoch, so a reset with the snapshot
            other.set_state_nowait("job", {"pct": 30})
            link.serve = other.serve_stream
            link.cut()
            third = await job.__anext__()
            assert isinstance(third, ResetItem) and third.snapshot == SimpleNamespace(pct=30)
        nursery.cancel_scope.cancel()
    assert seen == ['{"pct":10}', '{"pct":20,"detail":{"step":"b"}}', '{"pct":30}']


async def test_an_exception_from_json_loads_comes_out_of_iteration_and_the_next_item_follows(autojump_clock):
    def loads(text: str) -> Any:
        value = json.loads(text)
        if value == "bad":
            raise ValueError("bad value")
        return value

    hub = trioconn.Hub()
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(partial(connected, json_loads=loads), link)
        async with client.subscribe("t") as sub:
            await trio.testing.wait_all_tasks_blocked()
            hub.publish_nowait("t", "bad")
            hub.publish_nowait("t", "good")
            with pytest.raises(ValueError, match="bad value"):
                await sub.__anext__()
            item = await sub.__anext__()
            assert isinstance(item, EventItem) and (item.offset, item.data) == (2, "good")
        nursery.cancel_scope.cancel()


async def test_client_json_dumps_encodes_what_it_publishes(autojump_clock):
    hub = trioconn.Hub(authorize=allow_all)
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(partial(connected, json_dumps=dumps_with_default), link)
        async with client.subscribe("jobs") as sub:
            assert await client.publish("jobs", Progress(JOB, AT, 50)) == 1
            item = await sub.__anext__()
            assert isinstance(item, EventItem) and item.data == WIRE
        nursery.cancel_scope.cancel()


async def test_client_json_dumps_is_held_to_the_limits_before_anything_is_sent(autojump_clock):
    hub = trioconn.Hub(authorize=allow_all)
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(partial(connected, json_dumps=partial(json.dumps, allow_nan=True)), link)
        with pytest.raises(TypeError, match="NaN"):
            await client.publish("t", float("nan"))
        with pytest.raises(TypeError, match="nested more than 32"):
            await client.publish("t", json.loads("[" * 40 + "]" * 40))
        assert await client.publish("t", 1.5) == 1
        assert hub.statistics().topics["t"].offset == 1
        nursery.cancel_scope.cancel()


async def test_client_json_loads_with_orjson(autojump_clock):
    hub = trioconn.Hub(json_dumps=orjson.dumps)
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(partial(connected, json_loads=orjson.loads), link)
        async with client.subscribe("t") as sub:
            await trio.testing.wait_all_tasks_blocked()
            hub.publish_nowait("t", {"at": AT, "n": [1, 2.5, None]})
            item = await sub.__anext__()
            assert item.data == {"at": "2024-05-06T07:08:09+00:00", "n": [1, 2.5, None]}
        nursery.cancel_scope.cancel()


# -- the hub's json_loads: data clients publish -------------------------------------------------------


async def test_hub_json_loads_decodes_what_clients_publish_and_can_refuse_it(autojump_clock):
    def loads(text: str) -> Any:
        value = json.loads(text)
        if isinstance(value, dict) and "pct" in value and not 0 <= value["pct"] <= 100:
            raise ValueError("pct must be from 0 to 100")
        return {**value, "checked": True} if isinstance(value, dict) else value

    hub = trioconn.Hub(authorize=allow_all, json_loads=loads)
    async with (
        open_memory_link(hub.serve_stream) as link,
        hub.publications("jobs") as publications,
        trio.open_nursery() as nursery,
    ):
        client = await nursery.start(connected, link)
        async with client.subscribe("jobs") as sub:
            assert await client.publish("jobs", {"pct": 5}) == 1
            item = await sub.__anext__()
            assert item.data == {"pct": 5, "checked": True}
            publication = await publications.__anext__()  # what the application reads: decoded
            assert (publication.offset, publication.data) == (1, {"pct": 5, "checked": True})
            with pytest.raises(ServerError, match="pct must be from 0 to 100") as info:
                await client.publish("jobs", {"pct": 500})
            assert info.value.code == "invalid-field"
        assert hub.statistics().topics["jobs"].offset == 1
        nursery.cancel_scope.cancel()


async def test_requests_and_replies_go_through_the_hooks_on_both_sides(autojump_clock):
    """Client ``json_dumps`` → hub ``json_loads`` → handler → hub ``json_dumps`` → client ``json_loads``."""
    seen: list[Any] = []

    def revive(obj: dict) -> Any:
        return datetime.datetime.fromisoformat(obj["$dt"]) if "$dt" in obj else obj

    def tag(value: Any) -> Any:
        if isinstance(value, datetime.datetime):
            return {"$dt": value.isoformat()}
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    dumps, loads = partial(json.dumps, default=tag), partial(json.loads, object_hook=revive)

    def hub_loads(text: str) -> Any:
        value = loads(text)
        if isinstance(value, dict) and value.get("days", 0) < 0:
            raise ValueError("days must not be negative")
        return value

    hub = trioconn.Hub(json_dumps=dumps, json_loads=hub_loads)

    @hub.on_request("clock/add")
    def add(request: Any) -> Any:
        seen.append(request.data)
        return request.data["at"] + datetime.timedelta(days=request.data["days"])

    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(partial(connected, json_dumps=dumps, json_loads=loads), link)
        answer = await client.request("clock/add", {"at": AT, "days": 1})
        assert answer == AT + datetime.timedelta(days=1)
        assert seen == [{"at": AT, "days": 1}]  # the handler got a datetime, not text
        with pytest.raises(ServerError, match="refused by json_loads: days must not be negative") as info:
            await client.request("clock/add", {"at": AT, "days": -1})
        assert info.value.code == "invalid-field" and len(seen) == 1  # the handler never ran
        nursery.cancel_scope.cancel()


async def test_a_reply_the_hubs_json_dumps_cannot_encode_is_request_failed(autojump_clock, caplog):
    hub = trioconn.Hub()
    hub.on_request("now", lambda request: datetime.datetime.now(datetime.UTC))
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(connected, link)
        with pytest.raises(ServerError) as info:
            await client.request("now", None)
        assert info.value.code == "request-failed"
        nursery.cancel_scope.cancel()
    assert "not JSON serializable" in caplog.text


async def test_hub_subscribe_followers_get_data_through_the_hubs_json_loads(autojump_clock):
    hub = trioconn.Hub(json_loads=partial(json.loads, object_hook=lambda obj: SimpleNamespace(**obj)))
    hub.set_state_nowait("job", {"pct": 1})
    async with hub.subscribe("job") as job:
        first = await job.__anext__()
        assert isinstance(first, SnapshotItem) and first.data == SimpleNamespace(pct=1)
        hub.set_state_nowait("job", {"pct": 2})
        second = await job.__anext__()
        assert isinstance(second, EventItem) and second.data == SimpleNamespace(pct=2)


# -- Redis ---------------------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.filterwarnings(
    r"ignore:Exception ignored in.*MemoryObject(Send|Receive)Stream:pytest.PytestUnraisableExceptionWarning"
)
async def test_a_hub_on_redis_encodes_with_its_hook_and_so_does_sync_publisher(redis_server):  # noqa: F811
    from trioconn.redis import RedisBroker, SyncPublisher

    broker = RedisBroker(redis_server.url, timeout=2, backoff=trioconn.Backoff(base=0.05, cap=0.2), block=0.5)
    hub = trioconn.Hub(broker=broker, json_dumps=partial(json.dumps, default=default, allow_nan=True))
    async with hub.running(), open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(connected, link)
        async with client.subscribe("jobs", last=10) as sub:  # replays what came before the answer
            assert await hub.publish("jobs", Progress(JOB, AT, 50)) == 1
            with trio.fail_after(10):
                item = await sub.__anext__()
            assert (item.offset, item.data) == (1, WIRE)

            with pytest.raises(TypeError, match=r"not strict JSON.*NaN"):
                await hub.publish("jobs", float("nan"))
            with SyncPublisher(redis_server.url, json_dumps=orjson.dumps) as pub:
                assert await trio.to_thread.run_sync(pub.publish, "jobs", {"at": AT}) == 2
                with pytest.raises(TypeError, match="nested more than 32"):
                    pub.publish("jobs", json.loads("[" * 40 + "]" * 40))
            with trio.fail_after(10):
                item = await sub.__anext__()
            assert (item.offset, item.data) == (2, {"at": WIRE["at"]})
        nursery.cancel_scope.cancel()
