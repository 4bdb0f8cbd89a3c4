"""Programs under test run as subprocesses: output collected line by line, waits bounded.

A test starts the program, then waits for lines of its output (``wait_for``), each wait bounded
by a deadline, so a broken program fails within seconds instead of hanging and nothing sleeps
for a fixed time. Signals go to the PID this module started, nothing else.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


class Process:
    """``python *argv`` from ``cwd`` with ``PYTHONPATH`` at the repository root."""

    #: seconds any single expected line may take; generous for a loaded CI machine
    wait_seconds = 10.0

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cwd: Path = ROOT,
        stdin: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("COLUMNS", None)
        self.name = name
        self.stopped = False
        self.popen = subprocess.Popen(
            [sys.executable, *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, pattern: str, *, stream: str = "out", start: int = 0, timeout: float | None = None
    ) -> int:
        """Wait until a line (index >= ``start``) of ``stream`` matches ``pattern``; return its index."""
        lines = self.out if stream == "out" else self.err
        regex = re.compile(pattern)
        deadline = time.monotonic() + (self.wait_seconds if timeout is None else timeout)
        with self._changed:
            while True:
                for index in range(start, len(lines)):
                    if regex.search(lines[index]):
                        return index
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not any(r.is_alive() for r in self._readers)
                ):
                    raise AssertionError(
                        f"{self.name}: no line matching {pattern!r} on std{stream}\n{self.report()}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def send(self, line: str) -> None:
        """Write one line to the standard input (``stdin=True``)."""
        assert self.popen.stdin is not None, "started without stdin=True"
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            self.popen.stdin.close()

    def count(self, pattern: str, *, stream: str = "err") -> int:
        regex = re.compile(pattern)
        with self._changed:
            return sum(bool(regex.search(line)) for line in (self.out if stream == "out" else self.err))

    def report(self) -> str:
        with self._changed:
            return f"--- {self.name} stdout\n" + "\n".join(self.out) + "\n--- stderr\n" + "\n".join(self.err)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing."""
        self.signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        self.signal(signal.SIGCONT)
        self.stopped = False

    def terminate(self, timeout: float | None = None) -> int:
        """SIGTERM, and wait for the exit."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> int:
        timeout = self.wait_seconds if timeout is None else timeout
        rc = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return rc

    def close(self) -> None:
        """Kill the process if it still runs (continued first if stopped) and release its pipes."""
        if self.popen.poll() is None:
            if self.stopped:
                self.cont()
            self.popen.kill()
        self.wait()
        self.close_stdin()
        for pipe in (self.popen.stdout, self.popen.stderr):
            assert pipe is not None
            pipe.close()
