"""examples/fastapi_jobs.py's page in Chromium, served by uvicorn (asyncio) as its docstring says.

The page logs in, starts a job over HTTP and follows it with trioconn.js: every step arrives once,
in order, the bar reaches 100 %, and the job's ``end`` closes the client for good.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from ._harness import COUNT_SOCKETS, no_reconnect
from ._procs import ROOT, WAIT

APP = "examples.fastapi_jobs:app"


class Uvicorn:
    """``python -m uvicorn examples.fastapi_jobs:app`` on a free port; stopped by PID."""

    def __init__(self, env: dict[str, str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while True:  # ready when the page answers; bounded
            try:
                with urllib.request.urlopen(self.base + "/", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"uvicorn did not serve {APP} within {WAIT} s")
            time.sleep(0.1)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            self.popen.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def app_server() -> Iterator[Uvicorn]:
    server = Uvicorn({"TRIOCONN_DEMO_STEPS": "10", "TRIOCONN_DEMO_STEP_SECONDS": "0.05"})
    try:
        yield server
    finally:
        server.close()


def test_the_fastapi_page_follows_a_job_to_the_end_and_closes_for_good(page, app_server, artifacts):
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.add_init_script(COUNT_SOCKETS)
    page.clock.install()  # time flows; no_reconnect runs the timers ahead at the end
    page.goto(app_server.base + "/")
    page.click("text=Start a download")
    page.wait_for_function("document.getElementById('log').textContent.includes('job finished')")
    page.wait_for_function("document.getElementById('status').dataset.state === 'closed'")
    log = page.inner_text("#log").splitlines()
    steps = [line for line in log if line.startswith(("running", "done"))]
    assert [line.split()[1] for line in steps] == [f"{pct}%" for pct in range(10, 101, 10)], log
    assert page.eval_on_selector("#bar", "(bar) => bar.value") == 100
    assert page.inner_text("#status") == "closed (1000)"
    assert page.is_hidden("#retry")
    page.screenshot(path=artifacts / "fastapi-done.png")
    # One WebSocket, to /ws with the token as a query parameter, and no reconnect after the end.
    assert len(sockets) == 1 and "/ws?token=" in sockets[0], sockets
    no_reconnect(page)
