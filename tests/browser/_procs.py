"""Servers for the browser tests, run as subprocesses that the tests start, signal and stop.

A server is started from the repository root with ``PYTHONPATH`` set to it, its output collected
line by line in threads. Readiness is its first ``serving …`` line; every wait is for a line,
bounded by a deadline. Signals go to the PID this module started, nothing else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0  # seconds a server may take to print an expected line on a loaded machine


class Server:
    """One server process; ``port`` and ``base`` come from its ``serving …`` line."""

    def __init__(self, *args: str, name: str, cwd: Path = ROOT) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.name = name
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
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
        try:
            line = self.out[self.wait_for(r"^serving \w+://")]
        except BaseException:
            self.close()
            raise
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        self.stopped = False

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, *, stream: str = "out", start: int = 0, timeout: float = WAIT) -> int:
        """Wait until a line (index >= ``start``) of ``stream`` matches ``pattern``; return its index."""
        lines = self.out if stream == "out" else self.err
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
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

    def count(self, pattern: str, *, stream: str = "err") -> int:
        regex = re.compile(pattern)
        with self._changed:
            return sum(bool(regex.search(line)) for line in (self.out if stream == "out" else self.err))

    def report(self) -> str:
        with self._changed:
            return f"--- {self.name} stdout\n" + "\n".join(self.out) + "\n--- stderr\n" + "\n".join(self.err)

    # -- control over HTTP (tests/browser/hub_server.py)

    def call(self, method: str, path: str, **context: Any) -> Any:
        request = urllib.request.Request(self.url.rstrip("/") + path, method=method)
        with urllib.request.urlopen(request, timeout=10, **context) as response:
            return json.loads(response.read())

    # -- signals, by PID

    def stop(self) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing."""
        self.popen.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        self.popen.send_signal(signal.SIGCONT)
        self.stopped = False

    def terminate(self, timeout: float = WAIT) -> int:
        """SIGTERM, and wait for the exit."""
        self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = WAIT) -> int:
        rc = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return rc

    def close(self) -> None:
        """Kill the process if it still runs (continued first if stopped) and release its pipes."""
        if self.popen.poll() is None:
            if getattr(self, "stopped", False):
                self.cont()
            self.popen.kill()
        self.wait()
        for pipe in (self.popen.stdout, self.popen.stderr):
            assert pipe is not None
            pipe.close()
