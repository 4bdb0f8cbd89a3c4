// The client's connection life: states, heartbeat, decisions, controls, close. Fake socket + clock.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Client,
  ConnectionBroken,
  ConnectionClosed,
  ProtocolError,
  ReconnectFailed,
  RequestTimeout,
  connect,
} from "../../trioconn/js/trioconn.js";
import { FakeClock, flush, makeFakeWebSocket, record } from "./_fakes.mjs";

const URL_ = "ws://127.0.0.1:9/live";

function setup(options = {}) {
  const WS = makeFakeWebSocket();
  const clock = new FakeClock();
  const client = new Client(URL_, { WebSocket: WS, clock, random: () => 0.5, ...options });
  const states = record(client, "statechange");
  return { WS, clock, client, states };
}

/** The client is over and left nothing behind: no timer, no socket listener. */
async function assertNothingLeft(client, clock, WS) {
  await flush();
  assert.equal(client.state, "closed");
  assert.equal(clock.pending(), 0, `timers left: ${clock.delays()}`);
  for (const ws of WS.all) {
    for (const type of ["message", "close", "open", "error"]) {
      assert.equal(ws.listenerCount(type), 0, `${type} listener left on a socket`);
    }
  }
}

describe("connecting", () => {
  test("starts connecting at once and opens on welcome", async () => {
    const { WS, client, states, clock } = setup();
    assert.equal(client.state, "connecting");
    await flush();
    assert.equal(WS.all.length, 1);
    assert.equal(WS.last.url, URL_);
    const opened = record(client, "open");
    WS.last.welcome({ interval: 2, timeout: 3, session: "abc" });
    assert.equal(client.state, "open");
    assert.deepEqual(opened, [{ session: "abc" }]);
    assert.equal(client.session, "abc");
    assert.deepEqual(client.heartbeat, { interval: 2000, timeout: 3000 });
    assert.equal(states.at(-1).state, "open");
    assert.equal(states.at(-1).reason, "session abc");
    await client.close();
    await assertNothingLeft(client, clock, WS);
  });

  test("connect() resolves on the first welcome", async () => {
    const WS = makeFakeWebSocket();
    const clock = new FakeClock();
    const pending = connect(URL_, { WebSocket: WS, clock });
    await flush();
    WS.last.welcome();
    const client = await pending;
    assert.equal(client.state, "open");
    await client.close();
    await assertNothingLeft(client, clock, WS);
  });

  test("connect() rejects with RequestTimeout after its timeout and closes the client", async () => {
    const WS = makeFakeWebSocket();
    const clock = new FakeClock();
    let client = null;
    const pending = connect(URL_, { WebSocket: WS, clock, timeout: 2500, connectTimeout: 1000, random: () => 1 });
    pending.catch(() => {});
    await clock.advance(2499);
    assert.ok(WS.all.length >= 2, "kept trying within the timeout");
    await clock.advance(1);
    await assert.rejects(pending, RequestTimeout);
    await flush();
    assert.equal(clock.pending(), 0, `timers left: ${clock.delays()}`);
    void client;
  });

  test("a connect timeout (no welcome) is a timeout: reconnect with backoff", async () => {
    const { WS, client, states, clock } = setup({ connectTimeout: 1000 });
    await flush();
    WS.last.open();
    await clock.advance(999);
    assert.equal(WS.all.length, 1);
    assert.equal(WS.last.closedWith, null);
    await clock.advance(1);
    assert.deepEqual(WS.all[0].closedWith, { code: 4000, reason: "connect timeout" });
    const change = states.at(-1);
    assert.equal(change.state, "connecting");
    assert.ok(change.error instanceof ConnectionBroken);
    assert.match(change.reason, /connectTimeout \(1000 ms\)/);
    assert.equal(change.nextAttemptAt, clock.wall() + 250); // delay(1) = 0.5 * 500
    await clock.advance(250);
    assert.equal(WS.all.length, 2);
    await client.close();
    await assertNothingLeft(client, clock, WS);
  });
});
