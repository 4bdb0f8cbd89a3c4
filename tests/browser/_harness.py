"""Helpers for driving ``harness.html`` (``window.trioconn``, ``record``, ``changes``) from a test."""

from __future__ import annotations

import json
from typing import Any

from ._procs import Server

#: the harness page's WebSocket subclass that remembers the time of every frame received and
#: every URL opened: what the dead-link and TLS tests measure against
WATCHED_SOCKET = """
class WatchedSocket extends WebSocket {
  constructor(url, ...rest) {
    super(url, ...rest);
    (window.openedUrls ??= []).push(this.url);
    this.addEventListener("message", () => { window.lastFrameAt = Date.now(); });
  }
}
"""


#: counts every WebSocket the page creates, whoever creates it (an init script: before any module)
COUNT_SOCKETS = """
window.socketsCreated = 0;
window.WebSocket = class extends window.WebSocket {
  constructor(...args) { super(...args); window.socketsCreated += 1; }
};
"""


def open_harness(page: Any, server: Server, *, fake_clock: bool = False) -> None:
    """Open ``harness.html``; ``fake_clock`` installs Playwright's clock (time still flows) so
    that ``no_reconnect`` can run the page's timers ahead, and counts the sockets it creates."""
    if fake_clock:
        page.add_init_script(COUNT_SOCKETS)
        page.clock.install()
    page.goto(server.url.rstrip("/") + "/")
    page.wait_for_function("window.harnessReady === true")


def new_client(page: Any, url: str, options: str = "{}", *, name: str = "client") -> None:
    """``window[name] = record(new trioconn.Client(url, <options, JavaScript>))``."""
    page.evaluate(
        f"""() => {{
          {WATCHED_SOCKET}
          window.{name} = record(new trioconn.Client({json.dumps(url)}, {options}), {json.dumps(name)});
          window.{name}Ended = window.{name}.closed.then(() => null, (error) => plainError(error));
        }}"""
    )


def wait_state(page: Any, state: str, *, name: str = "client", timeout: float = 10.0) -> None:
    page.wait_for_function(f"window.{name}.state === {json.dumps(state)}", timeout=timeout * 1000)


def changes(page: Any, name: str = "client") -> list[dict[str, Any]]:
    return [change for change in page.evaluate("window.changes") if change["name"] == name]


def hub_stats(server: Server, hub: str) -> dict[str, Any]:
    return server.call("GET", f"/control/{hub}/stats")


def no_reconnect(page: Any, sockets: int = 1) -> None:
    """After a final close: run every timer of the page ten minutes ahead (far beyond any
    backoff delay), then check that no other WebSocket was created. Needs
    ``open_harness(..., fake_clock=True)``; no real time passes."""
    page.clock.run_for(600_000)
    assert page.evaluate("window.socketsCreated") == sockets
