"""``trioconn.asgi.HubApp`` driven through ASGI messages, on both backends (trio and asyncio).

The ASGI server's side of a connection is played by ``FakeServer`` (two memory streams), so every
message the app sends is seen and every failure can be provoked. Real servers (uvicorn,
hypercorn) over loopback are in ``test_asgi_e2e.py`` and ``test_fastapi_example.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest

import trioconn
from trioconn.asgi import HubApp, lifespan

BACKENDS = ["trio", "asyncio"]


def run(backend: str, body: Callable[[], Awaitable[None]]) -> None:
    anyio.run(body, backend=backend)


_OPEN: list[FakeServer] = []


@pytest.fixture(autouse=True)
def _close_fake_servers():
    yield
    while _OPEN:
        _OPEN.pop().close()


class FakeServer:
    """One ASGI WebSocket connection as the app sees it: what we put in, what it sends."""

    def __init__(self, *, extensions: bool = True, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.inbox_send, self.inbox = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self.outbox_send, self.outbox = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "path": "/ws",
            "query_string": b"token=good",
            "headers": headers or [(b"host", b"example")],
            "client": ("127.0.0.1", 5000),
            "extensions": {"websocket.http.response": {}} if extensions else {},
        }
        self.done = anyio.Event()
        #: frames of a batch not looked at yet
        self.frames: list[dict[str, Any]] = []
        _OPEN.append(self)

    def close(self) -> None:
        for stream in (self.inbox_send, self.inbox, self.outbox_send, self.outbox):
            stream.close()

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.receive()

    async def send(self, message: dict[str, Any]) -> None:
        await self.outbox_send.send(message)

    async def run(self, app: HubApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        finally:
            self.done.set()

    async def put(self, message: dict[str, Any]) -> None:
        await self.inbox_send.send(message)

    async def put_frame(self, frame: dict[str, Any]) -> None:
        await self.put({"type": "websocket.receive", "text": json.dumps(frame)})

    async def next(self) -> dict[str, Any]:
        with anyio.fail_after(5):
            return await self.outbox.receive()

    async def next_frame(self, kind: str) -> dict[str, Any]:
        """The next text frame of ``kind`` (pings and others before it are skipped)."""
        while True:
            while self.frames:
                frame = self.frames.pop(0)
                if frame["type"] == kind:
                    return frame
            message = await self.next()
            assert message["type"] == "websocket.send", message
            self.frames = frames_of(message)

    async def until_closed(self) -> dict[str, Any]:
        """The app's ``websocket.close`` (frames before it are skipped)."""
        while True:
            message = await self.next()
            if message["type"] == "websocket.close":
                return message


@asynccontextmanager
async def served(hub: trioconn.Hub) -> AsyncIterator[tuple[HubApp, anyio.abc.TaskGroup]]:
    app = HubApp(hub)
    async with anyio.create_task_group() as tasks, lifespan(hub):
        yield app, tasks


async def connect(app: HubApp, tasks: anyio.abc.TaskGroup, **options: Any) -> FakeServer:
    server = FakeServer(**options)
    tasks.start_soon(server.run, app)
    await server.put({"type": "websocket.connect"})
    return server


async def accepted(app: HubApp, tasks: anyio.abc.TaskGroup, **options: Any) -> FakeServer:
    server = await connect(app, tasks, **options)
    assert (await server.next())["type"] == "websocket.accept"
    assert (await server.next_frame("welcome"))["session"]
    return server


def frames_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The protocol frames in one ``websocket.send`` (a ``batch`` holds several)."""
    frame = json.loads(message["text"])
    return frame["frames"] if frame["type"] == "batch" else [frame]  # type: ignore[no-any-return]


def task_count() -> int:
    return len(anyio.get_running_tasks())


@pytest.mark.parametrize("backend", BACKENDS)
def test_subscribe_and_publish_from_a_handler_and_from_a_thread(backend):
    async def body() -> None:
        hub = trioconn.Hub()
        async with served(hub) as (app, tasks):
            server = await accepted(app, tasks)
            await server.put_frame({"type": "subscribe", "topic": "jobs/1", "ref": 1})
            assert (await server.next_frame("subscribed"))["topic"] == "jobs/1"
            assert await hub.publish("jobs/1", {"pct": 10}) == 1  # as a request handler would
            handle = hub.from_thread()
            offset = await anyio.to_thread.run_sync(handle.publish, "jobs/1", {"pct": 20})
            assert offset == 2
            events = [await server.next_frame("event") for _ in range(2)]
            assert [(e["offset"], e["data"]) for e in events] == [(1, {"pct": 10}), (2, {"pct": 20})]
            await anyio.to_thread.run_sync(handle.end, "jobs/1")
            assert (await server.next_frame("end"))["topic"] == "jobs/1"
            await server.put({"type": "websocket.disconnect", "code": 1000})
            await server.done.wait()
            assert hub.sessions() == []

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_everything_a_connection_had_ends_with_it(backend):
    """The connection's receiver, sender and heartbeat tasks exist while it is open and are all
    gone when the client leaves; nothing of it stays in the hub."""

    async def body() -> None:
        hub = trioconn.Hub()
        async with served(hub) as (app, tasks):
            before = task_count()
            server = await accepted(app, tasks)
            await server.put_frame({"type": "subscribe", "topic": "t", "ref": 1})
            await server.next_frame("subscribed")
            # the app's call, which runs the receiver, and the sender and heartbeat tasks
            assert task_count() >= before + 3
            assert hub.statistics().topics["t"].subscribers == 1
            await server.put({"type": "websocket.disconnect", "code": 1001})
            await server.done.wait()
            await anyio.wait_all_tasks_blocked()
            assert task_count() == before
            assert hub.sessions() == []
            assert all(topic.subscribers == 0 for topic in hub.statistics().topics.values())
            assert hub.statistics().disconnects == {"client-closed": 1}

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_silent_client_is_closed_at_the_heartbeat_timeout(backend):
    async def body() -> None:
        hub = trioconn.Hub(heartbeat_interval=0.02, heartbeat_timeout=0.1)
        async with served(hub) as (app, tasks):
            before = task_count()
            start = anyio.current_time()  # before the connection's deadline is first set
            server = await accepted(app, tasks)
            closed = await server.until_closed()
            assert closed["code"] == 4000
            assert 0.1 <= anyio.current_time() - start < 2
            await server.done.wait()
            await anyio.wait_all_tasks_blocked()
            assert task_count() == before
            assert hub.statistics().disconnects == {"heartbeat-timeout": 1}

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_frames_get_errors_and_an_oversized_one_closes_with_1009(backend):
    async def body() -> None:
        hub = trioconn.Hub(max_frame_size=1000)
        async with served(hub) as (app, tasks):
            server = await accepted(app, tasks)
            other = await accepted(app, tasks)
            await server.put({"type": "websocket.receive", "text": "{oops"})
            assert (await server.next_frame("error"))["code"] == "invalid-json"
            await server.put({"type": "websocket.receive", "text": "é" * 501})  # 1002 bytes
            assert (await server.until_closed())["code"] == 1009
            await server.done.wait()
            # everyone else is still served
            await other.put_frame({"type": "subscribe", "topic": "t", "ref": 1})
            assert (await other.next_frame("subscribed"))["topic"] == "t"
            assert hub.statistics().disconnects == {"frame-too-big": 1}

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_refusals_are_http_responses_with_their_status(backend):
    async def body() -> None:
        def authenticate(request: trioconn.HandshakeRequest) -> Any:
            if request.token == "forbidden":
                raise trioconn.HandshakeRejected(403, b"go away")
            return "alice" if request.token == "good" else None

        hub = trioconn.Hub(authenticate=authenticate, allowed_origins={"https://app.example"})
        async with served(hub) as (app, tasks):
            cases = [
                ([(b"origin", b"https://evil.example")], b"good", 403),
                ([(b"origin", b"https://app.example")], b"bad", 401),
                ([], b"forbidden", 403),
            ]
            for headers, token, status in cases:
                server = FakeServer(headers=headers)
                server.scope["query_string"] = b"token=" + token
                tasks.start_soon(server.run, app)
                await server.put({"type": "websocket.connect"})
                start = await server.next()
                assert start["type"] == "websocket.http.response.start"
                assert start["status"] == status
                assert (await server.next())["type"] == "websocket.http.response.body"
                await server.done.wait()
            ok = await accepted(app, tasks, headers=[(b"origin", b"https://app.example")])
            await ok.put({"type": "websocket.disconnect", "code": 1000})
            assert hub.statistics().disconnects == {"refused-403": 2, "refused-401": 1}

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_the_http_response_extension_a_refusal_is_a_close_before_accept(backend):
    async def body() -> None:
        hub = trioconn.Hub(authenticate=lambda request: None)
        async with served(hub) as (app, tasks):
            server = await connect(app, tasks, extensions=False)
            message = await server.next()
            assert message["type"] == "websocket.close"  # the server answers 403
            await server.done.wait()

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("extensions", [True, False])
def test_in_close_mode_a_refusal_is_an_accept_then_a_close_with_its_code_and_reason(backend, extensions):
    async def body() -> None:
        def authenticate(request: trioconn.HandshakeRequest) -> Any:
            if request.token in ("403", "429", "500", "503", "404"):
                raise trioconn.HandshakeRejected(int(request.token), b"no: " + request.token.encode())
            if request.token == "bug":
                raise RuntimeError("a bug in the hook")
            return "alice" if request.token == "good" else None

        hub = trioconn.Hub(
            authenticate=authenticate, allowed_origins={"https://app.example"}, refuse_with="close"
        )
        async with served(hub) as (app, tasks):
            cases = [
                (
                    [(b"origin", b"https://evil.example")],
                    b"good",
                    4403,
                    "origin https://evil.example is not allowed",
                ),
                ([], b"bad", 4401, "unauthorized"),
                ([], b"403", 4403, "no: 403"),
                ([], b"404", 1008, "no: 404"),
                ([], b"429", 1013, "no: 429"),
                ([], b"500", 1011, "no: 500"),
                ([], b"503", 1001, "no: 503"),
                ([], b"bug", 1011, "internal error"),
            ]
            for headers, token, code, reason in cases:
                server = FakeServer(headers=headers, extensions=extensions)
                server.scope["query_string"] = b"token=" + token
                tasks.start_soon(server.run, app)
                await server.put({"type": "websocket.connect"})
                assert (await server.next()) == {"type": "websocket.accept"}
                assert (await server.next()) == {"type": "websocket.close", "code": code, "reason": reason}
                await server.done.wait()  # nothing else: no welcome, no connection
            assert hub.statistics().disconnects == {
                "refused-401": 1,
                "refused-403": 2,
                "refused-404": 1,
                "refused-429": 1,
                "refused-500": 2,
                "refused-503": 1,
            }
            assert hub.statistics().accepted == 0
            ok = await accepted(app, tasks, headers=[(b"origin", b"https://app.example")])
            await ok.put({"type": "websocket.disconnect", "code": 1000})

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_close_mode_a_hub_that_is_not_running_closes_with_1001(backend, caplog):
    async def body() -> None:
        hub = trioconn.Hub(refuse_with="close")
        app = HubApp(hub)
        async with anyio.create_task_group() as tasks:
            server = await connect(app, tasks)
            assert (await server.next()) == {"type": "websocket.accept"}
            close = await server.next()
            assert (close["type"], close["code"], close["reason"]) == (
                "websocket.close",
                1001,
                "the hub is not running",
            )
            await server.done.wait()
        assert hub.statistics().disconnects == {"refused-503": 1}

    run(backend, body)
    assert "trioconn.asgi.lifespan(hub)" in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hub_that_is_not_running_refuses_with_503_and_says_why(backend, caplog):
    async def body() -> None:
        hub = trioconn.Hub()
        app = HubApp(hub)
        async with anyio.create_task_group() as tasks:
            server = await connect(app, tasks)
            start = await server.next()
            assert start["status"] == 503
            body = await server.next()
            assert b"not running" in body["body"]

    run(backend, body)
    assert "trioconn.asgi.lifespan(hub)" in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_end_of_the_lifespan_closes_connections_with_1001_after_their_queued_frames(backend):
    async def body() -> None:
        hub = trioconn.Hub()
        app = HubApp(hub)
        async with anyio.create_task_group() as tasks:
            async with lifespan(hub):
                server = await accepted(app, tasks)
                await server.put_frame({"type": "subscribe", "topic": "t", "ref": 1})
                await server.next_frame("subscribed")
                for n in range(50):
                    hub.publish_nowait("t", n)
            # the block waited for the connection to end: every event, then 1001
            offsets = []
            while True:
                message = await server.next()
                if message["type"] == "websocket.close":
                    assert message["code"] == 1001
                    break
                offsets += [f["offset"] for f in frames_of(message) if f["type"] == "event"]
            assert offsets == list(range(1, 51))
            await server.done.wait()
            assert hub.sessions() == []

    run(backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_as_the_whole_app_it_runs_its_own_lifespan_and_answers_http_with_426(backend):
    async def body() -> None:
        hub = trioconn.Hub()
        app = HubApp(hub)
        to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](10)
        app_outbox_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](10)
        http_out_send, http_out = anyio.create_memory_object_stream[dict[str, Any]](10)
        streams = (to_app, app_inbox, app_outbox_send, from_app, http_out_send, http_out)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app, {"type": "lifespan"}, app_inbox.receive, app_outbox_send.send)
            await to_app.send({"type": "lifespan.startup"})
            assert (await from_app.receive())["type"] == "lifespan.startup.complete"
            server = await accepted(app, tasks)

            await app({"type": "http", "path": "/"}, app_inbox.receive, http_out_send.send)
            assert (await http_out.receive())["status"] == 426

            await to_app.send({"type": "lifespan.shutdown"})
            assert (await server.until_closed())["code"] == 1001
            assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"
        for stream in streams:
            stream.close()

    run(backend, body)


def test_hub_app_wants_a_hub():
    with pytest.raises(TypeError, match="must be a trioconn Hub"):
        HubApp("hub")  # type: ignore[arg-type]


HUB_MADE_AT_IMPORT = trioconn.Hub(heartbeat_interval=1, heartbeat_timeout=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hub_made_outside_any_event_loop_serves_in_one(backend):
    """A web app makes its hub at import time, before the server starts the loop."""

    async def body() -> None:
        hub = HUB_MADE_AT_IMPORT if backend == "asyncio" else trioconn.Hub()
        async with served(hub) as (app, tasks):
            server = await accepted(app, tasks)
            await server.put_frame({"type": "subscribe", "topic": "t", "ref": 1})
            await server.next_frame("subscribed")
            await hub.publish("t", 1)
            assert (await server.next_frame("event"))["data"] == 1
            await server.put({"type": "websocket.disconnect", "code": 1000})
            await server.done.wait()

    run(backend, body)


def test_hub_settings_are_hub_config_fields_with_one_set_of_defaults():
    import attrs

    from trioconn._server.config import HubSettings

    assert set(HubSettings.__annotations__) == {field.name for field in attrs.fields(trioconn.HubConfig)}
    config = trioconn.HubConfig(heartbeat_interval=5, heartbeat_timeout=20)
    assert trioconn.Hub(config).config is config
    assert trioconn.Hub(heartbeat_interval=5, heartbeat_timeout=20).config == config
    assert trioconn.Hub().config == trioconn.HubConfig()
    with pytest.raises(TypeError, match="not both"):
        trioconn.Hub(config, heartbeat_interval=5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="must be a HubConfig"):
        trioconn.Hub({"heartbeat_interval": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword"):
        trioconn.Hub(heartbeat=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="single string"):
        trioconn.Hub(allowed_origins="https://app.example")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hub_that_cannot_start_fails_the_lifespan_startup(backend, caplog):
    """The server must not serve on with a hub that refuses everyone (uvicorn would)."""

    async def body() -> None:
        hub = trioconn.Hub()
        await hub.aclose()
        to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](10)
        app_outbox_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](10)
        with to_app, app_inbox, app_outbox_send, from_app:
            await to_app.send({"type": "lifespan.startup"})
            await HubApp(hub)({"type": "lifespan"}, app_inbox.receive, app_outbox_send.send)
            failed = await from_app.receive()
            assert failed["type"] == "lifespan.startup.failed"
            assert "closed" in failed["message"]

    run(backend, body)
    assert "the hub failed to start" in caplog.text


def test_serve_socket_wants_a_server_socket():
    async def body() -> None:
        with pytest.raises(TypeError, match=r"must be a trioconn\.ServerSocket"):
            await trioconn.Hub().serve_socket(object(), None)  # type: ignore[arg-type]

    run("trio", body)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("settings", [{}, {"refuse_with": "close", "authenticate": lambda request: None}])
def test_a_client_gone_before_the_accept_is_no_error(backend, settings):
    async def body() -> None:
        async def gone(message: dict[str, Any]) -> None:
            raise OSError("client disconnected")  # what uvicorn raises (ClientDisconnected)

        hub = trioconn.Hub(**settings)
        async with served(hub) as (app, _tasks):
            server = FakeServer()
            await server.put({"type": "websocket.connect"})
            await app(server.scope, server.receive, gone)  # returns, does not raise
            assert hub.sessions() == []

    run(backend, body)
