"""What the example servers serve besides the hub: their page, trioconn.js, and who may connect.

The servers run as subprocesses on 127.0.0.1, as in test_examples.py; the WebSocket requests are
made with the ``websockets`` package, setting the ``Origin`` header a browser would send. (The
pages themselves run in Chromium in tests/browser/test_pages.py.)
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from trioconn.browser import SCRIPT_PATH

from .browser._procs import Server

ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL = str(ROOT / "examples" / "log_tail_server.py")
PROGRESS = str(ROOT / "examples" / "progress_server.py")


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def run(*args: str) -> Server:
        server = Server(*args, name=Path(args[0]).name)
        started.append(server)
        return server

    yield run
    for server in started:
        server.close()


def get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["content-type"], response.read()


def first_frame(url: str, origin: str | None) -> dict | int:
    """The server's first frame as JSON, or the close code it closed with instead."""
    with connect(url, origin=origin, open_timeout=10, close_timeout=1) as ws:
        try:
            return json.loads(ws.recv(timeout=10))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code


def page_line(server: Server) -> str:
    return server.out[server.wait_for(r"^page http://")]


def test_log_tail_server_serves_its_page_the_client_and_the_file_list(start, tmp_path):
    server = start(LOG_TAIL, str(tmp_path / "app.log"), str(tmp_path / "worker.log"), "--port", "0")
    assert server.out[0] == f"serving ws://127.0.0.1:{server.port}"
    base = f"http://127.0.0.1:{server.port}"
    assert page_line(server) == f"page {base}/"
    kind, body = get(base + "/")
    assert kind.startswith("text/html")
    assert b'import { Client } from "/trioconn.js";' in body
    kind, body = get(base + "/trioconn.js")
    assert kind.startswith("text/javascript")
    assert body == SCRIPT_PATH.read_bytes()
    assert get(base + "/files") == ("application/json", b'["app.log","worker.log"]')


def test_log_tail_server_refuses_pages_of_other_sites_with_4403(start, tmp_path):
    server = start(LOG_TAIL, str(tmp_path / "app.log"), "--port", "0")
    url = f"ws://127.0.0.1:{server.port}/"
    assert first_frame(url, origin=f"http://127.0.0.1:{server.port}")["type"] == "welcome"
    assert first_frame(url, origin=None)["type"] == "welcome"  # a program
    assert first_frame(url, origin="https://elsewhere.example") == 4403


def test_progress_server_pages_need_the_page_token_kept_across_restarts(start, tmp_path):
    jobs = str(tmp_path / "jobs")
    server = start(PROGRESS, "--port", "0", "--jobs-dir", jobs)
    line = page_line(server)
    prefix = f"page http://127.0.0.1:{server.port}/?token="
    assert line.startswith(prefix), line
    token = line.removeprefix(prefix)
    assert (tmp_path / "jobs" / "page-token").read_text() == token
    url, own = f"ws://127.0.0.1:{server.port}/", f"http://127.0.0.1:{server.port}"
    assert first_frame(f"{url}?token={token}", origin=own)["type"] == "welcome"
    assert first_frame(url, origin=own) == 4401
    assert first_frame(f"{url}?token=wrong", origin=own) == 4401
    assert first_frame(f"{url}?token={token}", origin="https://elsewhere.example") == 4403
    assert first_frame(url, origin=None)["type"] == "welcome"  # a program: no token needed
    _, body = get(own + "/")
    assert b"Retry now" in body

    assert server.terminate() == 0, server.report()
    again = start(PROGRESS, "--port", "0", "--jobs-dir", jobs)
    assert page_line(again) == f"page http://127.0.0.1:{again.port}/?token={token}"
