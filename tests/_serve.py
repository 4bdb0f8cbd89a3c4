"""``trioconn serve`` as a subprocess, for the tests: started as docs/operate.md shows, talked to
over HTTP (urllib) and scraped with prometheus_client's parser.

The console script of the environment is used when it is installed (``pip install -e .``), else
``python -m trioconn``, which is the same ``main``. Readiness is the ``serving http://HOST:PORT``
log line; every server listens on port 0 (a free port) unless a test says otherwise.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ._procs import ROOT, Process

SCRIPT = Path(sys.executable).with_name("trioconn")
DOCS = ROOT / "docs" / "operate.md"


def command(*args: str) -> list[str]:
    """``trioconn ARGS`` as the argv of ``Process`` (which runs ``python argv``)."""
    return [str(SCRIPT), *args] if SCRIPT.exists() else ["-m", "trioconn", *args]


def docs_block(marker: str) -> str:
    """The shell block after ``<!-- operate: MARKER -->`` in docs/operate.md."""
    text = DOCS.read_text(encoding="utf-8")
    return text.split(f"<!-- operate: {marker} -->\n```sh\n", 1)[1].split("```\n", 1)[0]


class Serve(Process):
    """``trioconn serve ARGS``; ``port``, ``http`` and ``ws`` come from its ``serving`` line."""

    wait_seconds = 15.0

    def __init__(
        self, *args: str, cwd: Path = ROOT, env: Mapping[str, str] | None = None, name: str = "serve"
    ) -> None:
        super().__init__(command("serve", *args), name=name, cwd=cwd, env=env)
        try:
            line = self.err[self.wait_for(r"serving http://", stream="err")]
        except BaseException:
            self.close()
            raise
        match = re.search(r"serving http://[^ ]*:(\d+)", line)
        assert match, line
        self.port = int(match.group(1))
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/"

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return request(method, self.http + path, body, **kwargs)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.http + "/metrics")


def request(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP request; returns the status and the JSON body (or the text if not JSON)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus endpoint: (name, sorted labels) → value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def metric(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when absent: a counter that has not counted yet has no labelled sample)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(predicate: Callable[[], Any], seconds: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {seconds}s (last: {result!r})")
        time.sleep(0.05)


def serve_args(line: str) -> list[str]:
    """The arguments after ``trioconn serve`` in a docs command line."""
    words = shlex.split(line)
    assert words[:2] == ["trioconn", "serve"], line
    return words[2:]
