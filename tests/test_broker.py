"""The broker seam without Redis: mirror operations of the registry, and the hub's contract."""

import json
import subprocess
import sys

import pytest
import trio

from trioconn import BrokerUnavailable, Hub, MemoryBroker
from trioconn._core.protocol import encode_event, encode_event_json
from trioconn._server.outbox import Outbox
from trioconn._server.topics import TopicRegistry, TopicSnapshot
from trioconn.redis._scripts import parse_snapshot, write_result

from .test_topics import Sink


class ResetSink(Sink):
    def deliver_reset(self, topic, encoded):
        self.frames.append(encoded)


def mirror(history=5):
    reg = TopicRegistry(history_size=history, ended_retention=60)
    reg.mirror = True
    return reg


def snap(offset, epoch="e1", kind="stream", history=(), **extra):
    return TopicSnapshot("t", epoch, offset, kind, history=tuple(history), **extra)


def events(offsets):
    return [(o, json.dumps(o)) for o in offsets]


def test_event_encoded_around_broker_json_is_the_same_text():
    for data in (1, "x", {"a": [1, None, "é"]}, None):
        assert encode_event_json("t/é", 7, json.dumps(data, separators=(",", ":"))) == encode_event(
            "t/é", 7, data
        )


def test_mirror_applies_writes_in_offset_order_and_flags_gaps_and_new_epochs():
    reg, sub = mirror(), ResetSink()
    reg.sync(snap(2, history=events([1, 2])), now=0)
    reg.subscribe("t", sub, now=0)
    assert reg.apply("t", "e1", 3, "stream", "3")[0] == "applied"
    assert reg.apply("t", "e1", 3, "stream", "3")[0] == "duplicate"
    assert reg.apply("t", "e1", 5, "stream", "5")[0] == "gap"
    assert reg.apply("t", "e2", 4, "stream", "4")[0] == "epoch"
    assert reg.apply("other", "e1", 1, "stream", "1")[0] == "unknown"
    assert [f["offset"] for f in sub.decoded()] == [3]


def test_state_topic_may_jump_ahead_only_its_latest_value_matters():
    reg, sub = mirror(), ResetSink()
    reg.sync(snap(1, kind="state", state_json="1"), now=0)
    reg.subscribe("t", sub, now=0)
    assert reg.apply("t", "e1", 4, "state", '{"pct":40}')[0] == "applied"
    assert sub.decoded()[-1] == {"type": "event", "topic": "t", "offset": 4, "data": {"pct": 40}}
    assert json.loads(reg.get("t").state_json) == {"pct": 40}


def test_sync_delivers_missed_events_when_the_history_reaches_back():
    reg, sub = mirror(), ResetSink()
    reg.sync(snap(2, history=events([1, 2])), now=0)
    reg.subscribe("t", sub, now=0)
    reg.sync(snap(5, history=events([1, 2, 3, 4, 5])), now=0)
    assert [(f["type"], f["offset"]) for f in sub.decoded()] == [("event", 3), ("event", 4), ("event", 5)]


def test_sync_sends_reset_when_the_history_no_longer_reaches_or_the_epoch_changed():
    reg, sub = mirror(history=2), ResetSink()
    reg.sync(snap(1, history=events([1])), now=0)
    reg.subscribe("t", sub, now=0)
    reg.sync(snap(9, history=events([8, 9])), now=0)  # 2..7 are gone
    reset = sub.decoded()[-1]
    assert reset["type"] == "reset" and reset["offset"] == 9 and reset["epoch"] == "e1" and "ref" not in reset
    reg.sync(snap(0, epoch="e2", kind=None), now=0)  # Redis lost the topic
    reset = sub.decoded()[-1]
    assert (reset["type"], reset["epoch"], reset["offset"]) == ("reset", "e2", 0)
    assert reg.apply("t", "e2", 1, "stream", '"new"')[0] == "applied"  # still subscribed
    assert sub.decoded()[-1]["data"] == "new"


def test_sync_of_an_ended_topic_ends_the_subscription_and_the_mirror_forgets_it():
    reg, sub = mirror(), ResetSink()
    reg.sync(snap(1, history=events([1])), now=0)
    reg.subscribe("t", sub, now=0)
    reg.sync(snap(1, history=events([1]), ended=True), now=0)
    assert sub.decoded()[-1] == {"type": "end", "topic": "t", "offset": 1}
    assert reg.get("t") is None


def test_mirror_keeps_only_topics_somebody_here_follows():
    reg, sub = mirror(), ResetSink()
    reg.sync(snap(1, history=events([1])), now=0)
    reg.subscribe("t", sub, now=0)
    reg.unsubscribe("t", sub, now=0)
    assert reg.get("t") is None
    reg.sync(snap(1, history=events([1]), ended=True), now=0)
    frames = [json.loads(f) for f in reg.subscribe("t", sub, now=0)]
    assert [f["type"] for f in frames] == ["subscribed", "end"] and reg.get("t") is None


def test_reset_is_not_overtaken_by_a_state_value_set_after_it():
    box = Outbox(10)
    box.put_state("t", "old")
    box.put_control("t", "reset")
    box.put_state("t", "new")
    assert box.take(10**6) == ["old", "reset", "new"]


def test_redis_replies_become_snapshots_and_errors_like_the_memory_hub():
    reply = [
        ["epoch", "ab", "offset", "3", "kind", "stream"],
        [["0-3", ["d", "3"]], ["0-2", ["d", "2"]]],
    ]
    assert parse_snapshot("t", reply) == TopicSnapshot("t", "ab", 3, "stream", history=((2, "2"), (3, "3")))
    assert write_result("t", "stream", ["ok", "ab", 4]) == 4
    with pytest.raises(ValueError, match="is a state topic: use set_state"):
        write_result("t", "stream", ["kind", "state"])


def test_a_broker_serves_one_hub():
    broker = MemoryBroker()
    Hub(broker=broker)
    with pytest.raises(RuntimeError, match="one hub"):
        Hub(broker=broker)
    with pytest.raises(TypeError, match="Broker"):
        Hub(broker="redis://localhost")


async def test_redis_hub_refuses_nowait_writes_and_publishing_before_it_runs():
    from trioconn.redis import RedisBroker

    hub = Hub(broker=RedisBroker("redis://127.0.0.1:1/0"))
    with pytest.raises(RuntimeError, match=r"await hub\.publish"):
        hub.publish_nowait("t", 1)
    with pytest.raises(RuntimeError, match=r"await hub\.publish"):
        hub.end_nowait("t")
    with pytest.raises(BrokerUnavailable, match="not running"):
        await hub.publish("t", 1)
    with pytest.raises(TypeError, match="JSON"):
        await hub.publish("t", object())


def test_redis_urls_name_one_server_or_a_cluster_and_anything_else_is_refused_clearly():
    from trioconn.redis import RedisBroker, SyncPublisher
    from trioconn.redis._scripts import Target, parse_url

    assert parse_url("redis://h:1/2") == Target("redis://h:1/2", cluster=False)
    assert parse_url("unix:///run/redis.sock") == Target("unix:///run/redis.sock", cluster=False)
    node = parse_url("redis+cluster://us%40er:pa%3Ass@h:7000")
    assert node == Target("redis://us%40er:pa%3Ass@h:7000", cluster=True)
    assert node.cluster_node() == ("h", 7000, "us@er", "pa:ss", False)
    assert parse_url("rediss+cluster://h:7000/0").cluster_node() == ("h", 7000, None, None, True)
    assert (parse_url("redis://h").publish, node.publish) == ("PUBLISH", "SPUBLISH")
    refused = [
        ("http://h:1", "url must start with one of redis://"),
        ("h:6379", "url must start with"),
        ("redis+cluster://h:7000/2", "only database 0"),
        ("redis+cluster://:7000", "names no host"),
        ("redis+cluster://h:7000?ssl_cert_reqs=none", "no options"),
        ("redis+cluster://h:port", "invalid port"),
        (6379, "url must be a str"),
    ]
    for url, why in refused:
        with pytest.raises(ValueError, match=why):
            RedisBroker(url)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=why):
            SyncPublisher(url)  # type: ignore[arg-type]


def test_every_key_and_the_channel_of_a_topic_hash_to_one_cluster_slot():
    from redis.crc import key_slot

    from trioconn.redis._scripts import Keys

    keys = Keys("app")
    for name in ["jobs/42", "a}b", "{x}", "}{", "x{y}z", "é/ü", "{"]:
        assert len({key_slot(key.encode()) for key in keys.write_keys(name)}) == 1, name
        assert keys.name_of(keys.channel(name)) == name
    # and the topics themselves spread over the cluster
    assert len({key_slot(keys.topic(f"t/{i}").encode()) for i in range(100)}) > 90


def test_a_mirror_says_which_topics_it_forgot_and_only_those():
    reg, forgotten = mirror(), []
    reg.on_forget = forgotten.append
    a, b = ResetSink(), ResetSink()
    reg.sync(snap(1, history=events([1])), now=0)
    reg.subscribe("t", a, now=0)
    reg.subscribe("t", b, now=0)
    reg.unsubscribe("t", a, now=0)
    assert forgotten == []  # b still follows it
    reg.sync(snap(5, epoch="e2"), now=0)  # replaced by a new epoch: still followed by b
    assert forgotten == []
    reg.unsubscribe("t", b, now=0)
    assert forgotten == ["t"] and reg.get("t") is None
    reg.sync(snap(1, history=events([1])), now=0)  # loaded, then nobody subscribed after all
    reg.drop("t")
    assert forgotten == ["t", "t"]


async def test_a_subscription_redis_ends_by_itself_counts_as_a_lost_link():
    """On a cluster, Redis unsubscribes a hub from a channel whose slot moved to another node:
    the hub must notice (and reconnect), not wait forever for writes that go elsewhere."""
    from trioconn.redis import RedisBroker
    from trioconn.redis._broker import _Lost

    broker = RedisBroker("redis+cluster://127.0.0.1:7000")
    Hub(broker=broker)
    channel = broker._keys.channel("t")

    class Feed:
        def __init__(self, messages):
            self.messages = list(messages)

        async def get_message(self):
            await trio.lowlevel.checkpoint()
            return self.messages.pop(0)

    ended = {"type": "sunsubscribe", "channel": channel, "data": 0, "pattern": None}
    broker._unsubscribing[channel] = 1  # one unsubscription of ours is on its way...
    broker._following = {"t"}  # ...and the topic was followed again meanwhile
    with pytest.raises(_Lost, match="dropped the subscription"):
        await broker._read(Feed([ended, ended]))  # ours is expected; the second is Redis's own
    assert broker._unsubscribing[channel] == 0


def test_importing_trioconn_needs_neither_coredis_nor_redis():
    code = "import sys, trioconn; print(sorted({'coredis', 'redis'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class CountingBroker(MemoryBroker):
    """Records every run of its task: which holder's nursery it ran in, and whether it is running."""

    def __init__(self):
        super().__init__()
        self.runs = 0
        self.running = False

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        self.runs += 1
        self.running = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.running = False


async def test_the_broker_runs_while_any_holder_is_left_and_moves_when_its_host_ends(autojump_clock):
    broker = CountingBroker()
    hub = Hub(broker=broker)
    first, second = trio.CancelScope(), trio.CancelScope()
    ended = {"first": trio.Event(), "second": trio.Event()}

    async def hold(scope, name, *, task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            async with hub.running():
                task_status.started()
                await trio.sleep_forever()
        ended[name].set()

    async with trio.open_nursery() as nursery:
        await nursery.start(hold, first, "first")
        await nursery.start(hold, second, "second")
        assert broker.runs == 1 and broker.running  # one task for both holders
        first.cancel()
        await ended["first"].wait()
        assert broker.runs == 2 and broker.running  # moved into the second holder's nursery
        second.cancel()
        await ended["second"].wait()
        assert not broker.running


async def test_a_failing_broker_task_comes_out_of_running_as_its_own_exception(autojump_clock):
    # The broker runs next to the heartbeat clock in a task group of the hub's: no group of it
    # may reach the user.
    class Failing(MemoryBroker):
        async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            await trio.sleep(1)
            raise RuntimeError("boom")

    hub = Hub(broker=Failing())
    with pytest.raises(RuntimeError, match="boom"):
        async with hub.running():
            await trio.sleep_forever()
