"""The issue's "done when", in Chromium: ``trioconn serve --static DIR`` serves the page of
docs/browser.md and ``/trioconn.js``, and one HTTP POST (what ``curl -X POST`` sends) reaches it.

The page is taken from the markdown as written, pointed at the server's port (port 0 is asked
for, so the page is saved after the server has reported its port; static files are read per
request).
"""

from __future__ import annotations

from .._serve import Serve
from .test_docs import docs_page, replace_once

KEY = "browser-test-key-0123456789"


def test_a_post_to_the_http_api_reaches_the_docs_page_served_by_trioconn_serve(page, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    server = Serve("--port", "0", "--static", str(site), "--api-key", KEY, "--refuse-with", "close")
    try:
        (site / "job.html").write_text(replace_once(docs_page(), "8765", str(server.port)), encoding="utf-8")
        page.goto(f"{server.http}/job.html")  # its ./trioconn.js is the server's /trioconn.js
        page.wait_for_function("document.querySelector('#state').textContent === 'open'")
        assert server.call("POST", "/api/state", {"topic": "job/1", "value": {"pct": 40}}, token=KEY) == (
            200,
            {"topic": "job/1", "offset": 1},
        )
        page.wait_for_function("document.querySelector('#bar').value === 40")
        assert (
            server.call("POST", "/api/state", {"topic": "job/1", "value": {"pct": 100}}, token=KEY)[0] == 200
        )
        assert server.call("POST", "/api/end", {"topic": "job/1"}, token=KEY)[0] == 200
        page.wait_for_function("document.querySelector('#state').textContent === 'closed'")
        assert page.eval_on_selector("#bar", "(bar) => bar.value") == 100
    finally:
        server.close()
