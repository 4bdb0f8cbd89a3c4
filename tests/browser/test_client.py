"""trioconn.js in Chromium against a real hub (``hub_server.py``, a subprocess) and an independent server.

Real time, real sockets on 127.0.0.1. Every wait is for a condition with a deadline; that a
reconnect does *not* happen is checked by running the page's timers ten minutes ahead with
Playwright's clock (``no_reconnect``), not by waiting.
"""

from __future__ import annotations

import time

import pytest

from tests._independent_server import Conn, IndependentServer, welcome

from ._harness import changes, hub_stats, new_client, no_reconnect, open_harness, wait_state

INTERVAL, TIMEOUT = 0.3, 0.9  # hub_server's heartbeat in these tests (seconds)
FAST_BACKOFF = "{backoff: {base: 50, cap: 200}}"  # a wrong reconnect would come within 0.2 s


def ws_url(server, hub: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/{hub}"


# -- heartbeat ---------------------------------------------------------------------------------


def test_heartbeat_is_taken_from_the_hubs_welcome(page, hub_server):
    open_harness(page, hub_server)
    new_client(page, ws_url(hub_server, "plain"))
    wait_state(page, "open")
    assert page.evaluate("window.client.heartbeat") == {
        "interval": INTERVAL * 1000,
        "timeout": TIMEOUT * 1000,
    }
    # and the client answers the hub's pings: three in a row, on the hub's schedule
    page.wait_for_function("window.client.statistics().pingsAnswered >= 3", timeout=5000)


def test_heartbeat_is_taken_from_an_independent_servers_welcome(page, hub_server):
    async def odd_heartbeat(conn: Conn) -> None:
        await conn.send(welcome(interval=0.25, timeout=0.8))
        await conn.serve_requests()

    with IndependentServer() as server:
        server.script.append(odd_heartbeat)
        open_harness(page, hub_server)
        new_client(page, server.url)
        wait_state(page, "open")
        assert page.evaluate("window.client.heartbeat") == {"interval": 250, "timeout": 800}
        assert page.evaluate("window.client.session") == "independent"
        page.evaluate("window.client.close()")
        wait_state(page, "closed")


# -- close 1000 ends the client for good ---------------------------------------------------------


def test_close_1000_from_the_hub_ends_the_client_without_reconnecting(page, hub_server):
    open_harness(page, hub_server, fake_clock=True)
    new_client(page, ws_url(hub_server, "plain"), FAST_BACKOFF)
    wait_state(page, "open")
    assert hub_server.call("POST", "/control/plain/close?code=1000&reason=work%20done") == {"closed": 1}
    wait_state(page, "closed")
    assert page.evaluate("window.clientEnded") is None  # `closed` resolved: a normal end
    last = changes(page)[-1]
    assert (last["state"], last["code"], last["error"]["name"]) == ("closed", 1000, "ConnectionClosed"), last
    no_reconnect(page)
    stats = hub_stats(hub_server, "plain")
    assert (stats["accepted"], stats["connections"]) == (1, 0), stats
    assert [c["state"] for c in changes(page)][-1] == "closed"


def test_close_1000_from_an_independent_server_ends_the_client_without_reconnecting(page, hub_server):
    async def done_at_once(conn: Conn) -> None:
        await conn.send(welcome())
        await conn.close(1000, "work done")

    with IndependentServer() as server:
        server.script.append(done_at_once)
        open_harness(page, hub_server, fake_clock=True)
        new_client(page, server.url, FAST_BACKOFF)
        wait_state(page, "closed")
        assert page.evaluate("window.clientEnded") is None
        no_reconnect(page)
        assert server.connections == 1


# -- a stopped hub is a dead link -----------------------------------------------------------------


def test_a_stopped_hub_is_reported_at_timeout_plus_interval(page, hub_server):
    open_harness(page, hub_server)
    new_client(page, ws_url(hub_server, "plain"), "{WebSocket: WatchedSocket}")
    wait_state(page, "open")
    page.wait_for_function("window.client.statistics().pingsAnswered >= 2", timeout=5000)
    stopped_at = time.time() * 1000
    hub_server.stop()  # SIGSTOP: the sockets stay open, nothing answers
    try:
        wait_state(page, "reconnecting", timeout=TIMEOUT + INTERVAL + 5)
        change = next(c for c in changes(page) if c["state"] == "reconnecting")
        last_frame = page.evaluate("window.lastFrameAt")
    finally:
        hub_server.cont()
    silence = (change["seen"] - last_frame) / 1000
    since_stop = (change["seen"] - stopped_at) / 1000
    # never before timeout + interval of silence (the watchdog re-checks the time when it fires)
    assert silence >= TIMEOUT + INTERVAL - 0.03, (silence, change)
    # and soon after: a loaded machine may run the timer late, but not by seconds
    assert silence <= TIMEOUT + INTERVAL + 1.0, (silence, change)
    assert TIMEOUT - 0.1 <= since_stop <= TIMEOUT + INTERVAL + 1.0, (since_stop, change)
    assert change["error"]["name"] == "ConnectionBroken", change
    assert "heartbeat" in change["error"]["message"], change
    # the hub runs again: the client is back (the attempt pending in the kernel's backlog goes on)
    wait_state(page, "open", timeout=15)


# -- a hidden tab --------------------------------------------------------------------------------

#: Emulates a tab in the background as far as Chromium lets a test: headless Chromium keeps every
#: page visible (another tab in front, a minimized window and focus emulation off all leave
#: visibilityState "visible"), and Page.setWebLifecycleState "frozen" stops all script, which a
#: real background tab does not. So the page itself is told it is hidden (visibilityState,
#: document.hidden, a visibilitychange event), its timers are throttled the way Chrome throttles a
#: background tab that has been hidden for five minutes (intensive wake-up throttling: timers run
#: at most once a minute, aligned to the minute), and the CPU is throttled 4x through CDP. Network
#: events (WebSocket messages) are not throttled, in Chrome as here.
HIDE_TAB = """
(() => {
  const setTimeoutNative = window.setTimeout.bind(window);
  const setIntervalNative = window.setInterval.bind(window);
  const WAKE_UP = 60_000;
  let hidden = false;
  const throttled = (delay) => {
    if (!hidden) return delay;
    const due = performance.now() + (delay || 0);
    return Math.ceil(due / WAKE_UP) * WAKE_UP - performance.now();
  };
  window.setTimeout = (fn, delay, ...args) => setTimeoutNative(fn, throttled(delay), ...args);
  window.setInterval = (fn, delay, ...args) =>
    setIntervalNative(fn, hidden ? Math.max(delay || 0, WAKE_UP) : delay, ...args);
  window.hideTab = () => {
    hidden = true;
    Object.defineProperty(document, "visibilityState", { get: () => "hidden", configurable: true });
    Object.defineProperty(document, "hidden", { get: () => true, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();
"""


def test_a_hidden_tab_keeps_answering_pings(page, hub_server):
    page.add_init_script(HIDE_TAB)
    open_harness(page, hub_server)
    new_client(page, ws_url(hub_server, "plain"))
    wait_state(page, "open")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": 4})
    before = page.evaluate("(window.hideTab(), window.client.statistics().pingsAnswered)")
    assert page.evaluate("document.visibilityState") == "hidden"
    # five heartbeat timeouts' worth of pings, each answered although no timer can run
    pings = int(5 * TIMEOUT / INTERVAL)
    page.wait_for_function(
        f"window.client.statistics().pingsAnswered >= {before + pings} || window.client.state !== 'open'",
        timeout=(5 * TIMEOUT + 10) * 1000,
    )
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
    assert page.evaluate("window.client.state") == "open"
    assert [c["state"] for c in changes(page)] == ["open"], changes(page)
    stats = hub_stats(hub_server, "plain")
    assert stats["disconnects"].get("heartbeat-timeout", 0) == 0, stats
    assert (stats["accepted"], stats["connections"]) == (1, 1), stats


# -- auth refusals as close codes (refuse_with="close") --------------------------------------------


def counting_getter(*tokens: str) -> str:
    """Options with a token getter that returns ``tokens`` in turn (the last one forever)."""
    return f"""{{
      backoff: {{base: 50, cap: 200}},
      token: async () => {{
        const tokens = {list(tokens)!r};
        window.tokenCalls = (window.tokenCalls ?? 0) + 1;
        return tokens[Math.min(window.tokenCalls, tokens.length) - 1];
      }},
    }}"""


def test_4401_calls_the_token_getter_again_and_connects_with_the_fresh_token(page, hub_server):
    open_harness(page, hub_server)
    new_client(page, ws_url(hub_server, "auth"), counting_getter("expired", "good"))
    wait_state(page, "open")
    assert page.evaluate("window.tokenCalls") == 2
    stats = hub_stats(hub_server, "auth")
    assert (stats["refused"], stats["accepted"]) == (1, 1), stats
    assert stats["disconnects"] == {"refused-401": 1}, stats


def test_4401_twice_fails_the_client(page, hub_server):
    open_harness(page, hub_server, fake_clock=True)
    new_client(page, ws_url(hub_server, "auth"), counting_getter("expired"))
    wait_state(page, "closed")
    failure = page.evaluate("window.clientEnded")
    assert failure["name"] == "ReconnectFailed", failure
    assert failure["cause"]["code"] == 4401, failure
    assert page.evaluate("window.tokenCalls") == 2
    no_reconnect(page, sockets=2)
    stats = hub_stats(hub_server, "auth")
    assert (stats["refused"], stats["accepted"]) == (2, 0), stats


@pytest.mark.parametrize(
    ("hub", "token", "cause"),
    [("auth", "forbidden", "refused-403"), ("origin", "good", "refused-403")],
    ids=["authenticate", "allowed_origins"],
)
def test_4403_fails_the_client_with_a_failure_event_and_no_retry(page, hub_server, hub, token, cause):
    open_harness(page, hub_server, fake_clock=True)
    new_client(page, ws_url(hub_server, hub), counting_getter(token))
    wait_state(page, "closed")
    failure = page.evaluate("window.clientEnded")
    assert failure["name"] == "ReconnectFailed", failure
    assert failure["cause"]["code"] == 4403, failure
    [event] = page.evaluate("window.closeEvents")
    assert (event["code"], event["error"]) == (4403, failure), event
    last = changes(page)[-1]
    assert (last["state"], last["code"]) == ("closed", 4403), last
    no_reconnect(page)
    stats = hub_stats(hub_server, hub)
    assert stats["disconnects"] == {cause: 1}, stats
    assert page.evaluate("window.tokenCalls") == 1


# -- TLS -----------------------------------------------------------------------------------------


def test_an_https_page_connects_to_a_relative_url_over_wss(page, start_server, tls):
    import ssl

    certificate = ["--certfile", str(tls["certfile"]), "--keyfile", str(tls["keyfile"])]
    server = start_server("-m", "tests.browser.hub_server", *certificate, name="hub_server (TLS)")
    assert server.url.startswith("https://127.0.0.1:")
    open_harness(page, server)  # chromium trusts the certificate by its key (conftest.py)
    new_client(page, "/ws/plain", "{WebSocket: WatchedSocket}")
    wait_state(page, "open")
    assert page.evaluate("window.openedUrls") == [f"wss://127.0.0.1:{server.port}/ws/plain"]
    stats = server.call(
        "GET", "/control/plain/stats", context=ssl.create_default_context(cafile=tls["cafile"])
    )
    assert stats["connections"] == 1, stats
    # A ws: URL from an https page is mixed content: the browser refuses it at once (no DNS, no
    # socket), and the client fails. (Loopback addresses are exempt, hence another host.)
    new_client(page, "ws://trioconn.invalid/ws", name="insecure")
    wait_state(page, "closed", name="insecure")
    failure = page.evaluate("window.insecureEnded")
    assert failure["name"] == "ReconnectFailed", failure
    assert "cannot open a WebSocket" in failure["message"], failure
