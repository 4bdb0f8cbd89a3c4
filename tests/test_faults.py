"""Fault injection on the in-memory link (virtual time) and the loopback TCP proxy."""

import contextlib
from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket

from trioconn import Hub
from trioconn.testing import open_fault_proxy, open_memory_link

from .conftest import RawClient


async def ws_over(link, nursery):
    stream = await link.open_stream()
    return RawClient(await trio_websocket.wrap_client_stream(nursery, stream, "localhost", "/"))


async def test_memory_link_passes_frames_through(autojump_clock):
    hub = Hub()
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await ws_over(link, nursery)
        assert (await client.recv())["type"] == "welcome"
        assert link.connections == 1 and link.accepted == 1
        nursery.cancel_scope.cancel()


async def test_stall_keeps_sockets_open_until_the_heartbeat_gives_up(autojump_clock):
    hub = Hub(heartbeat_interval=5, heartbeat_timeout=12)
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await ws_over(link, nursery)
        await client.recv_type("welcome")
        link.stall()
        start = trio.current_time()
        await trio.sleep(11)
        assert hub.statistics().connections == 1 and link.connections == 1  # half-dead, not closed
        await trio.sleep(2)
        assert hub.statistics().disconnects == {"heartbeat-timeout": 1}
        link.pass_through()  # what was held is delivered: pings, then the 4000 close
        reason = await client.closed()
        assert reason.code == 4000 and trio.current_time() - start == pytest.approx(13)
        nursery.cancel_scope.cancel()


async def test_cut_breaks_the_connection_on_both_sides(autojump_clock):
    hub = Hub()
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await ws_over(link, nursery)
        await client.recv_type("welcome")
        link.cut()
        assert (await client.closed()).code == 1006
        await link.wait_connections(0)
        await trio.testing.wait_all_tasks_blocked()
        assert hub.statistics().disconnects == {"connection-lost": 1}
        nursery.cancel_scope.cancel()


async def test_delay_holds_every_chunk_in_order(autojump_clock):
    hub = Hub()
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        link.delay(0.5)
        start = trio.current_time()
        client = await ws_over(link, nursery)  # handshake: one round trip
        await client.recv_type("welcome")
        assert trio.current_time() - start == pytest.approx(1.0)
        await client.send({"type": "subscribe", "topic": "t"})
        await client.recv_type("subscribed")
        for i in range(3):
            hub.publish_nowait("t", i)
            await trio.sleep(0.1)
        assert [(await client.recv())["data"] for _ in range(3)] == [0, 1, 2]
        nursery.cancel_scope.cancel()


async def test_throttle_paces_the_bytes(autojump_clock):
    hub = Hub()
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await ws_over(link, nursery)
        await client.recv_type("welcome")
        await client.send({"type": "subscribe", "topic": "t"})
        await client.recv_type("subscribed")
        link.throttle(10_000)
        start = trio.current_time()
        hub.publish_nowait("t", "x" * 50_000)
        assert len((await client.recv())["data"]) == 50_000
        assert trio.current_time() - start == pytest.approx(5, rel=0.1)
        nursery.cancel_scope.cancel()


async def test_drop_for_refuses_new_connections_then_allows_them(autojump_clock):
    hub = Hub()
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await ws_over(link, nursery)
        await client.recv_type("welcome")
        link.drop_for(30)
        assert (await client.closed()).code == 1006
        with pytest.raises(OSError, match="refused"):
            await link.open_stream()
        await trio.sleep(30)
        client = await ws_over(link, nursery)
        assert (await client.recv())["type"] == "welcome"
        assert link.refused == 1
        nursery.cancel_scope.cancel()


def test_link_controls_validate_their_arguments():
    from trioconn.testing import FaultyLink

    link = FaultyLink()
    with pytest.raises(ValueError, match="delay"):
        link.delay(-1)
    with pytest.raises(ValueError, match="positive"):
        link.throttle(0)
    with pytest.raises(ValueError, match="bytes_per_second"):
        link.throttle(float("inf"))


async def test_tcp_proxy_passes_stalls_and_resets_real_connections():
    hub = Hub()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        async with open_fault_proxy("127.0.0.1", port) as proxy:
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream, trio.open_nursery() as inner:
                ws = await trio_websocket.wrap_client_stream(inner, stream, "127.0.0.1", "/")
                client = RawClient(ws)
                await client.recv_type("welcome")
                await client.send({"type": "subscribe", "topic": "t"})
                await client.recv_type("subscribed")
                proxy.stall()
                hub.publish_nowait("t", "held")
                with trio.move_on_after(0.2) as waited:
                    await client.recv()
                assert waited.cancelled_caught  # nothing gets through a stalled link
                proxy.pass_through()
                assert (await client.recv())["data"] == "held"
                proxy.cut(reset=True)
                with trio.fail_after(5):
                    assert (await client.closed()).code == 1006
                inner.cancel_scope.cancel()
            with pytest.raises(ValueError, match="target_port"):
                async with open_fault_proxy("127.0.0.1", 0):
                    pass
        nursery.cancel_scope.cancel()


async def test_leaving_the_proxy_block_closes_both_sides_of_every_connection():
    server_saw_eof = trio.Event()

    async def target(stream):
        async with stream:
            while await stream.receive_some():
                pass
            server_saw_eof.set()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, target, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        client = None
        async with open_fault_proxy("127.0.0.1", port) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            await client.send_all(b"hello")
            await proxy.wait_connections(1)
        # the proxy's pipes were cancelled from outside: the server's side is closed too
        with trio.fail_after(2):
            await server_saw_eof.wait()
            # EOF, or a reset if the proxy had unread bytes of ours: closed either way
            with contextlib.suppress(trio.BrokenResourceError):
                assert await client.receive_some() == b""
        await client.aclose()
        nursery.cancel_scope.cancel()
