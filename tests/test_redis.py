"""Several hub processes sharing topics through a real redis-server.

Each test starts its own redis-server on a free port (``redis-server`` must be on PATH; the tests
are skipped otherwise, or fail when ``TRIOCONN_REQUIRE_REDIS=1``). Hub processes are
``tests/redis_hub.py``, the worker without trio is ``tests/redis_publish.py``; clients are plain
trio-websocket connections speaking protocol v1. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_websocket

from trioconn import Backoff, BrokerUnavailable, Hub, TopicEnded

from .conftest import RawClient, hub_process, memory_client

pytestmark = [
    pytest.mark.redis,
    # coredis (6.9, connection/_base.py) gives every connection three anyio memory streams that
    # it never closes; a connection that fails while Redis is down is collected with them open.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in.*MemoryObject(Send|Receive)Stream"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
    # coredis (6.9, pool/_cluster.py) leaves its cluster pool's ``acquire`` generator unfinished
    # when connecting to a node fails; trio's finalizer then reports it.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in.*ClusterConnectionPool\.acquire:pytest.PytestUnraisableExceptionWarning"
    ),
]

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require(*programs: str | None, what: str = "redis-server") -> None:
    """Skip the test when a program is missing, or fail under ``TRIOCONN_REQUIRE_REDIS=1``."""
    if all(programs):
        return
    reason = (
        f"{what} is not on PATH (Debian: apt-get install redis-server redis-tools); "
        "set TRIOCONN_REQUIRE_REDIS=1 to make this a failure"
    )
    if os.environ.get("TRIOCONN_REQUIRE_REDIS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class RedisServer:
    """A redis-server of our own: started, killed (SIGKILL) and started again on the same port.

    With ``cluster``, a node of a Redis Cluster: its cluster state lives in ``nodes.conf`` in
    ``directory``, so a restart on the same port and directory rejoins with the same slots.
    """

    def __init__(self, directory: Path, *, cluster: bool = False) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.dir = directory
        self.cluster = cluster
        self.bus_port = free_port() if cluster else 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, persist: bool = False) -> None:
        """Start; ``persist`` keeps every write in an fsync'ed append-only file across restarts."""
        assert REDIS_SERVER is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if persist else ["--appendonly", "no"]
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        where += ["--logfile", str(self.dir / "redis.log")]
        cluster = []
        if self.cluster:
            # the bus port is chosen too (the default, port + 10000, may not exist); a restart
            # within the node timeout is not a failure the other nodes act on
            cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            cluster += ["--cluster-port", str(self.bus_port), "--cluster-node-timeout", "5000"]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *where, "--save", "", *aof, *cluster],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # a condition with a deadline: the server answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RedisCluster:
    """Three master nodes of a Redis Cluster on 127.0.0.1, made with ``redis-cli --cluster create``.

    It has ``RedisServer``'s surface (``url``, ``start``, ``kill``), acting on every node, so a
    test written for one server runs against the cluster unchanged; ``nodes`` reaches one node
    (a master restart).
    """

    cluster = True

    def __init__(self, directory: Path) -> None:
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(3)]
        self.persist = False

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def create(self) -> None:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        self.wait_ok()

    def wait_ok(self, seconds: float = 20) -> None:
        """Poll every node's ``CLUSTER INFO`` until each says ``cluster_state:ok``."""
        import redis

        deadline = time.monotonic() + seconds
        for node in self.nodes:
            with redis.Redis(port=node.port, socket_timeout=1) as client:
                while True:
                    try:
                        if client.cluster("info")["cluster_state"] == "ok":
                            break
                    except (redis.RedisError, OSError):
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the redis cluster is not ok after {seconds}s")
                    time.sleep(0.02)

    def flush(self) -> None:
        import redis

        for node in self.nodes:
            with redis.Redis(port=node.port, socket_timeout=5) as client:
                client.flushall()

    def node_for(self, key: str) -> RedisServer:
        """The master that holds ``key`` (each node's ``myself`` line lists its slot ranges)."""
        import redis

        for node in self.nodes:
            with redis.Redis(port=node.port, socket_timeout=5, decode_responses=True) as client:
                slot = client.execute_command("CLUSTER", "KEYSLOT", key)
                mine = next(
                    line
                    for line in client.execute_command("CLUSTER", "NODES").splitlines()
                    if "myself" in line
                )
                for span in mine.split()[8:]:
                    low, _, high = span.partition("-")
                    if int(low) <= slot <= int(high or low):
                        return node
        raise AssertionError(f"no node serves {key!r}")

    def start(self, *, persist: bool = False) -> None:
        self.persist = persist
        for node in self.nodes:
            node.start(persist=persist)
        self.wait_ok()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture(scope="session")
def _redis_cluster(tmp_path_factory):
    """One cluster for the session (it takes a second to make); each test gets it flushed."""
    require(REDIS_SERVER, REDIS_CLI, what="redis-server or redis-cli")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.kill()


@pytest.fixture
def redis_server(request, tmp_path):
    """A Redis for one test: one server (the default), or with ``indirect`` parameter
    ``"cluster"`` the session's three-master cluster, emptied."""
    if getattr(request, "param", "single") == "cluster":
        cluster = request.getfixturevalue("_redis_cluster")
        if (
            any(node.proc is None or node.proc.poll() is not None for node in cluster.nodes)
            or cluster.persist
        ):
            cluster.kill()  # a test left it stopped or persisting: back to the usual state
            cluster.start()
        cluster.flush()
        try:
            yield cluster
        finally:
            gc.collect()
        return
    require(REDIS_SERVER)
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        # Collect coredis's unclosed streams (see pytestmark) here, where the filter applies,
        # rather than at the end of the session.
        gc.collect()


#: Runs a test against one Redis server and against a three-master Redis Cluster.
both_modes = pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)


# -- helpers ---------------------------------------------------------------------------------------


@asynccontextmanager
async def redis_hub(url: str) -> AsyncIterator[int]:
    """A ``tests/redis_hub.py`` process; yields its port."""
    async with hub_process("tests.redis_hub", url) as hub:
        yield hub.port


async def publish_from_worker(url: str, topic: str, count: int) -> int:
    """Run ``tests/redis_publish.py`` (SyncPublisher, no trio) and return the last offset."""
    done = await trio.run_process(
        [sys.executable, "-m", "tests.redis_publish", url, topic, str(count)],
        cwd=ROOT,
        capture_stdout=True,
    )
    return int(done.stdout)


@asynccontextmanager
async def ws_client(port: int) -> AsyncIterator[RawClient]:
    async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
        client = RawClient(ws)
        assert (await client.recv())["type"] == "welcome"
        yield client


async def subscribe(client: RawClient, topic: str, **extra) -> dict:
    await client.send({"type": "subscribe", "topic": topic, **extra})
    frame = await client.recv()
    assert frame["type"] in ("subscribed", "reset"), frame
    return frame


async def eventually(predicate: Callable[[], bool], seconds: float = 10) -> None:
    """Wait, within a deadline, for a condition only observable by looking (another process)."""
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - state of a real socket/process, not a trio event
            await trio.sleep(0.01)


# -- several processes -------------------------------------------------------------------------------
@both_modes
async def test_two_hub_processes_and_a_worker_every_client_sees_every_event_in_order(redis_server):
    events = 300
    async with AsyncExitStack() as stack:
        ports = [await stack.enter_async_context(redis_hub(redis_server.url)) for _ in range(2)]
        clients = [await stack.enter_async_context(ws_client(port)) for port in ports for _ in range(2)]
        answers = [await subscribe(client, "feed") for client in clients]
        assert len({answer["epoch"] for answer in answers}) == 1  # one epoch, whichever process
        for client in clients:
            await subscribe(client, "feed/state")

        received: list[dict] = [{} for _ in clients]
        streams: list[list] = [[] for _ in clients]
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def one(client, stream, other):
                    while len(stream) < events or "state" not in other:
                        frame = await client.recv()
                        assert frame["type"] == "event", frame
                        if frame["topic"] == "feed":
                            stream.append((frame["offset"], frame["data"]["i"]))
                        else:
                            other["state"] = frame["data"]

                for client, stream, other in zip(clients, streams, received, strict=True):
                    nursery.start_soon(one, client, stream, other)
                assert await publish_from_worker(redis_server.url, "feed", events) == events
    for stream, other in zip(streams, received, strict=True):
        assert stream == [(offset, offset - 1) for offset in range(1, events + 1)]
        assert other["state"] == events


@both_modes
async def test_a_client_moved_to_the_other_process_resumes_without_gap_or_duplicate(redis_server):
    from trioconn.redis import SyncPublisher

    pub = SyncPublisher(redis_server.url)
    publish = trio.to_thread.run_sync
    async with redis_hub(redis_server.url) as port_a, redis_hub(redis_server.url) as port_b:
        async with ws_client(port_a) as client:
            answer = await subscribe(client, "moving")
            for i in range(1, 6):
                await publish(pub.publish, "moving", i)
            with trio.fail_after(10):
                seen = [(await client.recv())["offset"] for _ in range(5)]
            assert seen == [1, 2, 3, 4, 5]
        for i in range(6, 11):  # published while the client is between processes
            await publish(pub.publish, "moving", i)
        async with ws_client(port_b) as client:
            resumed = await subscribe(client, "moving", resume={"epoch": answer["epoch"], "offset": 5})
            assert resumed["type"] == "subscribed" and resumed["replayed"] == 5
            await publish(pub.publish, "moving", 11)
            with trio.fail_after(10):
                frames = [await client.recv() for _ in range(6)]
            assert [(f["offset"], f["data"]) for f in frames] == [(i, i) for i in range(6, 12)]
    pub.close()


@both_modes
async def test_subscribing_while_another_process_writes_joins_history_and_live_without_gap(redis_server):
    """Each client is the first on its topic on hub B, so B loads the topic from Redis while
    hub A keeps writing to it: the answer, the replay and the live events must join exactly."""
    rounds, topics = 100, 10
    async with served_hub(redis_server.url) as (hub_a, _), served_hub(redis_server.url) as (hub_b, port_b):
        started = [trio.Event() for _ in range(topics)]
        results: dict[int, tuple[dict, list]] = {}

        async def writer():
            for r in range(rounds):
                for j in range(topics):
                    await hub_a.publish(f"race/{j}", r)
                if r % (rounds // topics) == 0:
                    started[r * topics // rounds].set()

        async def reader(j):
            await started[j].wait()
            async with ws_client(port_b) as client:
                answer = await subscribe(client, f"race/{j}", last=3)
                frames = []
                while not frames or frames[-1]["offset"] < rounds:
                    frames.append(await client.recv())
                results[j] = answer, frames

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                for j in range(topics):
                    nursery.start_soon(reader, j)
        # Joined exactly: not one write was missed and repaired later (a gap would resync).
        assert hub_b._broker.resyncs == 0
    for answer, frames in results.values():
        first = answer["offset"] - answer["replayed"] + 1
        assert [f["offset"] for f in frames] == list(range(first, rounds + 1))
        assert all(f["data"] == f["offset"] - 1 for f in frames)


@both_modes
async def test_a_write_just_after_the_snapshot_arrives_even_when_redis_confirms_the_subscription_late(
    redis_server, monkeypatch
):
    """The order that makes a join exact: subscribed (confirmed) first, snapshot second. The
    confirmation is made slow and a write is slipped in right after the snapshot was read; with
    the order reversed it would be lost (nothing else is written to repair it)."""
    from trioconn.redis import RedisBroker, SyncPublisher

    subscribe_now, fetch_now = RedisBroker._subscribe, RedisBroker._fetch

    async def slow_subscribe(self, feed, names):
        names = list(names)
        if "late" in names:
            await trio.sleep(0.3)
        await subscribe_now(self, feed, names)

    async def fetch_then_write(self, topic):
        snapshot = await fetch_now(self, topic)
        if topic == "late":
            await trio.to_thread.run_sync(pub.publish, "late", "just after the snapshot")
        return snapshot

    monkeypatch.setattr(RedisBroker, "_subscribe", slow_subscribe)
    monkeypatch.setattr(RedisBroker, "_fetch", fetch_then_write)
    with SyncPublisher(redis_server.url) as pub:
        async with served_hub(redis_server.url) as (_, port), ws_client(port) as client:
            await subscribe(client, "late", last=1)  # replayed, if it made it in before the answer
            with trio.fail_after(5):
                frame = await client.recv()
            assert (frame["offset"], frame["data"]) == (1, "just after the snapshot")


@both_modes
async def test_in_process_threads_client_publish_state_and_end_go_through_redis(redis_server):
    async with (
        served_hub(redis_server.url, authorize=lambda identity, topic, action: True) as (hub, port),
        ws_client(port) as client,
    ):
        await subscribe(client, "job")
        await subscribe(client, "log")
        handle = hub.from_thread()

        def worker():
            assert handle.set_state("job", {"pct": 50}) == 1
            assert handle.publish("log", "x") == 1

        await trio.to_thread.run_sync(worker)
        await client.send({"type": "publish", "topic": "log", "data": "y", "ref": 7})
        with trio.fail_after(5):
            frames = [await client.recv() for _ in range(4)]
        assert await hub.end("job") == 1
        with trio.fail_after(5):
            frames.append(await client.recv())
        assert {"type": "published", "topic": "log", "offset": 2, "ref": 7} in frames
        events = [(f["topic"], f["offset"], f["data"]) for f in frames if f["type"] == "event"]
        assert events == [("job", 1, {"pct": 50}), ("log", 1, "x"), ("log", 2, "y")]
        assert frames[-1] == {"type": "end", "topic": "job", "offset": 1}
        with pytest.raises(TopicEnded):
            await hub.set_state("job", 1)
        with pytest.raises(ValueError, match="stream topic"):
            await hub.set_state("log", 1)


def subscribers_of(redis_server, topic: str) -> int:
    """How many connections Redis delivers ``topic``'s writes to (its channel's subscribers)."""
    import redis

    from trioconn.redis._scripts import Keys

    channel = Keys("trioconn").channel(topic)
    if isinstance(redis_server, RedisCluster):
        node, command = redis_server.node_for(channel), ("PUBSUB", "SHARDNUMSUB", channel)
    else:
        node, command = redis_server, ("PUBSUB", "NUMSUB", channel)
    with redis.Redis(port=node.port, socket_timeout=5) as client:
        return int(client.execute_command(*command)[1])


@both_modes
async def test_a_hub_receives_the_writes_of_the_topics_its_subscribers_follow_and_no_others(redis_server):
    from trioconn.redis import SyncPublisher

    publish = trio.to_thread.run_sync
    with SyncPublisher(redis_server.url) as pub:
        async with served_hub(redis_server.url) as (hub, port), ws_client(port) as client:
            broker = hub._broker
            await subscribe(client, "mine")
            async with hub.subscribe("in-process") as follower:
                await follower.ready()
                assert broker.following == {"mine", "in-process"}
                assert subscribers_of(redis_server, "mine") == subscribers_of(redis_server, "in-process") == 1
            for i in range(50):
                await publish(pub.publish, "theirs", i)  # nobody here follows it
            assert subscribers_of(redis_server, "theirs") == 0
            await publish(pub.publish, "mine", "x")
            with trio.fail_after(5):
                assert (await client.recv())["data"] == "x"
            # The last subscriber gone, Redis stops sending the topic here.
            await client.send({"type": "unsubscribe", "topic": "mine", "ref": 1})
            assert (await client.recv())["type"] == "unsubscribed"
            await eventually(lambda: subscribers_of(redis_server, "mine") == 0)
            assert subscribers_of(redis_server, "in-process") == 0 and not broker.following
            await publish(pub.publish, "mine", "y")
            await subscribe(client, "last")
            await publish(pub.publish, "last", "z")
            with trio.fail_after(5):
                assert (await client.recv())["data"] == "z"
            assert broker.received == 2  # "x" and "z": of 53 writes, the two this hub needed


@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
@pytest.mark.parametrize("persist", [False, True], ids=["data-lost", "data-kept"])
async def test_a_cluster_master_restarted_clients_keep_every_event_or_get_reset(redis_server, persist):
    """One master of three is killed and started again (same port, config and directory).
    Writes to the other masters go on meanwhile and reach the hub when it has reconnected;
    the restarted master's topic continues (data kept) or is reset (data lost)."""
    from trioconn.redis import SyncPublisher
    from trioconn.redis._scripts import Keys

    cluster = redis_server
    if persist:
        cluster.kill()
        cluster.start(persist=True)
    keys = Keys("trioconn")
    by_master: dict[int, str] = {}
    for name in (f"t/{i}" for i in range(50)):
        by_master.setdefault(cluster.node_for(keys.topic(name)).port, name)
    (hit_port, hit), (_, safe) = list(by_master.items())[:2]
    master = next(node for node in cluster.nodes if node.port == hit_port)
    publish = trio.to_thread.run_sync
    with SyncPublisher(cluster.url) as pub:
        async with served_hub(cluster.url) as (hub, port), ws_client(port) as client:
            answers = {name: await subscribe(client, name) for name in (hit, safe)}
            for i in range(1, 4):
                for name in (hit, safe):
                    await publish(pub.publish, name, i)
            with trio.fail_after(5):
                frames = [await client.recv() for _ in range(6)]
            assert sorted((f["topic"], f["offset"]) for f in frames) == sorted(
                (name, i) for name in (hit, safe) for i in range(1, 4)
            )
            master.kill()
            await publish(pub.publish, safe, 4)  # the other masters still take writes
            with pytest.raises(BrokerUnavailable):
                await publish(pub.publish, hit, "lost")
            await eventually(lambda: not hub._broker.connected)
            master.start(persist=persist)
            await trio.to_thread.run_sync(cluster.wait_ok)
            # connected again means resynchronised: a lost topic has had its reset by now
            await eventually(lambda: hub._broker.connected, seconds=15)
            await publish(pub.publish, safe, 5)
            expected_hit = await publish(pub.publish, hit, "after")
            seen: dict[str, list[tuple[str, int]]] = {hit: [], safe: []}
            with trio.fail_after(15):
                while (safe, 5) not in [(safe, o) for _, o in seen[safe]] or (
                    "event",
                    expected_hit,
                ) not in seen[hit]:
                    frame = await client.recv()
                    seen[frame["topic"]].append((frame["type"], frame["offset"]))
            assert seen[safe] == [("event", 4), ("event", 5)]  # the write made meanwhile, then live
            if persist:
                assert (expected_hit, seen[hit]) == (4, [("event", 4)])
            else:
                assert (expected_hit, seen[hit]) == (1, [("reset", 0), ("event", 1)])
            assert hub._broker.reconnects >= 1
            assert hub.statistics().topics[safe].epoch == answers[safe]["epoch"]


# -- faults ----------------------------------------------------------------------------------------


@both_modes
@pytest.mark.parametrize("persist", [False, True], ids=["data-lost", "data-kept"])
async def test_redis_killed_and_restarted_under_two_hub_processes(redis_server, persist):
    """Clients stay connected; with the data kept they continue without gap, else get ``reset``."""
    if persist:
        redis_server.kill()
        redis_server.start(persist=True)
    async with AsyncExitStack() as stack:
        ports = [await stack.enter_async_context(redis_hub(redis_server.url)) for _ in range(2)]
        clients = [await stack.enter_async_context(ws_client(port)) for port in ports]
        answers = [await subscribe(client, "feed") for client in clients]
        assert await publish_from_worker(redis_server.url, "feed", 3) == 3
        with trio.fail_after(10):
            for client in clients:
                assert [(await client.recv())["offset"] for _ in range(3)] == [1, 2, 3]
        redis_server.kill()
        redis_server.start(persist=persist)
        if not persist:  # every topic is gone: each subscriber is told, on its open connection
            with trio.fail_after(10):
                resets = [await client.recv() for client in clients]
            for reset, answer in zip(resets, answers, strict=True):
                assert reset["type"] == "reset" and reset["topic"] == "feed"
                assert reset["offset"] == 0 and reset["epoch"] != answer["epoch"]
        first = 1 if not persist else 4
        # the worker may run before or after the hubs noticed; either way nothing is lost
        with trio.fail_after(15):
            assert await publish_from_worker(redis_server.url, "feed", 3) == first + 2
            for client in clients:
                frames = [await client.recv() for _ in range(3)]
                assert [(f["type"], f["offset"]) for f in frames] == [("event", first + i) for i in range(3)]


@asynccontextmanager
async def served_hub(url: str, **hub_options) -> AsyncIterator[tuple[Hub, int]]:
    from trioconn.redis import RedisBroker

    broker = RedisBroker(url, timeout=1, backoff=Backoff(base=0.05, cap=0.2), block=0.5)
    hub = Hub(broker=broker, **hub_options)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        try:
            yield hub, port
        finally:  # a failing test fails, rather than waiting for the hub forever
            nursery.cancel_scope.cancel()


async def test_cancelling_one_of_two_serve_calls_leaves_the_broker_running_for_the_other(redis_server):
    from trioconn.redis import RedisBroker

    hub = Hub(broker=RedisBroker(redis_server.url, timeout=1, backoff=Backoff(base=0.05, cap=0.2), block=0.5))
    first, first_done = trio.CancelScope(), trio.Event()

    async def serve_first(*, task_status=trio.TASK_STATUS_IGNORED):
        with first:
            await hub.serve("127.0.0.1", 0, task_status=task_status)
        first_done.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_first)
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        async with ws_client(port) as client:
            await subscribe(client, "t")
            assert await hub.publish("t", 1) == 1
            first.cancel()
            with trio.fail_after(5):
                await first_done.wait()
            assert await hub.publish("t", 2) == 2  # the second serve still holds the broker
            assert await publish_from_worker(redis_server.url, "t", 3) == 5  # and its follower runs
            with trio.fail_after(5):
                assert [(await client.recv())["offset"] for _ in range(5)] == [1, 2, 3, 4, 5]
        nursery.cancel_scope.cancel()


async def test_a_running_block_keeps_the_broker_after_a_serve_inside_it_ends(redis_server):
    from trioconn.redis import RedisBroker

    hub = Hub(broker=RedisBroker(redis_server.url, timeout=1, backoff=Backoff(base=0.05, cap=0.2), block=0.5))
    async with hub.running():
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.serve, "127.0.0.1", 0)
            nursery.cancel_scope.cancel()
        assert await hub.publish("t", "still running") == 1


async def test_the_broker_stopped_and_started_again_delivers_what_was_written_in_between(redis_server):
    from trioconn.redis import RedisBroker

    hub = Hub(broker=RedisBroker(redis_server.url, timeout=1, backoff=Backoff(base=0.05, cap=0.2), block=0.5))
    async with memory_client(hub) as client:
        await client.recv_type("welcome")
        async with hub.running():
            await subscribe(client, "t")
        # No serve, no running(): nothing follows the firehose while another process writes.
        assert await publish_from_worker(redis_server.url, "t", 3) == 3
        async with hub.running():
            with trio.fail_after(5):
                assert [(await client.recv())["offset"] for _ in range(3)] == [1, 2, 3]


@both_modes
async def test_redis_restart_without_persistence_keeps_clients_and_sends_reset(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="trioconn")
    async with served_hub(redis_server.url) as (hub, port), ws_client(port) as client:
        broker = hub._broker
        log = await subscribe(client, "log")
        await subscribe(client, "job")
        assert await hub.publish("log", "before") == 1
        assert await hub.set_state("job", {"pct": 10}) == 1
        with trio.fail_after(5):
            assert {(await client.recv())["topic"] for _ in range(2)} == {"log", "job"}

        redis_server.kill()
        with pytest.raises(BrokerUnavailable, match="unreachable"):
            await hub.publish("log", "lost")  # the publisher is told; nothing is claimed as sent
        await eventually(lambda: not broker._connected)
        # The WebSocket client is still served: a request gets its answer.
        await client.send({"type": "unsubscribe", "topic": "nope", "ref": 1})
        assert (await client.recv())["code"] == "not-subscribed"
        # A topic this hub does not mirror cannot be loaded meanwhile: a clear error, not silence.
        await client.send({"type": "subscribe", "topic": "new", "ref": 2})
        error = await client.recv()
        assert error["type"] == "error" and error["ref"] == 2 and "unreachable" in error["message"]

        redis_server.start()  # empty: Redis lost every topic
        with trio.fail_after(10):
            resets = {(frame := await client.recv_type("reset"))["topic"]: frame for _ in range(2)}
        assert resets["log"]["epoch"] != log["epoch"] and resets["log"]["offset"] == 0
        assert resets["job"]["offset"] == 0 and "snapshot" not in resets["job"]
        assert await hub.publish("log", "after") == 1
        with trio.fail_after(5):
            assert await client.recv() == {"type": "event", "topic": "log", "offset": 1, "data": "after"}
        assert broker.reconnects == 1
    text = caplog.text
    assert "lost the redis link" in text and "reconnected to redis" in text


@both_modes
async def test_a_hub_cut_off_from_redis_delivers_what_it_missed_when_back(redis_server, caplog):
    """The link of one hub drops while Redis and other publishers go on: no reset, no gap."""
    from trioconn.redis import SyncPublisher

    caplog.set_level(logging.WARNING, logger="trioconn")
    async with trio.open_nursery() as nursery:
        link = await open_cuttable_link(redis_server, nursery)
        pub = SyncPublisher(redis_server.url)
        publish = trio.to_thread.run_sync
        async with served_hub(link.url) as (hub, port), ws_client(port) as client:
            answer = await subscribe(client, "log")
            for i in range(1, 4):
                await publish(pub.publish, "log", i)
            with trio.fail_after(5):
                assert [(await client.recv())["offset"] for _ in range(3)] == [1, 2, 3]
            link.cut()
            await eventually(lambda: not hub._broker._connected)
            for i in range(4, 7):  # Redis is fine; only this hub cannot see it
                await publish(pub.publish, "log", i)
            link.restore()
            await publish(pub.publish, "log", 7)
            with trio.fail_after(10):
                frames = [await client.recv() for _ in range(4)]
            assert [(f["type"], f["offset"], f["data"]) for f in frames] == [
                ("event", i, i) for i in range(4, 8)
            ]
            assert hub.statistics().topics["log"].epoch == answer["epoch"]
        pub.close()
        nursery.cancel_scope.cancel()
    assert "lost the redis link" in caplog.text


async def test_a_link_gone_silent_is_noticed_by_a_ping_and_the_hub_catches_up(redis_server):
    """No close, no error: Redis stops answering. The broker pings after ``block`` quiet
    seconds, gives the ping ``timeout``, reconnects once the link carries bytes again, and
    delivers what was written meanwhile."""
    from trioconn.redis import SyncPublisher

    async with trio.open_nursery() as nursery:
        proxy = Proxy(redis_server.port)
        await nursery.start(proxy.serve)
        with SyncPublisher(redis_server.url) as pub:
            async with served_hub(proxy.url) as (hub, port), ws_client(port) as client:
                await subscribe(client, "log")
                await trio.to_thread.run_sync(pub.publish, "log", 1)
                with trio.fail_after(5):
                    assert (await client.recv())["offset"] == 1
                proxy.freeze()
                await eventually(lambda: not hub._broker.connected)  # block 0.5 s + timeout 1 s
                for i in (2, 3):
                    await trio.to_thread.run_sync(pub.publish, "log", i)
                proxy.thaw()
                with trio.fail_after(10):
                    assert [(await client.recv())["offset"] for _ in range(2)] == [2, 3]
        nursery.cancel_scope.cancel()


async def test_the_trioconn_client_sees_a_reset_on_its_live_subscription(redis_server):
    from trioconn import EventItem, ResetItem, connect

    # last=5: the event is replayed if it is published before the subscribe is answered
    async with (
        served_hub(redis_server.url) as (hub, port),
        connect(f"ws://127.0.0.1:{port}/") as client,
        client.subscribe("log", last=5) as sub,
    ):
        await hub.publish("log", 1)
        with trio.fail_after(5):
            first = await sub.__anext__()
        assert isinstance(first, EventItem) and first.offset == 1
        redis_server.kill()
        redis_server.start()
        with trio.fail_after(10):
            reset = await sub.__anext__()
        assert isinstance(reset, ResetItem)
        assert (reset.previous_epoch, reset.previous_offset) == (first.epoch, 1)
        assert reset.epoch != first.epoch and reset.offset == 0
        await hub.publish("log", 2)
        with trio.fail_after(5):
            after = await sub.__anext__()
        assert (after.epoch, after.offset, after.data) == (reset.epoch, 1, 2)


@both_modes
async def test_a_hub_serves_its_clients_while_redis_is_unreachable_from_the_start(redis_server):
    redis_server.kill()
    async with served_hub(redis_server.url) as (hub, port), ws_client(port) as client:
        await client.send({"type": "subscribe", "topic": "t", "ref": 1})
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "internal" and "unreachable" in error["message"]
        with pytest.raises(BrokerUnavailable):
            await hub.publish("t", 1)
        redis_server.start()
        await eventually(lambda: hub._broker._connected)  # the follower found Redis by itself
        answer = await subscribe(client, "t", ref=2)
        assert answer["ref"] == 2
        assert await hub.publish("t", "ok") == 1
        with trio.fail_after(5):
            assert (await client.recv())["data"] == "ok"


@both_modes
def test_sync_publisher_says_clearly_when_redis_is_unreachable(redis_server):
    from trioconn.redis import SyncPublisher

    with (
        SyncPublisher(f"redis://127.0.0.1:{free_port()}/0", timeout=1) as pub,
        pytest.raises(BrokerUnavailable, match="unreachable"),
    ):
        pub.publish("t", 1)
    with SyncPublisher(redis_server.url) as pub:
        assert pub.publish("t", 1) == 1
        assert pub.end("t") == 1
        with pytest.raises(TopicEnded):
            pub.publish("t", 2)
        assert pub.publish("x", 1) == 1
        with pytest.raises(ValueError, match="stream topic"):
            pub.set_state("x", 2)


async def open_cuttable_link(redis_server, nursery: trio.Nursery):
    """A way to Redis for one hub that the test can cut and restore, while others keep theirs.

    One server: a TCP relay. A cluster: the client discovers every node's own address, so a
    relay in front of one node would not cut anything; the hub logs in as its own ACL user
    instead, which the test disables (new connections refused) and whose clients it kills.
    """
    if isinstance(redis_server, RedisCluster):
        return UserLink(redis_server)
    proxy = Proxy(redis_server.port)
    await nursery.start(proxy.serve)
    return proxy


class UserLink:
    """The cut of ``open_cuttable_link`` on a cluster: an ACL user switched off and on."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self.url = f"redis+cluster://hub:secret@127.0.0.1:{cluster.nodes[0].port}"
        self._on_every_node("ACL", "SETUSER", "hub", "on", ">secret", "~*", "&*", "+@all")

    def _on_every_node(self, *command: str) -> None:
        import redis

        for node in self.cluster.nodes:
            with redis.Redis(port=node.port, socket_timeout=5) as client:
                client.execute_command(*command)

    def cut(self) -> None:
        self._on_every_node("ACL", "SETUSER", "hub", "off")
        self._on_every_node("CLIENT", "KILL", "USER", "hub")

    def restore(self) -> None:
        self._on_every_node("ACL", "SETUSER", "hub", "on")


class Proxy:
    """A TCP relay to Redis that the test can cut (every link dropped, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.links: set[trio.CancelScope] = set()
        self.open = True
        self.url = ""
        #: set while bytes flow; cleared by ``freeze`` (links stay open, nothing is forwarded)
        self.flowing = trio.Event()
        self.flowing.set()

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            self.url = f"redis://127.0.0.1:{port}/0"
            task_status.started(port)
            await trio.serve_listeners(self._relay, listeners, handler_nursery=nursery)

    async def _relay(self, stream: trio.SocketStream) -> None:
        if not self.open:
            await stream.aclose()
            return
        with trio.CancelScope() as scope:
            self.links.add(scope)
            async with (
                stream,
                await trio.open_tcp_stream("127.0.0.1", self.target) as upstream,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(self._pump, stream, upstream)
                nursery.start_soon(self._pump, upstream, stream)
        self.links.discard(scope)
        await trio.aclose_forcefully(stream)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            async for data in source:
                await self.flowing.wait()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(sink)

    def cut(self) -> None:
        self.open = False
        for scope in self.links:
            scope.cancel()

    def restore(self) -> None:
        self.open = True

    def freeze(self) -> None:
        """A link that goes silent without closing (a peer or a route gone): bytes are held."""
        self.flowing = trio.Event()

    def thaw(self) -> None:
        self.flowing.set()


# -- asyncio ---------------------------------------------------------------------------------------


@both_modes
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_redis_broker_behind_the_asgi_app_on_both_backends(redis_server, backend):
    """Loading a topic, publishing from a handler and from a thread (which waits for Redis),
    all under the event loop the ASGI server runs."""
    import anyio
    import anyio.to_thread

    from trioconn.asgi import HubApp, lifespan
    from trioconn.redis import RedisBroker

    from .test_asgi import accepted

    async def body() -> None:
        hub = Hub(broker=RedisBroker(redis_server.url))
        app = HubApp(hub)
        async with anyio.create_task_group() as tasks, lifespan(hub):
            assert await hub.publish("log", "before") == 1
            server = await accepted(app, tasks)
            await server.put_frame({"type": "subscribe", "topic": "log", "last": 10, "ref": 1})
            subscribed = await server.next_frame("subscribed")
            assert (subscribed["offset"], subscribed["replayed"]) == (1, 1)
            assert (await server.next_frame("event"))["data"] == "before"
            handle = hub.from_thread()
            assert await anyio.to_thread.run_sync(handle.publish, "log", "from a thread") == 2
            assert await hub.publish("log", "from a handler") == 3
            events = [await server.next_frame("event") for _ in range(2)]
            assert [(e["offset"], e["data"]) for e in events] == [(2, "from a thread"), (3, "from a handler")]
            await server.put({"type": "websocket.disconnect", "code": 1000})
            await server.done.wait()

    anyio.run(body, backend=backend)
