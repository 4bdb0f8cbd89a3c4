"""The ``tail -F`` follower of the log-tail example, in virtual time (no sleeps)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from examples import _follow
from examples._follow import Line, LineSplitter, Notice, follow, start_of_last_lines

# -- LineSplitter (no I/O) ---------------------------------------------------------------------


def test_half_written_line_is_held_until_its_newline_arrives():
    splitter = LineSplitter(inode=7, pos=100)
    assert splitter.feed(b"first\nsec") == [Line("first", 7, 100, 106)]
    assert splitter.position == 109
    assert splitter.feed(b"ond") == []
    assert splitter.feed(b" line\nthird\n") == [Line("second line", 7, 106, 118), Line("third", 7, 118, 124)]
    assert splitter.position == 124


def test_utf8_character_split_across_writes_is_decoded_whole():
    data = "héllo wörld\n".encode()
    splitter = LineSplitter(1, 0)
    assert splitter.feed(data[:2]) == []  # ends in the middle of "é"
    assert splitter.feed(data[2:]) == [Line("héllo wörld", 1, 0, len(data))]


def test_invalid_utf8_and_crlf():
    splitter = LineSplitter(1, 0)
    (line,) = splitter.feed(b"bad \xff byte\r\n")
    assert line.text == "bad \ufffd byte"
    assert line.end == 12


def test_endless_line_is_cut_to_bound_memory():
    splitter = LineSplitter(1, 0, max_line=4)
    lines = splitter.feed(b"abcdefghij")
    assert [line.text for line in lines] == ["abcd", "efgh"]
    assert splitter.feed(b"\n") == [Line("ij", 1, 8, 11)]


# -- start_of_last_lines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "count", "expected"),
    [
        (b"a\nb\nc\n", 2, 2),
        (b"a\nb\nc\n", 3, 0),
        (b"a\nb\nc\n", 10, 0),
        (b"a\nb\nc\n", 0, 6),
        (b"a\nb\nc\npart", 1, 4),
        (b"a\nb\nc\npart", 0, 6),
        (b"no newline", 5, 0),
        (b"", 3, 0),
    ],
)
def test_start_of_last_lines(content, count, expected):
    assert start_of_last_lines(io.BytesIO(content), len(content), count) == expected


def test_start_of_last_lines_across_blocks():
    content = b"".join(f"line {i}\n".encode() for i in range(1000))
    start = start_of_last_lines(io.BytesIO(content), len(content), 3, block=7)
    assert content[start:] == b"line 997\nline 998\nline 999\n"


# -- follow() on a real file, virtual time ------------------------------------------------------


def write(path: Path, data: bytes, mode: str = "ab") -> None:
    with open(path, mode) as f:
        f.write(data)


class Follower:
    """Runs ``follow`` in a nursery and hands its output to the test one item at a time.

    ``follow`` reads in worker threads, and the autojump clock would jump to any deadline the
    test sets while a thread is busy. So the test sets none: a wait is bounded by the number
    of polls the follower makes instead (each ``stat`` is one poll).
    """

    MAX_POLLS = 50

    def __init__(self, nursery: trio.Nursery, path: Path, monkeypatch, **kwargs: object) -> None:
        self.send, self.receive = trio.open_memory_channel[Line | Notice](math.inf)
        self.nursery = nursery
        self.path = path
        self.kwargs = kwargs
        self.polls = 0
        self.polled = trio.Event()
        self._guard: tuple[trio.CancelScope, int] | None = None
        real_stat = _follow._stat

        async def counting_stat(path):
            self.polls += 1
            self.polled.set()
            self.polled = trio.Event()
            if self._guard is not None and self.polls > self._guard[1]:
                self._guard[0].cancel()
            return await real_stat(path)

        monkeypatch.setattr(_follow, "_stat", counting_stat)

    async def start(self) -> Follower:
        def run(task_status):
            return follow(self.path, self.send.send_nowait, **self.kwargs, task_status=task_status)

        await self.nursery.start(run)
        return self

    async def next(self) -> Line | Notice:
        with trio.CancelScope() as scope:
            self._guard = (scope, self.polls + self.MAX_POLLS)
            return await self.receive.receive()
        raise AssertionError(f"nothing from the follower in {self.MAX_POLLS} polls")

    async def texts(self, count: int) -> list[str]:
        items = [await self.next() for _ in range(count)]
        return [item.text if isinstance(item, Line) else f"! {item.text}" for item in items]

    async def wait_polls(self, count: int) -> None:
        for _ in range(count):
            await self.polled.wait()

    def pending(self) -> list[Line | Notice]:
        items = []
        while True:
            try:
                items.append(self.receive.receive_nowait())
            except trio.WouldBlock:
                return items


async def test_existing_file_starts_with_its_last_lines_then_follows(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"".join(f"old {i}\n".encode() for i in range(20)))
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, initial_lines=3, poll_interval=0.5).start()
        assert await f.texts(3) == ["old 17", "old 18", "old 19"]
        write(log, b"new 1\nnew 2\n")
        assert await f.texts(2) == ["new 1", "new 2"]
        nursery.cancel_scope.cancel()


async def test_positions_identify_lines(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"ab\ncde\n")
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, initial_lines=10).start()
        first, second = await f.next(), await f.next()
        inode = os.stat(log).st_ino
        assert first == Line("ab", inode, 0, 3)
        assert second == Line("cde", inode, 3, 7)
        nursery.cancel_scope.cancel()


async def test_partial_line_is_published_only_once_completed(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"")
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, poll_interval=0.1).start()
        write(log, b"hal")
        await f.wait_polls(3)  # several polls see the half line
        write(log, b"f a line\nnext\n")
        assert await f.texts(2) == ["half a line", "next"]
        nursery.cancel_scope.cancel()


async def test_truncation_restarts_at_the_beginning(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"one\ntwo\nthree\n")
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, initial_lines=10).start()
        assert await f.texts(3) == ["one", "two", "three"]
        write(log, b"four\n", mode="wb")  # truncate and write less than before
        assert await f.texts(2) == ["! file truncated", "four"]
        nursery.cancel_scope.cancel()


async def test_truncated_and_rewritten_past_our_position_between_polls(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"old\n")
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, initial_lines=10).start()
        assert await f.texts(1) == ["old"]
        write(log, b"a longer first line\n", mode="wb")  # larger than before: size alone can't tell
        assert await f.texts(2) == ["! file truncated", "a longer first line"]
        nursery.cancel_scope.cancel()


async def test_rotation_by_rename_reads_the_old_file_to_its_end(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"before\n")
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, initial_lines=10).start()
        assert await f.texts(1) == ["before"]
        rotated = tmp_path / "app.log.1"
        log.rename(rotated)
        write(log, b"fresh 1\n")  # the new file, created by the rotation
        write(rotated, b"late line in the old file\n")  # the program has not reopened it yet
        assert await f.texts(3) == [
            "late line in the old file",
            "! has been replaced; following new file",
            "fresh 1",
        ]
        write(log, b"fresh 2\n")
        assert await f.texts(1) == ["fresh 2"]
        nursery.cancel_scope.cancel()


async def test_recreated_file_is_followed_from_its_start(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"a\n")
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, initial_lines=10).start()
        assert await f.texts(1) == ["a"]
        log.unlink()
        assert await f.texts(1) == ["! has become inaccessible"]
        write(log, b"b\nc\n")
        assert await f.texts(3) == ["! has appeared; following new file", "b", "c"]
        nursery.cancel_scope.cancel()


async def test_file_that_does_not_exist_yet(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "later.log"
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, initial_lines=10).start()
        await f.wait_polls(5)
        assert f.pending() == []
        write(log, b"hello\n")
        assert await f.texts(2) == ["! has appeared; following new file", "hello"]
        nursery.cancel_scope.cancel()


async def test_polls_once_per_interval_and_never_spins(tmp_path, autojump_clock, monkeypatch):
    log = tmp_path / "app.log"
    write(log, b"x\n")
    async with trio.open_nursery() as nursery:
        f = await Follower(nursery, log, monkeypatch, poll_interval=1.0).start()
        start = trio.current_time()
        await f.wait_polls(10)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert 9.0 <= elapsed <= 10.0
