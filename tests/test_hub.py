"""The Hub over in-memory streams, in virtual time."""

import json
import logging

import pytest
import trio
import trio.testing
import trio_websocket

from trioconn import HandshakeRejected, Hub, HubStopped, TopicEnded

from .conftest import RawClient, memory_client


async def welcomed(client):
    return await client.recv_type("welcome")


async def subscribe(client, topic, **extra):
    await client.send({"type": "subscribe", "topic": topic, **extra})
    frame = await client.recv()
    assert frame["type"] in ("subscribed", "reset"), frame
    return frame


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"heartbeat_interval": 10, "heartbeat_timeout": 20}, "less than half"),
        ({"heartbeat_interval": 0}, "positive"),
        ({"heartbeat_timeout": -1}, "positive"),
        ({"heartbeat_interval": float("nan")}, "positive"),
        ({"heartbeat_interval": 0.001, "heartbeat_timeout": 1}, "from 0.01 to 3600.0 seconds"),
        ({"heartbeat_interval": 60, "heartbeat_timeout": 7200}, "clients refuse"),
        ({"history_size": 0}, "positive"),
        ({"outbox_size": 1.5}, "must be an int"),
        ({"max_connections": 0}, "positive"),
        ({"max_handshakes": 0}, "positive"),
        ({"max_sockets": 0}, "positive"),
        ({"max_sockets": 2.5}, "must be an int"),
        ({"send_timeout": "3"}, "must be a number"),
        ({"allowed_origins": "https://a.example"}, "collection"),
        ({"authenticate": 5}, "callable"),
        ({"refuse_with": "websocket"}, "refuse_with must be 'http' .* or 'close'"),
        ({"refuse_with": None}, "refuse_with must be a str"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(kwargs, words):
    with pytest.raises((ValueError, TypeError), match=words):
        Hub(**kwargs)


# -- welcome and heartbeat -----------------------------------------------------------------------


async def test_welcome_tells_the_client_the_heartbeat_it_must_follow(autojump_clock):
    hub = Hub(heartbeat_interval=5, heartbeat_timeout=12)
    async with memory_client(hub) as client:
        welcome = await welcomed(client)
        assert welcome["heartbeat"] == {"interval": 5, "timeout": 12}
        assert welcome["version"] == 1 and welcome["session"] in hub.sessions()


async def test_pings_come_every_interval(autojump_clock):
    hub = Hub(heartbeat_interval=5, heartbeat_timeout=12)
    async with memory_client(hub) as client:
        client.answer_pings = False
        await welcomed(client)
        start = trio.current_time()
        ping = await client.recv_type("ping")
        assert trio.current_time() - start == pytest.approx(5)
        await client.send({"type": "pong", "id": ping["id"]})
        ping2 = await client.recv_type("ping")
        assert ping2["id"] == ping["id"] + 1 and trio.current_time() - start == pytest.approx(10)
        assert ping2["rtt"] == pytest.approx(0, abs=0.01)
        (session,) = hub.statistics().sessions
        assert session.pings_sent == 2 and session.pongs_seen == 1


async def test_silent_client_is_closed_with_4000_at_the_deadline_and_forgotten(autojump_clock):
    hub = Hub(heartbeat_interval=5, heartbeat_timeout=12)
    hub.publish_nowait("t", 1)
    async with memory_client(hub) as client:
        client.answer_pings = False
        await welcomed(client)
        await subscribe(client, "t")
        start = trio.current_time()
        reason = await client.closed()
        assert reason.code == 4000 and trio.current_time() - start == pytest.approx(12)
    await trio.testing.wait_all_tasks_blocked()
    stats = hub.statistics()
    assert stats.connections == 0 and stats.topics["t"].subscribers == 0
    assert stats.disconnects == {"heartbeat-timeout": 1}


async def test_any_client_frame_pushes_the_deadline_ahead(autojump_clock):
    hub = Hub(heartbeat_interval=5, heartbeat_timeout=12)
    async with memory_client(hub) as client:
        await welcomed(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.closed)  # keep reading, never answer pings
            client.answer_pings = False
            for _ in range(10):  # 100 s of unsubscribe-errors, never a pong
                await trio.sleep(10)
                await client.send({"type": "unsubscribe", "topic": "x"})
            assert hub.statistics().connections == 1
            nursery.cancel_scope.cancel()


# -- topics ----------------------------------------------------------------------------------------


async def test_events_flow_in_order_and_queued_ones_come_batched(autojump_clock):
    hub = Hub()
    async with memory_client(hub) as client:
        await welcomed(client)
        await subscribe(client, "logs")
        for i in range(5):
            hub.publish_nowait("logs", f"line {i}")
        raw = json.loads(await client.ws.get_message())
        assert raw["type"] == "batch" and [f["offset"] for f in raw["frames"]] == [1, 2, 3, 4, 5]
        await hub.publish("logs", "line 5")
        assert json.loads(await client.ws.get_message()) == {
            "type": "event",
            "topic": "logs",
            "offset": 6,
            "data": "line 5",
        }


async def test_state_topic_subscriber_gets_snapshot_then_only_latest_values(autojump_clock):
    hub = Hub()
    hub.set_state_nowait("job", {"pct": 10})
    async with memory_client(hub) as client:
        await welcomed(client)
        answer = await subscribe(client, "job")
        assert answer["kind"] == "state" and answer["snapshot"] == {"pct": 10}
        for pct in (20, 30, 40):  # client not reading: values replace each other in the outbox
            hub.set_state_nowait("job", {"pct": pct})
        frame = await client.recv()
        assert frame == {"type": "event", "topic": "job", "offset": 4, "data": {"pct": 40}}
        assert hub.statistics().sessions[0].events_dropped == 2


async def test_resume_after_reconnect_replays_what_was_missed(autojump_clock):
    hub = Hub()
    hub.publish_nowait("logs", 1)
    async with memory_client(hub) as client:
        await welcomed(client)
        answer = await subscribe(client, "logs")
    epoch, seen = answer["epoch"], answer["offset"]
    for i in (2, 3, 4):
        hub.publish_nowait("logs", i)
    async with memory_client(hub) as client:
        await welcomed(client)
        answer = await subscribe(client, "logs", resume={"epoch": epoch, "offset": seen})
        assert answer["type"] == "subscribed" and answer["replayed"] == 3
        assert [(await client.recv())["data"] for _ in range(3)] == [2, 3, 4]
        hub.publish_nowait("logs", 5)
        assert (await client.recv())["data"] == 5


async def test_resume_too_old_gets_reset_not_a_silent_gap(autojump_clock):
    hub = Hub(history_size=2)
    for i in range(5):
        hub.publish_nowait("logs", i)
    async with memory_client(hub) as client:
        await welcomed(client)
        epoch = hub.statistics().topics["logs"].epoch
        answer = await subscribe(client, "logs", resume={"epoch": epoch, "offset": 1})
        assert answer["type"] == "reset" and answer["offset"] == 5
        answer = await subscribe(client, "other", resume={"epoch": "gone", "offset": 3})
        assert answer["type"] == "reset"


async def test_ended_topic_ends_subscriptions_and_late_subscribers_get_it_at_once(autojump_clock):
    hub = Hub()
    async with memory_client(hub) as client:
        await welcomed(client)
        await subscribe(client, "job")
        hub.set_state_nowait("job", "done")
        await hub.end("job")
        assert (await client.recv())["data"] == "done"
        assert await client.recv() == {"type": "end", "topic": "job", "offset": 1}
        assert hub.statistics().sessions[0].subscriptions == ()
    async with memory_client(hub) as client:
        await welcomed(client)
        answer = await subscribe(client, "job")
        assert answer["ended"] and answer["snapshot"] == "done"
        assert (await client.recv())["type"] == "end"
    with pytest.raises(TopicEnded):
        hub.set_state_nowait("job", "again")


async def test_publish_argument_errors_are_clear(autojump_clock):
    hub = Hub()
    with pytest.raises(TypeError, match="JSON"):
        hub.publish_nowait("t", object())
    deep: list = []
    for _ in range(1000):
        deep = [deep]
    for write in (hub.publish_nowait, hub.set_state_nowait):
        with pytest.raises(TypeError, match="nested more than 32 levels"):
            write("deep", deep)
    assert "deep" not in hub.statistics().topics  # nothing left behind
    with pytest.raises(ValueError, match="empty"):
        hub.publish_nowait("", 1)
    hub.publish_nowait("t", 1)
    with pytest.raises(ValueError, match="stream topic"):
        await hub.set_state("t", 1)


# -- bad input from the network ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{oops", "invalid-json"),
        ("[]", "not-an-object"),
        ('{"type":"shout"}', "unknown-type"),
        ('{"type":"subscribe","ref":"r9"}', "invalid-field"),
        (b"\x00\x01", "binary-frame"),
        ('{"type":"unsubscribe","topic":"never","ref":"r9"}', "not-subscribed"),
        ('{"type":"publish","topic":"t","data":1,"ref":"r9"}', "forbidden"),
        ('{"type":"subscribe","topic":"t","x":' + "[" * 1000 + "]" * 1000 + "}", "invalid-json"),
        ('{"type":"subscribe","topic":"t","x":1e999}', "invalid-field"),
    ],
)
async def test_bad_frames_get_an_error_and_everyone_keeps_being_served(autojump_clock, message, code):
    hub = Hub()
    async with memory_client(hub) as bad, memory_client(hub) as good:
        await welcomed(bad)
        await welcomed(good)
        await subscribe(good, "t")
        await bad.send(message)
        error = await bad.recv_type("error")
        assert error["code"] == code and error["message"]
        if isinstance(message, str) and "r9" in message:
            assert error["ref"] == "r9"
        await subscribe(bad, "t")  # the bad client's connection is still open
        hub.publish_nowait("t", "still here")
        assert (await bad.recv())["data"] == (await good.recv())["data"] == "still here"


async def test_double_subscribe_and_subscription_limit_are_errors(autojump_clock):
    hub = Hub(max_subscriptions=2)
    async with memory_client(hub) as client:
        await welcomed(client)
        await subscribe(client, "a")
        await client.send({"type": "subscribe", "topic": "a"})
        assert (await client.recv_type("error"))["code"] == "already-subscribed"
        await subscribe(client, "b")
        await client.send({"type": "subscribe", "topic": "c"})
        assert (await client.recv_type("error"))["code"] == "too-many-subscriptions"
        await client.send({"type": "unsubscribe", "topic": "a", "ref": 1})
        assert await client.recv() == {"type": "unsubscribed", "topic": "a", "ref": 1}


async def test_oversized_frame_closes_with_1009_and_others_are_unaffected(autojump_clock):
    hub = Hub(max_frame_size=1000)
    async with memory_client(hub) as bad, memory_client(hub) as good:
        await welcomed(bad)
        await welcomed(good)
        await subscribe(good, "t")
        await bad.send(json.dumps({"type": "publish", "topic": "t", "data": "x" * 2000}))
        assert (await bad.closed()).code == 1009
        hub.publish_nowait("t", 1)
        assert (await good.recv())["data"] == 1
    await trio.testing.wait_all_tasks_blocked()
    assert hub.statistics().disconnects.get("frame-too-big") == 1


@pytest.mark.parametrize(
    ("text", "closed"),
    [("é" * 470, False), ("é" * 520, True), ("😀" * 235, False), ("😀" * 260, True)],
    ids=["2-byte-chars-under", "2-byte-chars-over", "4-byte-chars-under", "4-byte-chars-over"],
)
async def test_max_frame_size_counts_the_bytes_of_text_not_its_characters(autojump_clock, text, closed):
    # 280 to 570 characters, all under 1000; the UTF-8 bytes (plus the frame's JSON) decide.
    hub = Hub(max_frame_size=1000)
    async with memory_client(hub) as client:
        await welcomed(client)
        message = json.dumps({"type": "publish", "topic": "t", "data": text, "ref": 1}, ensure_ascii=False)
        assert len(message) < 1000 and (len(message.encode()) > 1000) == closed
        await client.send(message)
        if closed:
            closing = await client.closed()
            assert closing.code == 1009 and closing.reason == "message over 1000 bytes"
        else:  # read and answered (publishing is not allowed without an authorize hook)
            answer = await client.recv_type("error")
            assert answer["ref"] == 1 and answer["code"] == "forbidden"


async def test_a_failing_authorize_hook_closes_only_that_connection_with_1011(autojump_clock, caplog):
    def authorize(identity, topic, action):
        if topic == "boom":
            raise RuntimeError("hook bug")
        return True

    hub = Hub(authorize=authorize)
    async with memory_client(hub) as bad, memory_client(hub) as good:
        await welcomed(bad)
        await welcomed(good)
        await bad.send({"type": "subscribe", "topic": "boom"})
        assert (await bad.closed()).code == 1011
        await subscribe(good, "fine")
    assert "hook bug" in caplog.text


# -- slow consumers ------------------------------------------------------------------------------


async def test_one_stalled_client_never_holds_up_the_publisher_or_100_healthy_ones(autojump_clock):
    hub = Hub(send_timeout=2, outbox_size=1000)
    events = 120
    received: dict[int, list[int]] = {}

    async def healthy(index, task_status):
        async with memory_client(hub) as client:
            await welcomed(client)
            await subscribe(client, "t")
            task_status.started()
            got = received.setdefault(index, [])
            while len(got) < events:
                got.append((await client.recv())["data"])

    async def publisher():
        for i in range(events):
            await hub.publish("t", i)
            if i % 3 == 0:
                await trio.sleep(0.1)
        return trio.current_time()

    async with trio.open_nursery() as outer:
        # the stalled client: a lockstep stream has no buffer, so the server's send blocks as
        # soon as the client stops reading
        client_stream, server_stream = trio.testing.lockstep_stream_pair()
        outer.start_soon(hub.serve_stream, server_stream)
        stalled = await trio_websocket.wrap_client_stream(outer, client_stream, "localhost", "/")
        json.loads(await stalled.get_message())
        await stalled.send_message(json.dumps({"type": "subscribe", "topic": "t"}))
        async with trio.open_nursery() as nursery:
            for index in range(100):
                await nursery.start(healthy, index)
            start = trio.current_time()
            await publisher()
            publisher_time = trio.current_time() - start
        # closed by the send timeout (2 s) while the publisher went on; a full buffer takes
        # no close frame, so the client sees the socket close (1006)
        assert hub.statistics().disconnects == {"slow-consumer": 1, "client-closed": 100}
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            while True:
                await stalled.get_message()
        assert info.value.reason.code == 1006
        outer.cancel_scope.cancel()
    assert publisher_time == pytest.approx(events / 3 * 0.1)  # never waited on the stalled one
    assert len(received) == 100
    assert all(got == list(range(events)) for got in received.values())


async def test_outbox_overflow_closes_with_4001(autojump_clock):
    hub = Hub(outbox_size=3)
    async with memory_client(hub) as client:
        await welcomed(client)
        await subscribe(client, "t")
        for i in range(10):  # no checkpoint: the sender cannot run, the outbox overflows
            hub.publish_nowait("t", i)
        assert (await client.closed()).code == 4001
    await trio.testing.wait_all_tasks_blocked()
    assert hub.statistics().connections == 0


# -- closing ----------------------------------------------------------------------------------------


async def test_hub_close_sends_queued_events_then_1000(autojump_clock):
    hub = Hub()
    async with memory_client(hub) as client:
        welcome = await welcomed(client)
        await subscribe(client, "job")
        hub.set_state_nowait("job", "100%")
        assert hub.close(welcome["session"], reason="job done")
        assert (await client.recv())["data"] == "100%"
        reason = await client.closed()
        assert (reason.code, reason.reason) == (1000, "job done")
    assert not hub.close("no-such-session")
    with pytest.raises(ValueError, match="1000 or 3000-4999"):
        hub.close("x", code=1006)
    with pytest.raises(ValueError, match="123 bytes"):
        hub.close("x", reason="é" * 62)
    with pytest.raises(TypeError, match="reason must be a str"):
        hub.close("x", reason=None)


@pytest.mark.parametrize("how", ["client-close", "reset"])
async def test_connection_state_is_gone_however_the_client_leaves(autojump_clock, how):
    hub = Hub()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.serve_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", "/")
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "subscribe", "topic": "t"}))
        await ws.get_message()
        hub.publish_nowait("t", 0)
        assert hub.statistics().topics["t"].subscribers == 1
        if how == "client-close":
            await ws.aclose()
        else:
            await trio.aclose_forcefully(client_stream)
        await trio.testing.wait_all_tasks_blocked()
        stats = hub.statistics()
        assert stats.connections == 0 and stats.topics["t"].subscribers == 0
        assert stats.disconnects == {"client-closed" if how == "client-close" else "connection-lost": 1}
        nursery.cancel_scope.cancel()


async def test_aclose_sends_1001_to_everyone_and_waits_for_every_connection(autojump_clock):
    hub = Hub()
    reasons = []

    async def one(task_status):
        async with memory_client(hub) as client:
            await welcomed(client)
            task_status.started()
            reasons.append((await client.closed()).code)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            await nursery.start(one)
        await hub.aclose()
        assert hub.statistics().connections == 0
    assert reasons == [1001] * 5
    await hub.aclose()  # twice is fine
    with pytest.raises(HubStopped):
        hub.publish_nowait("t", 1)


async def test_cancelling_the_server_sends_1001(autojump_clock):
    hub = Hub()
    async with trio.open_nursery() as nursery:
        server = trio.CancelScope()

        served = trio.Event()

        async def serve(stream):
            with server:
                await hub.serve_stream(stream)
            served.set()

        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(serve, server_stream)
        ws = await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", "/")
        await ws.get_message()
        server.cancel()
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason.code == 1001
        start = trio.current_time()
        await served.wait()
        assert trio.current_time() == start  # the close handshake completed: no close timeout
        assert hub.statistics().connections == 0


# -- handshake policy --------------------------------------------------------------------------------


async def open_raw(hub, path="/", headers=None):
    client_stream, server_stream = trio.testing.memory_stream_pair()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.serve_stream, server_stream)
            ws = await trio_websocket.wrap_client_stream(
                nursery, client_stream, "localhost", path, extra_headers=headers
            )
            await ws.aclose()
            return 101
    except* trio_websocket.ConnectionRejected as group:
        status = group.exceptions[0].status_code
    return status


async def test_authentication_by_query_token_or_bearer_header(autojump_clock):
    seen = []

    async def authenticate(request):
        seen.append(request.token)
        if request.token == "banned":
            raise HandshakeRejected(403, b"banned user")
        return {"user": request.token} if request.token == "good" else None

    hub = Hub(authenticate=authenticate)
    assert await open_raw(hub, "/?token=good") == 101
    assert await open_raw(hub, "/", [(b"Authorization", b"Bearer good")]) == 101
    assert await open_raw(hub, "/?token=bad") == 401
    assert await open_raw(hub, "/") == 401
    assert await open_raw(hub, "/?token=banned") == 403
    assert seen == ["good", "good", "bad", None, "banned"]
    assert hub.statistics().disconnects["refused-401"] == 2


async def test_refused_origins_get_403_and_non_browser_clients_pass(autojump_clock):
    hub = Hub(allowed_origins=["https://app.example"])
    assert await open_raw(hub, headers=[(b"Origin", b"https://evil.example")]) == 403
    assert await open_raw(hub, headers=[(b"Origin", b"https://app.example")]) == 101
    assert await open_raw(hub) == 101


async def test_authorize_decides_subscribe_and_publish_per_identity(autojump_clock):
    def authorize(identity, topic, action):
        return identity == "admin" or (action == "subscribe" and topic.startswith("public/"))

    hub = Hub(authenticate=lambda request: request.token, authorize=authorize)
    async with memory_client(hub, "/?token=guest") as guest, memory_client(hub, "/?token=admin") as admin:
        await welcomed(guest)
        await welcomed(admin)
        await subscribe(guest, "public/news")
        await guest.send({"type": "subscribe", "topic": "secret", "ref": 1})
        assert (await guest.recv_type("error"))["code"] == "forbidden"
        await guest.send({"type": "publish", "topic": "public/news", "data": "hi", "ref": 2})
        assert (await guest.recv_type("error"))["ref"] == 2
        await admin.send({"type": "publish", "topic": "public/news", "data": "hi", "ref": 3})
        assert await admin.recv() == {"type": "published", "topic": "public/news", "offset": 1, "ref": 3}
        assert (await guest.recv())["data"] == "hi"
        assert [s.identity for s in hub.statistics().sessions] == ["guest", "admin"]


async def test_a_client_silent_after_connecting_is_dropped_at_the_handshake_timeout(autojump_clock):
    hub = Hub(handshake_timeout=3)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    start = trio.current_time()
    await hub.serve_stream(server_stream)  # returns once the socket is given up
    assert trio.current_time() - start == pytest.approx(3)
    assert await client_stream.receive_some() == b""  # closed, no answer
    assert hub.statistics().disconnects == {"handshake-timeout": 1}


async def test_connection_limit_closes_extra_clients_with_1013(autojump_clock):
    hub = Hub(max_connections=1)
    async with memory_client(hub) as first, memory_client(hub) as second:
        await welcomed(first)
        assert (await second.closed()).code == 1013
    assert hub.statistics().disconnects["connection-limit"] == 1


# -- threads, statistics, logging ------------------------------------------------------------------


async def test_many_threads_publish_at_once_and_every_event_arrives(autojump_clock):
    hub = Hub(ended_retention=10**6)  # virtual time jumps while the threads run
    handle = hub.from_thread()

    def worker(n):
        for i in range(50):
            handle.publish("t", [n, i])
            handle.set_state(f"job/{n}", i)
        handle.end(f"job/{n}")

    async with memory_client(hub) as client:
        await welcomed(client)
        await subscribe(client, "t")
        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(trio.to_thread.run_sync, worker, n)
            got = [(await client.recv())["data"] for _ in range(400)]
    assert sorted(map(tuple, got)) == [(n, i) for n in range(8) for i in range(50)]
    for n in range(8):
        assert [d[1] for d in got if d[0] == n] == list(range(50))  # per-thread order kept
    assert hub.statistics().topics["job/3"].ended


async def test_thread_handle_after_stop_raises_hub_stopped_and_refuses_the_trio_thread(autojump_clock):
    hub = Hub()
    handle = hub.from_thread()
    with pytest.raises(RuntimeError, match="other threads"):
        handle.publish("t", 1)
    await hub.aclose()
    with pytest.raises(HubStopped):
        await trio.to_thread.run_sync(handle.publish, "t", 1)


def test_thread_handle_after_the_trio_run_ended_raises_hub_stopped():
    hub = Hub()

    async def main():
        return hub.from_thread()

    handle = trio.run(main)
    with pytest.raises(HubStopped, match="finished"):
        handle.set_state("t", 1)


async def test_statistics_and_one_log_line_per_open_and_close(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="trioconn")
    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3)
    async with memory_client(hub) as client:
        await welcomed(client)
        await subscribe(client, "t")
        hub.publish_nowait("t", 1)
        await client.recv()
        await trio.sleep(2.5)
        await client.send({"type": "pong", "id": 2})
        await trio.testing.wait_all_tasks_blocked()
        (session,) = hub.statistics().sessions
        assert session.pongs_seen == 1 and session.remote == "in-memory"
        assert session.pings_sent == 2 and session.frames_sent >= 3 and session.subscriptions == ("t",)
        assert session.last_seen > session.opened_at
    await trio.testing.wait_all_tasks_blocked()
    stats = hub.statistics()
    assert stats.accepted == 1 and stats.topics["t"].offset == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "trioconn"]
    assert sum("opened" in line for line in lines) == 1
    (closed,) = [line for line in lines if "closed" in line]
    assert "client-closed" in closed and "code 1000" in closed


# -- nothing outlives a connection ---------------------------------------------------------------


def assert_forgotten(hub):
    stats = hub.statistics()
    assert stats.connections == 0 and stats.sessions == ()
    assert all(topic.subscribers == 0 for topic in stats.topics.values())
    assert not hub._all._members


@pytest.mark.parametrize(
    "ending",
    ["client-close", "reset", "heartbeat", "slow-consumer", "server-error", "cancellation", "work-done"],
)
async def test_whatever_ends_a_connection_its_state_and_tasks_are_gone(autojump_clock, ending):
    def authorize(identity, topic, action):
        if topic == "boom":
            raise RuntimeError("a bug in the authorize hook")  # the server's own error: 1011
        return True

    hub = Hub(heartbeat_interval=1, heartbeat_timeout=3, outbox_size=2, authorize=authorize)
    hub.publish_nowait("t", 0)
    hub.set_state_nowait("s", 0)
    served = trio.Event()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        client_stream, server_stream = trio.testing.memory_stream_pair()

        async def serve():
            with scope:
                await hub.serve_stream(server_stream)
            served.set()  # serve_stream returns only once every task of the connection ended

        nursery.start_soon(serve)
        ws = await trio_websocket.wrap_client_stream(nursery, client_stream, "localhost", "/")
        client = RawClient(ws)
        welcome = await welcomed(client)
        await subscribe(client, "t")
        await subscribe(client, "s")
        assert hub.statistics().connections == 1
        if ending == "client-close":
            await ws.aclose()
        elif ending == "reset":
            await trio.aclose_forcefully(client_stream)
        elif ending == "heartbeat":
            client.answer_pings = False
            await client.closed()
        elif ending == "slow-consumer":
            for i in range(5):
                hub.publish_nowait("t", i)
            await client.closed()
        elif ending == "server-error":
            await client.send({"type": "subscribe", "topic": "boom"})
            assert (await client.closed()).code == 1011
        elif ending == "cancellation":
            scope.cancel()
            await client.closed()
        else:
            hub.close(welcome["session"])
            await client.closed()
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)  # past every close timeout, in virtual time
        assert_forgotten(hub)
        assert served.is_set()
        nursery.cancel_scope.cancel()
