"""Helpers for driving ``harness.html`` (``window.trioconn``, ``record``, ``changes``) from a test."""

from __future__ import annotations

import json
import time
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


def open_harness(page: Any, server: Server) -> None:
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


def hold_still(seconds: float) -> None:
    """The one kind of fixed wait here: a window in which something must *not* happen (a
    reconnect after a final close). Every test that uses it waits for the positive condition
    first, and the window is many times the client's backoff delay."""
    time.sleep(seconds)
