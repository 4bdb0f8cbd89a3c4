"""Servers for the browser tests, run as subprocesses that the tests start, signal and stop.

A server is started from the repository root (``tests/_procs.py``); readiness is its first
``serving …`` line, which also gives its URL and port.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from .._procs import ROOT, Process

__all__ = ["ROOT", "WAIT", "Server"]

WAIT = 15.0  # seconds a server may take to print an expected line on a loaded machine


class Server(Process):
    """One server process; ``url`` and ``port`` come from its ``serving …`` line."""

    wait_seconds = WAIT

    def __init__(self, *args: str, name: str, cwd: Path = ROOT) -> None:
        super().__init__(args, name=name, cwd=cwd)
        try:
            line = self.out[self.wait_for(r"^serving \w+://")]
        except BaseException:
            self.close()
            raise
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))

    def call(self, method: str, path: str, **context: Any) -> Any:
        """An HTTP call to the server's control API (tests/browser/hub_server.py)."""
        request = urllib.request.Request(self.url.rstrip("/") + path, method=method)
        with urllib.request.urlopen(request, timeout=10, **context) as response:
            return json.loads(response.read())
