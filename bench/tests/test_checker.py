"""The load generator's correctness check must catch loss, duplication and reordering.

Without these tests a checker that silently accepted everything would make every benchmark
look correct. They feed hand-made server messages to ``loadgen.Client``; no sockets.
"""

from __future__ import annotations

import json

import pytest

from bench.common import encode_event, encode_subscribed, make_data
from bench.loadgen import Client, Stats


class FakeClient(Client):
    """A ``Client`` that records what it would send."""

    def __init__(self) -> None:
        super().__init__(Stats(), "bench")
        self.sent: list[str] = []

    def send_text(self, text: str) -> None:
        self.sent.append(text)


def event(seq: int, offset: int | None = None) -> str:
    return encode_event("bench", seq + 1 if offset is None else offset, make_data(seq, 100))


def run(messages: list[str]) -> FakeClient:
    client = FakeClient()
    client.on_text(json.dumps({"type": "welcome", "version": 1}))
    client.on_text(encode_subscribed("bench", 0))
    for message in messages:
        client.on_text(message)
    return client


def test_clean_stream_and_batches_pass() -> None:
    batch = '{"type":"batch","frames":[' + ",".join([event(2), event(3)]) + "]}"
    client = run([event(0), event(1), batch, event(4)])
    assert (client.next_seq, client.skipped, client.late, client.offset_breaks) == (5, 0, 0, 0)
    assert client.stats.events == 5 and client.stats.batches == 1 and client.stats.errors == []


def test_event_frame_is_about_the_requested_size() -> None:
    assert 95 <= len(event(123, 123456)) <= 110


@pytest.mark.parametrize(
    ("seqs", "skipped", "late", "offset_breaks"),
    [
        ([0, 1, 3, 4], 1, 0, 1),  # lost event
        ([0, 1, 1, 2], 0, 1, 1),  # duplicate
        ([0, 2, 1, 3], 1, 1, 3),  # swapped
    ],
)
def test_violations_are_counted(seqs: list[int], skipped: int, late: int, offset_breaks: int) -> None:
    client = run([event(s) for s in seqs])
    assert (client.skipped, client.late, client.offset_breaks) == (skipped, late, offset_breaks)


def test_ping_is_answered_with_pong() -> None:
    client = run(['{"type":"ping","id":7}'])
    assert json.loads(client.sent[-1]) == {"type": "pong", "id": 7}
    assert client.stats.pings == 1


def test_error_frames_are_kept() -> None:
    client = run(['{"type":"error","code":"forbidden","message":"no"}'])
    assert client.stats.errors[0]["code"] == "forbidden"
