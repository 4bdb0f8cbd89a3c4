"""Topic registry and outbox: offsets, history, resume, state, end, batching. No sockets."""

import json

import pytest

from trioconn import TooManyTopics, TopicEnded
from trioconn._server.outbox import Outbox
from trioconn._server.topics import TopicRegistry


class Sink:
    def __init__(self, room: int = 10**9) -> None:
        self.frames: list[str] = []
        self.room = room

    def deliver(self, topic, encoded, *, state):
        if len(self.frames) >= self.room:
            return False
        self.frames.append(encoded)
        return True

    def deliver_end(self, topic, encoded):
        self.frames.append(encoded)

    def decoded(self):
        return [json.loads(f) for f in self.frames]


def registry(history=5):
    epochs = iter(f"e{i}" for i in range(100))
    return TopicRegistry(history_size=history, ended_retention=60, epoch_factory=lambda: next(epochs))


def frames(texts):
    return [json.loads(t) for t in texts]


def test_offsets_increase_by_one_per_write_and_events_are_encoded_once():
    reg = registry()
    a, b = Sink(), Sink()
    reg.subscribe("t", a, now=0)
    reg.subscribe("t", b, now=0)
    assert [reg.write("t", "stream", i, 0)[0] for i in range(3)] == [1, 2, 3]
    assert [e["offset"] for e in a.decoded()] == [1, 2, 3]
    assert all(x is y for x, y in zip(a.frames, b.frames, strict=True))  # one encoding, shared


def test_fresh_subscribe_answers_subscribed_with_position():
    reg = registry()
    reg.write("t", "stream", "x", 0)
    (answer,) = frames(reg.subscribe("t", Sink(), now=0, ref=3))
    assert answer == {
        "type": "subscribed",
        "topic": "t",
        "epoch": "e0",
        "offset": 1,
        "kind": "stream",
        "replayed": 0,
        "ended": False,
        "ref": 3,
    }


def test_resume_replays_exactly_what_was_missed():
    reg = registry(history=5)
    for i in range(1, 5):
        reg.write("t", "stream", i, 0)
    answer, *replay = frames(reg.subscribe("t", Sink(), now=0, epoch="e0", offset=2))
    assert answer["type"] == "subscribed" and answer["replayed"] == 2
    assert [e["data"] for e in replay] == [3, 4]


def test_resume_at_the_head_replays_nothing():
    reg = registry()
    reg.write("t", "stream", 1, 0)
    answer, *replay = frames(reg.subscribe("t", Sink(), now=0, epoch="e0", offset=1))
    assert answer["type"] == "subscribed" and replay == []


def test_resume_older_than_history_gets_reset():
    reg = registry(history=3)
    for i in range(1, 7):
        reg.write("t", "stream", i, 0)
    # history holds 4..6: offset 3 is still contiguous, offset 2 is not
    assert frames(reg.subscribe("t", Sink(), now=0, epoch="e0", offset=3))[0]["type"] == "subscribed"
    answer, *replay = frames(reg.subscribe("t", Sink(), now=0, epoch="e0", offset=2))
    assert answer["type"] == "reset" and answer["offset"] == 6 and replay == []


def test_resume_from_another_epoch_or_the_future_gets_reset():
    reg = registry()
    reg.write("t", "stream", 1, 0)
    assert frames(reg.subscribe("t", Sink(), now=0, epoch="old", offset=1))[0]["type"] == "reset"
    assert frames(reg.subscribe("t", Sink(), now=0, epoch="e0", offset=9))[0]["type"] == "reset"


def test_last_n_replays_recent_history_for_new_subscribers():
    reg = registry(history=5)
    for i in range(1, 8):
        reg.write("t", "stream", i, 0)
    answer, *replay = frames(reg.subscribe("t", Sink(), now=0, last=3))
    assert answer["replayed"] == 3 and [e["data"] for e in replay] == [5, 6, 7]
    assert len(frames(reg.subscribe("t", Sink(), now=0, last=50))) == 1 + 5


def test_state_topic_gives_its_value_as_snapshot():
    reg = registry()
    reg.write("job", "state", {"p": 10}, 0)
    reg.write("job", "state", {"p": 20}, 0)
    (answer,) = frames(reg.subscribe("job", Sink(), now=0))
    assert answer["kind"] == "state" and answer["snapshot"] == {"p": 20} and answer["offset"] == 2
    (answer,) = frames(reg.subscribe("job", Sink(), now=0, epoch="e0", offset=1))
    assert answer["type"] == "subscribed" and answer["snapshot"] == {"p": 20}
    (answer,) = frames(reg.subscribe("job", Sink(), now=0, epoch="zz", offset=1))
    assert answer["type"] == "reset" and answer["snapshot"] == {"p": 20}


def test_topic_kind_is_fixed_by_the_first_write():
    reg = registry()
    reg.write("t", "stream", 1, 0)
    with pytest.raises(ValueError, match="stream topic: use publish"):
        reg.write("t", "state", 1, 0)
    reg.write("s", "state", 1, 0)
    with pytest.raises(ValueError, match="state topic: use set_state"):
        reg.write("s", "stream", 1, 0)


def test_unserializable_data_leaves_no_trace():
    reg = registry()
    with pytest.raises(TypeError):
        reg.write("t", "stream", {1, 2}, 0)
    assert reg.get("t") is None


def test_end_releases_subscribers_and_late_subscribers_see_it_at_once():
    reg = registry()
    sub = Sink()
    reg.subscribe("job", sub, now=0)
    reg.write("job", "state", "done", 0)
    assert reg.end("job", 1) == 1
    assert reg.end("job", 2) == 1  # idempotent
    assert [f["type"] for f in sub.decoded()] == ["event", "end"]
    assert not reg.get("job").subscribers
    late = Sink()
    answer, end = frames(reg.subscribe("job", late, now=3))
    assert (
        answer["ended"] is True
        and answer["snapshot"] == "done"
        and end == {"type": "end", "topic": "job", "offset": 1}
    )
    assert late not in reg.get("job").subscribers
    with pytest.raises(TopicEnded):
        reg.write("job", "state", "again", 4)


def test_ended_topics_expire_after_retention():
    reg = registry()
    reg.write("old", "stream", 1, 0)
    reg.end("old", 0)
    reg.write("new", "stream", 1, 59)
    assert reg.get("old") is not None
    reg.write("newer", "stream", 1, 60)
    assert reg.get("old") is None


def test_subscribing_to_unwritten_topics_leaves_nothing_behind():
    reg = registry()
    sub = Sink()
    reg.subscribe("ghost", sub, now=0)
    assert reg.unsubscribe("ghost", sub, now=0)
    assert reg.get("ghost") is None
    assert not reg.unsubscribe("ghost", sub, now=0)


def test_slow_subscribers_are_reported_and_others_still_served():
    reg = registry()
    slow, fast = Sink(room=1), Sink()
    reg.subscribe("t", slow, now=0)
    reg.subscribe("t", fast, now=0)
    assert reg.write("t", "stream", 1, 0)[1] == []
    assert reg.write("t", "stream", 2, 0)[1] == [slow]
    assert len(fast.frames) == 2


def test_outbox_is_bounded_for_events():
    box = Outbox(2)
    assert box.put("a") and box.put("b")
    assert not box.put("c")
    assert box.take(10**6) == ["a", "b"]


def test_outbox_keeps_only_the_latest_state_value_in_place():
    box = Outbox(10)
    box.put("e1")
    box.put_state("job", "p10")
    box.put("e2")
    box.put_state("job", "p20")
    box.put_state("other", "o1")
    assert box.take(10**6) == ["e1", "p20", "e2", "o1"]
    assert box.superseded == 1
    box.put_state("job", "p30")  # a new slot once the old one was sent
    assert box.take(10**6) == ["p30"]


def test_outbox_take_respects_the_byte_budget_but_always_returns_one():
    box = Outbox(10)
    for text in ("x" * 40, "y" * 40, "z" * 40):
        box.put(text)
    assert len(box.take(50)) == 2
    assert len(box.take(1)) == 1
    assert box.take(1) == []


def test_outbox_replay_is_not_bounded():
    box = Outbox(1)
    box.put_unbounded(["a", "b", "c"])  # an answer is one entry, however many frames
    assert len(box) == 1 and not box.put("d")
    assert box.clear() == 3 and len(box) == 0


# -- memory bounds ---------------------------------------------------------------------------------


def test_history_is_bounded_by_bytes_as_well_as_by_count():
    reg = TopicRegistry(history_size=100, ended_retention=60, history_bytes=1000)
    for _ in range(50):
        reg.write("t", "stream", "x" * 100, 0)  # ~150 B encoded each
    topic = reg.get("t")
    assert topic.statistics().history_bytes == sum(len(e) for _, e in topic.history) <= 1000
    assert len(topic.history) == 1000 // len(topic.history[0][1])
    assert topic.history[-1][0] == 50  # the newest are kept
    # a resume from before what is kept gets an explicit reset, not a silent gap
    (answer,) = frames(reg.subscribe("t", Sink(), now=0, epoch=topic.epoch, offset=10))
    assert answer["type"] == "reset"


def test_stream_topics_nobody_follows_or_writes_are_dropped_after_idle_retention():
    epochs = iter(f"e{i}" for i in range(100_000))
    reg = TopicRegistry(
        history_size=10, ended_retention=60, idle_retention=100, epoch_factory=lambda: next(epochs)
    )
    for i in range(20_000):
        reg.write(f"job/{i}", "stream", i, now=0)
    reg.write("progress", "state", {"pct": 5}, now=0)
    sub = Sink()
    reg.subscribe("job/0", sub, now=50)  # followed: kept however long
    reg.write("job/1", "stream", "again", now=99)  # written: its retention starts again
    reg.write("other", "stream", 1, now=100)  # any write or subscribe expires what is due
    assert {t.name for t in reg} == {"job/0", "job/1", "progress", "other"}
    assert len(reg) == 4 and reg.expired == 19_998
    reg.unsubscribe("job/0", sub, now=150)  # the last subscriber left: retention from now
    reg.write("other", "stream", 2, now=249)
    assert reg.get("job/0") is not None
    reg.write("other", "stream", 3, now=250)
    assert reg.get("job/0") is None and reg.get("progress") is not None  # state values stay
    # a client coming back to the dropped topic gets reset: its epoch is gone
    (answer,) = frames(reg.subscribe("job/0", Sink(), now=260, epoch="e0", offset=1))
    assert answer["type"] == "reset" and answer["epoch"] != "e0"


def test_max_topics_evicts_the_longest_idle_stream_for_a_write_and_never_for_a_subscribe():
    reg = TopicRegistry(history_size=10, ended_retention=60, max_topics=3)
    reg.write("a", "stream", 1, now=0)
    reg.write("b", "stream", 1, now=1)
    reg.write("c", "state", 1, now=2)
    with pytest.raises(TooManyTopics, match="maximum of 3 topics"):
        reg.subscribe("new", Sink(), now=3)  # a client cannot push the application's data out
    reg.write("d", "stream", 1, now=4)  # the application can: "a" was idle the longest
    assert {t.name for t in reg} == {"b", "c", "d"} and reg.expired == 1
    reg.subscribe("b", Sink(), now=5)
    reg.subscribe("d", Sink(), now=5)
    with pytest.raises(TooManyTopics):  # followed topics and state values are never evicted
        reg.write("e", "stream", 1, now=6)
    assert {t.name for t in reg} == {"b", "c", "d"}


def test_a_refused_write_leaves_no_topic_behind():
    reg = registry()
    with pytest.raises(TypeError):
        reg.write("t", "stream", object(), 0)
    with pytest.raises(TypeError, match="nested"):
        reg.write("t", "state", [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], 0)
    assert len(reg) == 0


def test_a_state_value_is_encoded_once_however_many_subscribe(monkeypatch):
    import trioconn._core.protocol as protocol

    reg = registry()
    value = {"blob": "v" * 60_000}
    reg.write("s", "state", value, 0)
    encoded: list[int] = []
    real = protocol._dumps
    monkeypatch.setattr(protocol, "_dumps", lambda obj: encoded.append(len(text := real(obj))) or text)
    answers = [reg.subscribe("s", Sink(), now=0, ref=i)[0] for i in range(100)]
    assert all(json.loads(a)["snapshot"] == value for a in answers)
    assert max(encoded) < 1000  # only the small frame around it was encoded, 100 times
