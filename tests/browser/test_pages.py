"""The example pages (examples/web/) in Chromium, served by the example servers they belong to.

Each server runs as a subprocess exactly as docs/examples.md starts it; its second line names
the page. The tests read the page's DOM, as a person reads the screen, and save screenshots.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from ._harness import COUNT_SOCKETS, no_reconnect
from ._procs import Server

ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL = str(ROOT / "examples" / "log_tail_server.py")
PROGRESS = str(ROOT / "examples" / "progress_server.py")

#: records every change of an element's text and data-state, so a short-lived state is not missed
WATCH = """(selector) => {
  const element = document.querySelector(selector);
  const seen = (window.seen ??= {});
  const list = (seen[selector] = [element.dataset.state + ": " + element.textContent.trim()]);
  new MutationObserver(() => {
    const now = element.dataset.state + ": " + element.textContent.trim();
    if (list.at(-1) !== now) list.push(now);
  }).observe(element, { attributes: true, childList: true, characterData: true, subtree: true });
}"""


def page_url(server: Server) -> str:
    line = server.out[server.wait_for(r"^page http://")]
    return line.split(maxsplit=1)[1]


def shown_lines(page) -> list[str]:
    return page.eval_on_selector_all("#lines > div", "(lines) => lines.map((line) => line.textContent)")


# -- log tail ------------------------------------------------------------------------------------


class Writer:
    """Appends ``line 1`` … ``line N`` to a file in a thread, one every ``pause`` seconds."""

    def __init__(self, path: Path, count: int, pause: float) -> None:
        self.path, self.count, self.pause = path, count, pause
        self.written = 0
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        for number in range(1, self.count + 1):
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"line {number}\n")
            self.written = number
            time.sleep(self.pause)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.thread.join(30)


def test_log_tail_page_shows_every_line_once_across_a_server_restart(page, start_server, tmp_path, artifacts):
    log = tmp_path / "app.log"
    log.write_text("", encoding="utf-8")
    args = (LOG_TAIL, str(log), "--history", "500", "--poll", "0.05")
    server = start_server(*args, "--port", "0", name="log_tail_server")
    page.goto(page_url(server))
    page.evaluate(WATCH, "#status")
    page.wait_for_function("document.querySelector('#status').dataset.state === 'open'")

    total = 150
    with Writer(log, total, 0.01):  # lines keep coming while the server restarts
        page.wait_for_function("document.querySelectorAll('#lines > div').length >= 30")
        assert server.terminate() == 0, server.report()  # SIGTERM: the page sees 1001
        page.wait_for_function("document.querySelector('#status').dataset.state === 'reconnecting'")
        page.screenshot(path=artifacts / "log_tail-reconnecting.png")
        server = start_server(*args, "--port", str(server.port), name="log_tail_server (restarted)")
        page.wait_for_function(f"document.querySelectorAll('#lines > div').length >= {total}", timeout=20_000)
    page.wait_for_function("document.querySelector('#status').dataset.state === 'open'")
    assert shown_lines(page) == [f"line {n}" for n in range(1, total + 1)]
    states = [entry.split(":")[0] for entry in page.evaluate("window.seen['#status']")]
    assert states[0] in ("connecting", "open") and "reconnecting" in states and states[-1] == "open", states
    assert page.inner_text("#status") == "open"
    assert page.inner_text("#notices") == ""  # nothing was lost
    page.screenshot(path=artifacts / "log_tail.png")


# -- job progress --------------------------------------------------------------------------------


def opened(server: Server) -> int:
    return server.count(r"connection \S+ opened from")


def test_progress_page_runs_a_job_and_closes_for_good_when_it_is_done(
    page, start_server, tmp_path, artifacts
):
    server = start_server(
        PROGRESS, "--port", "0", "--jobs-dir", str(tmp_path / "jobs"), name="progress_server"
    )
    page.add_init_script(COUNT_SOCKETS)
    page.clock.install()  # time flows; no_reconnect runs the timers ahead at the end
    page.goto(page_url(server))
    page.wait_for_function("document.querySelector('#connection').dataset.state === 'open'")
    server.wait_for(
        r"connection \S+ opened from", stream="err"
    )  # this page (the server has no client inside)
    page.fill("input[name=steps]", "20")
    page.click("text=Start a job")
    page.wait_for_function("(bar => bar.value > 0 && bar.value < bar.max)(document.querySelector('#bar'))")
    page.screenshot(path=artifacts / "progress-running.png")
    job = re.fullmatch(r"job-\w+", page.inner_text("#job"))
    assert job, page.inner_text("#job")
    assert f"job={job[0]}" in page.url  # a reload follows the same job

    page.wait_for_function("document.querySelector('#connection').dataset.state === 'closed'")
    assert page.eval_on_selector("#bar", "(bar) => [bar.value, bar.max]") == [20, 20]
    assert page.inner_text("#count") == "20/20 (100%)"
    assert page.inner_text("#result") == "done: downloaded 20 chunks (20.0 MiB)"
    assert page.inner_text("#state") == "closed"
    assert page.is_hidden("#retry")
    page.screenshot(path=artifacts / "progress-done.png")
    # The page closed the connection itself (hypercorn reports every close a client starts as
    # 1006 to the app, so the hub's log cannot tell 1000), and nothing reconnects.
    server.wait_for(r"connection \S+ closed: ", stream="err")
    no_reconnect(page)
    assert opened(server) == 1, server.report()


def test_progress_page_waits_with_a_countdown_and_retries_now_on_the_button(
    page, start_server, tmp_path, artifacts
):
    jobs = str(tmp_path / "jobs")
    server = start_server(PROGRESS, "--port", "0", "--jobs-dir", jobs, name="progress_server")
    url = page_url(server)
    # Fake timers (playwright's clock): once paused, the backoff delay never runs out, so only
    # the button can start the next attempt. The WebSocket itself is real.
    page.clock.install()
    page.goto(url)
    page.fill("input[name=steps]", "400")
    page.click("text=Start a job")
    page.wait_for_function("document.querySelector('#bar').value >= 2")
    page.clock.pause_at(time.time() + 1)
    assert server.terminate() == 0, server.report()  # the page sees 1001
    page.wait_for_function("document.querySelector('#connection').dataset.state === 'reconnecting'")
    assert re.fullmatch(r"reconnecting in \d+ s", page.inner_text("#state")), page.inner_text("#state")
    assert page.is_visible("#retry")
    page.screenshot(path=artifacts / "progress-reconnecting.png")
    before = page.eval_on_selector("#bar", "(bar) => bar.value")

    server = start_server(
        PROGRESS, "--port", str(server.port), "--jobs-dir", jobs, name="progress_server (2)"
    )
    server.wait_for(r"resuming job job-\w+", stream="err")
    page.click("#retry")
    page.wait_for_function("document.querySelector('#connection').dataset.state === 'open'")
    assert page.is_hidden("#retry")
    page.clock.resume()
    page.wait_for_function(f"document.querySelector('#bar').value > {before}")  # the bar continues


@pytest.mark.parametrize(
    ("token", "attempts"),
    # a wrong token: 4401, the getter asked again (the same token), 4401 again, no more attempts;
    # no token at all: no getter to ask, so 4401 ends it at once
    [("token=wrong", 2), ("", 1)],
    ids=["wrong-token", "no-token"],
)
def test_progress_page_with_a_wrong_token_says_so_and_stops(page, start_server, tmp_path, token, attempts):
    server = start_server(
        PROGRESS, "--port", "0", "--jobs-dir", str(tmp_path / "jobs"), name="progress_server"
    )
    page.goto(re.sub(r"token=[^&]+", token, page_url(server)))
    page.wait_for_function("document.querySelector('#connection').dataset.state === 'closed'")
    assert page.inner_text("#state") == "closed: the token was refused; open the address the server printed"
    refused = r"handshake from \S+ refused: HTTP 401"
    line = -1
    for _ in range(attempts):  # the log comes through a pipe: wait for each line
        line = server.wait_for(refused, stream="err", start=line + 1)
    assert server.count(refused) == attempts, server.report()
