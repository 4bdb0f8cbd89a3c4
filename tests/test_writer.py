"""The direct data path: pre-built frames, written at once, the rest by the sender."""

import json

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from trioconn import Hub
from trioconn._frontends.trio_wsproto.writer import frame

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
            assert conn._socket.direct
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
            assert conn._socket.pending or len(conn.outbox)  # the kernel did not take it all
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


class RawReader:
    """The client side over a raw socket, with wsproto: complete messages and pongs, in order."""

    def __init__(self, stream):
        self.stream = stream
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.messages = []  # parsed JSON messages, and "pong"
        self._partial = ""

    async def read_until(self, condition):
        with trio.fail_after(10):
            while not condition(self):
                self.conn.receive_data(await self.stream.receive_some(1 << 20))
                for event in self.conn.events():
                    assert not isinstance(event, CloseConnection), event  # the stream is corrupt
                    if isinstance(event, Pong):
                        self.messages.append("pong")
                    elif isinstance(event, TextMessage):
                        self._partial += event.data
                        if event.message_finished:
                            self.messages.append(json.loads(self._partial))
                            self._partial = ""

    def events(self):
        count = 0
        for message in self.messages:
            if isinstance(message, dict):
                count += len(message["frames"]) if message["type"] == "batch" else message["type"] == "event"
        return count


async def test_a_pong_sent_during_a_burst_never_lands_inside_a_pending_frame():
    """trio-websocket answers pings from its reader task, while a direct write may have left bytes."""
    hub = Hub(outbox_size=10_000)
    big = "z" * 60_000
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        for attempt in range(5):  # without the fix the race was lost in 14 of 20 runs
            topic = f"t{attempt}"
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                client = RawReader(stream)
                await stream.send_all(client.conn.send(Request(host="127.0.0.1", target="/")))
                await client.read_until(lambda c: len(c.messages) == 1)  # welcome
                subscribe = json.dumps({"type": "subscribe", "topic": topic})
                await stream.send_all(client.conn.send(TextMessage(subscribe)))
                await client.read_until(lambda c: len(c.messages) == 2)  # subscribed
                # The ping waits in the hub's socket buffer while the burst is written: at the next
                # checkpoint the reader (its pong) and the sender (pending bytes) both want to write.
                await stream.send_all(client.conn.send(Ping(b"are you there")))
                for i in range(25):  # 1.5 MB: more than the socket takes at once, within any budget
                    hub.publish_nowait(topic, [i, big])
                await client.read_until(lambda c: "pong" in c.messages and c.events() == 25)
        nursery.cancel_scope.cancel()


async def test_a_tcp_peer_is_named_host_and_port_to_authenticate_and_in_statistics():
    seen: list[str] = []

    def authenticate(request):
        seen.append(request.remote)
        return "someone"

    hub = Hub(authenticate=authenticate)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        async with loopback_client(port) as client:
            await client.recv_type("welcome")
            client_port = client.ws.local.port
            assert seen == [f"127.0.0.1:{client_port}"]
            assert [s.remote for s in hub.statistics().sessions] == seen
        nursery.cancel_scope.cancel()
