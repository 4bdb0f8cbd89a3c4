"""The direct data path: pre-built frames, written at once, the rest by the sender."""

import json

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from trioconn import Hub
from trioconn._writer import frame

from .conftest import loopback_client


def server_connection() -> WSConnection:
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/")))
    next(server.events())
    server.send(AcceptConnection())
    return server


@pytest.mark.parametrize("text", ["", "x", "é" * 100, "y" * 70_000])
def test_frames_are_what_wsproto_sends(text):
    assert frame(text) == server_connection().send(TextMessage(data=text))


def test_one_publication_is_framed_once():
    text = "".join(["a", "b"])
    assert frame(text) is frame(text)


async def test_tcp_connections_use_the_direct_path():
    hub = Hub()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        async with loopback_client(port) as client:
            await client.recv_type("welcome")
            (conn,) = hub._connections.values()
            # if a trio-websocket upgrade removes the attributes the writer needs, this fails
            assert conn._writer is not None
        nursery.cancel_scope.cancel()


async def test_what_the_socket_cannot_take_is_sent_later_in_order():
    hub = Hub(outbox_size=10_000, outbox_bytes=64 << 20)
    big = "z" * 60_000
    count = 300  # 18 MB: far more than the socket buffers hold
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        async with loopback_client(port) as client:
            await client.recv_type("welcome")
            await client.send({"type": "subscribe", "topic": "t"})
            await client.recv_type("subscribed")
            for i in range(count):
                hub.publish_nowait("t", [i, big])  # no checkpoint: direct writes fill the socket
            (conn,) = hub._connections.values()
            assert conn._writer.pending or len(conn.outbox)  # the kernel did not take it all
            got = []
            with trio.fail_after(30):
                while len(got) < count:
                    got.append((await client.recv())["data"][0])
            assert got == list(range(count))
        nursery.cancel_scope.cancel()


async def test_a_client_that_stops_reading_over_tcp_is_dropped_and_others_are_not():
    hub = Hub(send_timeout=0.5, outbox_size=10_000)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, trio.open_nursery() as inner, loopback_client(port) as healthy:
            stalled = await trio_websocket.wrap_client_stream(inner, stream, "127.0.0.1", "/")
            json.loads(await stalled.get_message())
            await stalled.send_message(json.dumps({"type": "subscribe", "topic": "t"}))
            await healthy.recv_type("welcome")
            await healthy.send({"type": "subscribe", "topic": "t"})
            await healthy.recv_type("subscribed")
            # the stalled client's reader task stops taking data off the socket
            inner.cancel_scope.cancel()
            with trio.fail_after(30):
                for i in range(400):
                    await hub.publish("t", [i, "w" * 50_000])
                    assert (await healthy.recv())["data"][0] == i
                while "slow-consumer" not in hub.statistics().disconnects:
                    await hub.publish("t", "more")
                    await healthy.recv()
        nursery.cancel_scope.cancel()
