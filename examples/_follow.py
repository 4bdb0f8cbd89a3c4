"""Follow a file like ``tail -F``, in trio, without blocking the event loop.

Theory of operation
-------------------
``follow()`` polls: every ``poll_interval`` it compares what the *path* names now (``stat``) with
the file it has open (``fstat`` taken when it was opened). Polling is deliberate: it works the
same on every OS and filesystem (inotify does not see NFS or a container's bind mount), and one
``stat`` per interval costs nothing. All disk access runs in worker threads (``trio.Path`` and
``trio.to_thread``), so a slow disk never stalls the WebSocket traffic of the hub.

On each poll, in this order:

* **missing**: the path does not exist. The open file (if any) is read to its end first, then
  closed; we wait for the path to appear and then read the new file from its start.
* **rotated**: the path names another file (different device/inode: ``mv log log.1`` followed by
  a new ``log``, or a re-created file). The old file is read to its end first, because a program
  keeps writing to it until it reopens its log, then the new file is read from its start.
* **truncated**: same file, but smaller than our position (``copytruncate``, ``> file``). We
  start again at 0.
* otherwise we read what was appended since the last poll.

``LineSplitter`` turns bytes into lines and is the only place that knows about newlines: a write
that lands half a line (or half a UTF-8 character) stays buffered until its newline arrives.
Each ``Line`` carries the inode and byte range it came from, which is what lets a client
recognise a line it has already printed after the server restarts.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import BinaryIO, Final

import attrs
import trio

__all__ = ["Line", "LineSplitter", "Notice", "follow", "start_of_last_lines"]

#: A line longer than this is cut into pieces, so a file without newlines cannot grow memory.
MAX_LINE_BYTES: Final = 64 * 1024
#: How much one read takes; a poll reads until the end of the file in chunks of this size.
READ_SIZE: Final = 64 * 1024


@attrs.frozen
class Line:
    """One complete line of the file.

    Attributes:
        text: the line without its line ending, decoded as UTF-8 (invalid bytes become U+FFFD).
        inode: the inode of the file it was read from.
        pos: byte offset of the line's first byte.
        end: byte offset just after the line's newline (the next line's ``pos``).
    """

    text: str
    inode: int
    pos: int
    end: int


@attrs.frozen
class Notice:
    """Something ``tail -F`` would say on stderr: ``"file truncated"``, ``"has appeared"`` …"""

    text: str


class LineSplitter:
    """Bytes at known file offsets in, complete ``Line`` objects out. No I/O.

    Args:
        inode: the inode of the file the bytes come from.
        pos: the file offset of the first byte that will be fed.
        max_line: longer lines are emitted in pieces of this many bytes.
    """

    def __init__(self, inode: int, pos: int, *, max_line: int = MAX_LINE_BYTES) -> None:
        self.inode = inode
        #: offset of the first byte of ``_partial`` (the start of the unfinished line).
        self._start = pos
        self._partial = b""
        self._max_line = max_line

    @property
    def position(self) -> int:
        """The file offset of the next byte to feed."""
        return self._start + len(self._partial)

    def feed(self, data: bytes) -> list[Line]:
        """Add bytes that follow what was fed before; return the lines they complete."""
        buffer = self._partial + data
        lines: list[Line] = []
        start = 0
        while True:
            newline = buffer.find(b"\n", start, start + self._max_line)
            if newline < 0:
                if len(buffer) - start < self._max_line:
                    break
                newline = start + self._max_line - 1  # cut an endless line; keep memory bounded
                raw = buffer[start : newline + 1]
            else:
                raw = buffer[start:newline].removesuffix(b"\r")
            lines.append(
                Line(
                    raw.decode("utf-8", errors="replace"),
                    self.inode,
                    self._start + start,
                    self._start + newline + 1,
                )
            )
            start = newline + 1
        self._partial = buffer[start:]
        self._start += start
        return lines


def start_of_last_lines(f: BinaryIO, size: int, count: int, *, block: int = READ_SIZE) -> int:
    """Offset where the last ``count`` complete lines of a file of ``size`` bytes begin.

    An unfinished last line (no newline yet) is not counted; it starts at the returned offset
    when ``count`` is 0. Blocking: call it in a worker thread.
    """
    wanted = count + 1  # the newline ending the last complete line is number 1
    end = size
    while end > 0:
        begin = max(0, end - block)
        f.seek(begin)
        chunk = f.read(end - begin)
        index = len(chunk)
        while True:
            index = chunk.rfind(b"\n", 0, index)
            if index < 0:
                break
            wanted -= 1
            if wanted == 0:
                return begin + index + 1
        end = begin
    return 0


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


async def _stat(path: trio.Path) -> os.stat_result | None:
    try:
        return await path.stat()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


class _Open:
    """The file we are reading: its handle, identity, splitter, and the bytes just read."""

    def __init__(self, file: BinaryIO, st: os.stat_result, pos: int) -> None:
        self.file = file
        self.identity = _identity(st)
        self.splitter = LineSplitter(st.st_ino, pos)
        #: the last bytes before our position; if they change, the file was rewritten.
        self.recent = b""

    def restart(self) -> None:
        self.splitter = LineSplitter(self.identity[1], 0)
        self.recent = b""


async def follow(
    path: str | os.PathLike[str],
    emit: Callable[[Line | Notice], None],
    *,
    poll_interval: float = 0.25,
    initial_lines: int = 10,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Follow ``path`` until cancelled, calling ``emit`` for each new line and each notice.

    Args:
        path: the file to follow. It may not exist yet.
        emit: called (synchronously, in trio) with every ``Line`` and ``Notice`` in file order.
        poll_interval: seconds between two looks at the file.
        initial_lines: how many of the file's existing last lines to emit at start (like
            ``tail -n``). A file that appears later is read from its beginning.
        task_status: ``started()`` once the existing content has been emitted.

    Raises:
        OSError: the file exists but cannot be read (permissions), or the disk failed.
    """
    apath = trio.Path(path)
    current: _Open | None = None
    first = True
    try:
        while True:
            st = await _stat(apath)
            replaced = False
            if current is not None and (st is None or _identity(st) != current.identity):
                await _drain(current, emit)  # what was written to the old file before it went
                await _close(current)
                current = None
                replaced = st is not None
                if not replaced:
                    emit(Notice("has become inaccessible"))
            if current is None and st is not None:
                current = await _open(apath, initial_lines if first else None)
                if current is not None and not first:
                    verb = "has been replaced" if replaced else "has appeared"
                    emit(Notice(f"{verb}; following new file"))
            if current is not None and st is not None:
                if st.st_size < current.splitter.position:
                    emit(Notice("file truncated"))
                    current.restart()
                if st.st_size > current.splitter.position and not await _drain(current, emit):
                    # Truncated and rewritten past our position between two polls.
                    emit(Notice("file truncated"))
                    current.restart()
                    await _drain(current, emit)
            if first:
                first = False
                task_status.started()
            await trio.sleep(poll_interval)
    finally:
        if current is not None:
            with trio.CancelScope(shield=True):
                await _close(current)


async def _open(apath: trio.Path, initial_lines: int | None) -> _Open | None:
    """Open the file; position at its last ``initial_lines`` lines, or at 0 if None."""
    try:
        file = await trio.to_thread.run_sync(open, apath, "rb")
    except FileNotFoundError:
        return None  # gone again between stat and open: try on the next poll
    # Identify the file we actually opened, not whatever the path named a moment ago.
    st = await trio.to_thread.run_sync(os.fstat, file.fileno())
    pos = 0
    if initial_lines is not None and st.st_size > 0:
        pos = await trio.to_thread.run_sync(start_of_last_lines, file, st.st_size, initial_lines)
    return _Open(file, st, pos)


async def _close(current: _Open) -> None:
    await trio.to_thread.run_sync(current.file.close)


def _read_at(file: BinaryIO, pos: int, expect: bytes, size: int) -> bytes | None:
    """Blocking: up to ``size`` bytes from ``pos``, or None if ``expect`` no longer precedes ``pos``."""
    file.seek(pos - len(expect))
    if expect and file.read(len(expect)) != expect:
        return None
    return file.read(size)


async def _drain(current: _Open, emit: Callable[[Line | Notice], None]) -> bool:
    """Read from our position to the end of the file, emitting every completed line.

    Returns:
        False, having read nothing, if the bytes before our position changed (rewritten file).
    """
    while True:
        position = current.splitter.position
        data = await trio.to_thread.run_sync(_read_at, current.file, position, current.recent, READ_SIZE)
        if data is None:
            return False
        if not data:
            return True
        current.recent = (current.recent + data)[-16:]
        for line in current.splitter.feed(data):
            emit(line)
