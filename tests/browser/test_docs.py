"""The page in docs/browser.md, as a reader would use it, against the README's example server.

Both are taken from the markdown as they are written; only the port changes (8765 may be taken
on a shared machine) and the README server's half-second step is made shorter. The page is
served as docs/browser.md says: saved beside a copy of ``trioconn.browser.SCRIPT_PATH`` in a
directory that a plain static-file server serves.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trioconn.browser import SCRIPT_PATH

ROOT = Path(__file__).resolve().parents[2]


def docs_page() -> str:
    text = (ROOT / "docs" / "browser.md").read_text(encoding="utf-8")
    block = text.split("<!-- page: job.html -->\n```html\n", 1)[1].split("```\n", 1)[0]
    assert len(block.splitlines()) <= 15, "docs/browser.md promises a page in 15 lines"
    return block


def readme_server() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A server in a few lines\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```\n", 1)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in:\n{text}"
    return text.replace(old, new)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A directory served over HTTP on 127.0.0.1, like ``python -m http.server``."""
    site = tmp_path / "site"
    site.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_page_from_docs_browser_md_follows_the_readme_server(page, static_site, tmp_path):
    site, http_port = static_site
    port = free_port()
    (site / "job.html").write_text(replace_once(docs_page(), "8765", str(port)), encoding="utf-8")
    shutil.copy(SCRIPT_PATH, site / "trioconn.js")
    code = replace_once(readme_server(), "8765", str(port))
    code = replace_once(code, "await trio.sleep(0.5)", "await trio.sleep(0.1)")
    (tmp_path / "server.py").write_text(code, encoding="utf-8")

    server = subprocess.Popen(
        [sys.executable, str(tmp_path / "server.py")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:  # the README's server prints nothing: wait until it accepts connections
            assert server.poll() is None, server.communicate()[1].decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the README server did not start listening"
                time.sleep(0.05)
        page.goto(f"http://127.0.0.1:{http_port}/job.html")
        page.wait_for_function("document.querySelector('#state').textContent === 'closed'")
        assert page.eval_on_selector("#bar", "(bar) => bar.value") == 100
    finally:
        server.kill()
        server.communicate()
