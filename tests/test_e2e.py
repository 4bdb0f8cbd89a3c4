"""The Hub over real loopback sockets, driven by a plain trio-websocket client."""

import json

import pytest
import trio
import trio_websocket

from trioconn import Hub

from .conftest import loopback_client


async def test_welcome_subscribe_snapshot_events_resume_and_close_codes():
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        hub.set_state_nowait("job/1", {"pct": 0})
        for i in range(3):
            hub.publish_nowait("logs", f"line {i}")

        async with loopback_client(port) as client:
            welcome = await client.recv_type("welcome")
            assert welcome["heartbeat"] == {"interval": 1, "timeout": 3}
            await client.send({"type": "subscribe", "topic": "job/1"})
            state = await client.recv_type("subscribed")
            assert state["snapshot"] == {"pct": 0}
            await client.send({"type": "subscribe", "topic": "logs", "last": 2})
            logs = await client.recv_type("subscribed")
            assert logs["replayed"] == 2
            assert [(await client.recv())["data"] for _ in range(2)] == ["line 1", "line 2"]
            hub.publish_nowait("logs", "line 3")
            hub.set_state_nowait("job/1", {"pct": 50})
            assert (await client.recv())["data"] == "line 3"
            assert (await client.recv())["data"] == {"pct": 50}
            epoch, seen = logs["epoch"], 4

        # gone: events published meanwhile are replayed on resume, exactly once
        hub.publish_nowait("logs", "line 4")
        hub.publish_nowait("logs", "line 5")
        async with loopback_client(port) as client:
            await client.recv_type("welcome")
            await client.send(
                {"type": "subscribe", "topic": "logs", "resume": {"epoch": epoch, "offset": seen}}
            )
            answer = await client.recv_type("subscribed")
            assert answer["replayed"] == 2
            assert [(await client.recv())["data"] for _ in range(2)] == ["line 4", "line 5"]
            # work done: the server closes with 1000 after the last event
            await client.send({"type": "subscribe", "topic": "job/1"})
            await client.recv_type("subscribed")
            hub.set_state_nowait("job/1", {"pct": 100})
            (session,) = hub.sessions()
            assert hub.close(session, reason="done")
            assert (await client.recv())["data"] == {"pct": 100}
            reason = await client.closed()
            assert (reason.code, reason.reason) == (1000, "done")

        # shutdown: 1001
        async with loopback_client(port) as client:
            await client.recv_type("welcome")
            async with trio.open_nursery() as inner:
                inner.start_soon(hub.aclose)
                reason = await client.closed()
            assert reason.code == 1001
        assert hub.statistics().connections == 0  # aclose returned: every connection finished


async def test_heartbeat_timeout_over_a_real_socket_closes_with_4000():
    hub = Hub(heartbeat_interval=0.05, heartbeat_timeout=0.2)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        async with loopback_client(port) as client:
            client.answer_pings = False
            with trio.fail_after(5):
                reason = await client.closed()
        assert reason.code == 4000
        nursery.cancel_scope.cancel()
    assert hub.statistics().disconnects == {"heartbeat-timeout": 1}


async def test_oversized_frame_over_a_real_socket_closes_1009_and_frees_the_socket():
    hub = Hub(max_frame_size=1024)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, trio.open_nursery() as inner:
            ws = await trio_websocket.wrap_client_stream(inner, stream, "127.0.0.1", "/")
            await ws.get_message()
            await ws.send_message(json.dumps({"type": "publish", "topic": "t", "data": "x" * 5000}))
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                while True:
                    await ws.get_message()
            assert info.value.reason.code == 1009
            inner.cancel_scope.cancel()
            with trio.fail_after(5):  # the server let go of the TCP connection too: EOF
                assert await stream.receive_some() == b""
        # and the server still serves others
        async with loopback_client(port) as client:
            assert (await client.recv())["type"] == "welcome"
        await hub.aclose()
    assert hub.statistics().disconnects == {"frame-too-big": 1, "client-closed": 1}


async def test_serve_can_be_restarted_on_the_same_port_and_topics_stay():
    hub = Hub()
    hub.publish_nowait("logs", "before")
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def serve(port, task_status):
            with scope:
                await hub.serve("127.0.0.1", port, task_status=task_status)

        port = await nursery.start(serve, 0)
        scope.cancel()
        scope = trio.CancelScope()
        assert await nursery.start(serve, port) == port
        async with loopback_client(port) as client:
            await client.recv_type("welcome")
            await client.send({"type": "subscribe", "topic": "logs", "last": 5})
            await client.recv_type("subscribed")
            assert (await client.recv())["data"] == "before"
        nursery.cancel_scope.cancel()


async def test_serve_rejects_bad_arguments():
    hub = Hub()
    with pytest.raises(ValueError, match="port"):
        await hub.serve("127.0.0.1", 70000)
    with pytest.raises(TypeError, match="host"):
        await hub.serve(None, 0)
