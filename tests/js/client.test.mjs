// The client's connection life: states, heartbeat, close codes, backoff, controls, close.
// A fake WebSocket plays the server and a fake clock moves time (no real timers, no sleeps).
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, test } from "node:test";

import {
  Backoff,
  Client,
  ConnectionBroken,
  ConnectionClosed,
  ReconnectFailed,
  RequestTimeout,
  connect,
} from "../../trioconn/js/trioconn.js";
import { FakeClock, assertNothingLeft, flush, makeFakeWebSocket, record, setup } from "./_fakes.mjs";

const URL_ = "ws://127.0.0.1:9/live";
const HB = { interval: 2, timeout: 3 }; // seconds on the wire: a 5000 ms dead-link window

describe("connecting", () => {
  test("starts connecting at once and opens on welcome", async () => {
    const env = await setup(Client);
    const { WS, client, states } = env;
    assert.equal(client.state, "connecting");
    assert.deepEqual(states, [], "no event before the page could listen");
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
    assert.equal(states.at(-1).time, env.clock.wall());
    await client.close();
    await assertNothingLeft(assert, env);
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
    await assertNothingLeft(assert, { client, clock, WS });
  });

  test("connect() rejects with RequestTimeout after its timeout, and the client is closed", async () => {
    const WS = makeFakeWebSocket();
    const clock = new FakeClock();
    const pending = connect(URL_, { WebSocket: WS, clock, timeout: 2500, connectTimeout: 1000, random: () => 1 });
    pending.catch(() => {});
    await clock.advance(2499);
    assert.ok(WS.all.length >= 2, "it kept trying within the timeout");
    await clock.advance(1);
    await assert.rejects(pending, { name: "RequestTimeout", message: /no connection within timeout \(2500 ms\)/ });
    await flush();
    assert.equal(clock.pending(), 0, `timers left: ${clock.delays()}`);
    assert.ok(WS.all.every((ws) => ws.readyState >= 2));
  });

  test("connect() rejects with ReconnectFailed when the client fails first", async () => {
    const WS = makeFakeWebSocket();
    const clock = new FakeClock();
    const pending = connect(URL_, { WebSocket: WS, clock });
    await flush();
    WS.last.open();
    WS.last.serverClose(4403, "forbidden");
    const failure = await pending.catch((exc) => exc);
    assert.ok(failure instanceof ReconnectFailed);
    assert.equal(failure.cause.code, 4403);
    assert.equal(clock.pending(), 0);
  });

  test("connect() rejects with the signal's reason when aborted, and closes the client", async () => {
    const WS = makeFakeWebSocket();
    const clock = new FakeClock();
    const controller = new AbortController();
    const pending = connect(URL_, { WebSocket: WS, clock, signal: controller.signal });
    await flush();
    const reason = new Error("page left");
    controller.abort(reason);
    assert.equal(await pending.catch((exc) => exc), reason);
    await flush();
    assert.deepEqual(WS.last.closedWith, { code: 1000, reason: "client closed" });
    assert.equal(clock.pending(), 0);
    const already = new AbortController();
    already.abort(reason);
    assert.equal(await connect(URL_, { WebSocket: WS, clock, signal: already.signal }).catch((exc) => exc), reason);
  });

  test("no welcome within connectTimeout is a timeout: the socket is dropped and retried after a backoff", async () => {
    const env = await setup(Client, { connectTimeout: 1000 });
    const { WS, client, states, clock } = env;
    WS.last.open();
    await clock.advance(999);
    assert.equal(WS.last.closedWith, null);
    await clock.advance(1);
    assert.deepEqual(WS.all[0].closedWith, { code: 4000, reason: "connect timeout" });
    assert.equal(WS.all[0].listenerCount("message"), 0, "the dropped socket is not listened to");
    const change = states.at(-1);
    assert.equal(change.state, "connecting", "never open yet: still connecting");
    assert.ok(change.error instanceof ConnectionBroken);
    assert.match(change.reason, /no welcome from the server within connectTimeout \(1000 ms\)/);
    assert.equal(change.nextAttemptAt, clock.wall() + 250); // 0.5 * base 500
    await clock.advance(249);
    assert.equal(WS.all.length, 1);
    await clock.advance(1);
    assert.equal(WS.all.length, 2);
    await client.close();
    await assertNothingLeft(assert, env);
  });
});

describe("heartbeat", () => {
  test("pong is sent synchronously from the message handler, and counted", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const ws = env.WS.last;
    ws.receive({ type: "ping", id: 41, rtt: 0.012 });
    // no await: the pong went out inside the message event
    assert.deepEqual(ws.frames.at(-1), { type: "pong", id: 41 });
    ws.receive({ type: "batch", frames: [{ type: "ping", id: 42 }, { type: "ping", id: 43 }] });
    assert.deepEqual(ws.frames.slice(-2), [{ type: "pong", id: 42 }, { type: "pong", id: 43 }]);
    const stats = env.client.statistics();
    assert.equal(stats.pingsAnswered, 3);
    assert.equal(stats.lastRtt, 12);
    await env.client.close();
  });

  test("the dead-link watchdog fires at timeout + interval of silence, not before", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const { WS, clock, states } = env;
    await clock.advance(4999);
    assert.equal(env.client.state, "open");
    await clock.advance(1);
    assert.equal(env.client.state, "reconnecting");
    const change = states.at(-1);
    assert.ok(change.error instanceof ConnectionBroken);
    assert.equal(change.code, 1006);
    assert.match(change.reason, /^connection closed with code 1006: heartbeat: nothing from the server for 5000 ms \(its timeout 3000 ms \+ one ping interval 2000 ms\)/);
    // the silent socket is abandoned at once, without waiting for a closing handshake
    assert.deepEqual(WS.all[0].closedWith, { code: 4000, reason: "heartbeat timeout" });
    assert.equal(WS.all[0].listenerCount("close"), 0);
    await env.client.close();
    await assertNothingLeft(assert, env);
  });

  test("every message moves the window: a link that keeps talking is never cut", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    for (let i = 0; i < 20; i++) {
      await env.clock.advance(4000);
      env.WS.last.receive({ type: "ping", id: i });
    }
    assert.equal(env.client.state, "open");
    assert.equal(env.clock.pending(), 1, "one watchdog timer, not one per message");
    await env.client.close();
  });

  test("a throttled (late) timer does not cut a link that was heard from in the meantime", async () => {
    const env = await setup(Client);
    env.clock.lateBy = 60_000; // a background tab: timers fire a minute late
    env.WS.last.welcome(HB);
    for (let i = 0; i < 100; i++) {
      await env.clock.advance(2000);
      env.WS.last.receive({ type: "ping", id: i }); // messages are not throttled
    }
    assert.equal(env.client.state, "open");
    assert.equal(env.WS.last.frames.length, 100, "every ping answered");
    await env.client.close();
  });

  test("a timer that fires early (before performance.now() says) re-arms instead of cutting", async () => {
    const env = await setup(Client);
    env.clock.earlyBy = 1500;
    env.WS.last.welcome(HB);
    await env.clock.advance(4999);
    assert.equal(env.client.state, "open");
    await env.clock.advance(1);
    assert.equal(env.client.state, "reconnecting");
    await env.client.close();
  });

  test("a late timer still cuts a link that really went silent, with the real silence", async () => {
    const env = await setup(Client);
    env.clock.lateBy = 7000;
    env.WS.last.welcome(HB);
    await env.clock.advance(11_999);
    assert.equal(env.client.state, "open");
    await env.clock.advance(1);
    assert.equal(env.client.state, "reconnecting");
    assert.match(env.states.at(-1).reason, /nothing from the server for 12000 ms/);
    await env.client.close();
  });

  test("the heartbeat comes from each welcome", async () => {
    const env = await setup(Client, {}, { welcome: { interval: 0.5, timeout: 0.5 } });
    await env.clock.advance(1000);
    assert.equal(env.client.state, "reconnecting");
    await env.clock.advance(250);
    env.WS.last.welcome({ interval: 10, timeout: 20 });
    assert.deepEqual(env.client.heartbeat, { interval: 10000, timeout: 20000 });
    await env.clock.advance(29_999);
    assert.equal(env.client.state, "open");
    await env.clock.advance(1);
    assert.equal(env.client.state, "reconnecting");
    await env.client.close();
  });
});

describe("close codes", () => {
  test("1000 closes for good: no reconnect, closed resolves, subscriptions end", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const { WS, client, states, clock } = env;
    const closes = record(client, "close");
    const sub = client.subscribe("jobs/1");
    const iteration = (async () => { for await (const item of sub) void item; return "ended"; })();
    WS.last.serverClose(1000, "job done");
    await flush();
    assert.equal(client.state, "closed");
    assert.deepEqual({ ...states.at(-1), error: undefined, time: undefined }, {
      state: "closed", code: 1000, reason: "job done", error: undefined, nextAttemptAt: null, paused: false, time: undefined,
    });
    assert.ok(states.at(-1).error instanceof ConnectionClosed);
    assert.deepEqual(closes, [{ code: 1000, reason: "job done", error: null }]);
    await client.closed;
    assert.equal(await iteration, "ended");
    await clock.advance(600_000);
    assert.equal(WS.all.length, 1, "never reconnected");
    await assertNothingLeft(assert, env);
  });

  test("4401 refreshes the token once; a second 4401 fails", async () => {
    let calls = 0;
    const env = await setup(Client, { token: async () => `token-${++calls}` }, { welcome: HB });
    const { WS, client, states } = env;
    assert.match(WS.last.url, /token=token-1$/);
    WS.last.serverClose(4401, "expired");
    await flush();
    assert.equal(WS.all.length, 2, "reconnected at once, without waiting for a backoff");
    assert.match(WS.last.url, /token=token-2$/);
    assert.equal(states.at(-1).state, "reconnecting");
    assert.equal(states.at(-1).code, 4401);
    WS.last.open();
    WS.last.serverClose(4401, "still expired");
    await flush();
    assert.equal(client.state, "closed");
    const failure = states.at(-1).error;
    assert.ok(failure instanceof ReconnectFailed);
    assert.equal(failure.exhausted, false);
    assert.equal(failure.cause.code, 4401);
    assert.equal(calls, 2);
    await assert.rejects(client.closed, ReconnectFailed);
    await assertNothingLeft(assert, env);
  });

  test("the fresh-token retry comes back after a healthy link", async () => {
    let calls = 0;
    const env = await setup(Client, { token: () => `t${++calls}`, minUptime: 1000 }, { welcome: HB });
    const { WS, client, clock } = env;
    WS.last.serverClose(4401, "expired");
    await flush();
    WS.last.welcome(HB);
    await clock.advance(1000);
    WS.last.serverClose(4401, "expired again, later");
    await flush();
    assert.equal(client.state, "reconnecting");
    assert.equal(calls, 3);
    await client.close();
  });

  test("4401 without a token getter fails at once", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.WS.last.serverClose(4401, "who are you");
    await flush();
    assert.equal(env.client.state, "closed");
    assert.equal(env.WS.all.length, 1);
  });

  for (const code of [4403, 1008, 1002, 2000]) {
    test(`${code} fails with no retry`, async () => {
      const env = await setup(Client, {}, { welcome: HB });
      const closes = record(env.client, "close");
      env.WS.last.serverClose(code, "no");
      await flush();
      assert.equal(env.client.state, "closed");
      assert.ok(closes[0].error instanceof ReconnectFailed);
      assert.equal(closes[0].code, code);
      await env.clock.advance(600_000);
      assert.equal(env.WS.all.length, 1);
      await assertNothingLeft(assert, env);
    });
  }

  test("4403 before welcome (a hub refusing in close mode) fails too", async () => {
    const env = await setup(Client);
    env.WS.last.open();
    env.WS.last.serverClose(4403, "origin not allowed");
    await flush();
    assert.equal(env.client.state, "closed");
    assert.match(env.states.at(-1).reason, /connection failed for good: connection closed with code 4403: origin not allowed/);
  });

  test("closeCodes overrides the table", async () => {
    const env = await setup(Client, { closeCodes: { 4403: "reconnect", 1012: "fail" } }, { welcome: HB });
    env.WS.last.serverClose(4403, "");
    await flush();
    assert.equal(env.client.state, "reconnecting");
    await env.clock.advance(250);
    env.WS.last.welcome(HB);
    env.WS.last.serverClose(1012, "");
    await flush();
    assert.equal(env.client.state, "closed");
  });

  for (const [what, end] of [["1006 (no close frame)", (ws) => ws.fail()], ["1015 (TLS failure)", (ws) => ws.serverClose(1015, "")], ["1001", (ws) => ws.serverClose(1001, "bye")], ["4000", (ws) => ws.serverClose(4000, "")]]) {
    test(`${what} reconnects after a jittered backoff`, async () => {
      const env = await setup(Client, {}, { welcome: HB });
      end(env.WS.last);
      await flush();
      const change = env.states.at(-1);
      assert.equal(change.state, "reconnecting");
      assert.equal(change.nextAttemptAt, env.clock.wall() + 250);
      await env.clock.advance(250);
      assert.equal(env.WS.all.length, 2);
      await env.client.close();
    });
  }
});

describe("backoff and counting", () => {
  test("the delays grow while links stay short and start again after a healthy one", async () => {
    const env = await setup(Client, { random: () => 1, minUptime: 10_000 });
    const { WS, clock, states } = env;
    const waits = [];
    for (let i = 0; i < 4; i++) {
      WS.last.fail();
      await flush();
      waits.push(states.at(-1).nextAttemptAt - clock.wall());
      await clock.advance(waits.at(-1));
    }
    assert.deepEqual(waits, [500, 1000, 2000, 4000]);
    WS.last.welcome(HB);
    for (let i = 0; i < 3; i++) {
      await clock.advance(3333);
      WS.last.receive({ type: "ping", id: i });
    }
    WS.last.fail(); // open 9.999 s: shorter than minUptime, so still a failure
    await flush();
    assert.equal(states.at(-1).nextAttemptAt - clock.wall(), 8000);
    await clock.advance(8000);
    WS.last.welcome(HB);
    await clock.advance(4000);
    WS.last.receive({ type: "ping", id: 2 });
    await clock.advance(4000);
    WS.last.receive({ type: "ping", id: 3 });
    await clock.advance(2000);
    WS.last.fail(); // open 10 s: healthy, the backoff starts again
    await flush();
    assert.equal(states.at(-1).nextAttemptAt - clock.wall(), 500);
    await env.client.close();
    await assertNothingLeft(assert, env);
  });

  test("maxAttempts: the client gives up with ReconnectFailed(exhausted)", async () => {
    const env = await setup(Client, { backoff: { maxAttempts: 3 } });
    const { WS, clock, client } = env;
    WS.last.fail();
    await clock.advance(30_000);
    WS.last.fail();
    await clock.advance(30_000);
    assert.equal(WS.all.length, 3);
    WS.last.fail();
    await flush();
    assert.equal(client.state, "closed");
    const failure = env.states.at(-1).error;
    assert.ok(failure instanceof ReconnectFailed);
    assert.equal(failure.exhausted, true);
    assert.match(failure.message, /^gave up after 3 failed attempt\(s\) in a row; last: connection closed with code 1006/);
    assert.ok(failure.cause instanceof ConnectionBroken);
    await assertNothingLeft(assert, env);
  });

  test("timers that fire early never start an attempt or a connect timeout early", async () => {
    const env = await setup(Client, { connectTimeout: 1000 });
    env.clock.earlyBy = 200;
    env.WS.last.fail();
    await env.clock.advance(249);
    assert.equal(env.WS.all.length, 1, "the 250 ms wait is not cut short");
    await env.clock.advance(1);
    assert.equal(env.WS.all.length, 2);
    await env.clock.advance(999);
    assert.equal(env.WS.last.closedWith, null, "the connect timeout is not cut short");
    await env.clock.advance(1);
    assert.deepEqual(env.WS.last.closedWith, { code: 4000, reason: "connect timeout" });
    await env.client.close();
  });

  test("a Backoff instance is used as given", async () => {
    const env = await setup(Client, { backoff: new Backoff({ base: 100, cap: 100 }), random: () => 1 });
    env.WS.last.fail();
    await flush();
    assert.equal(env.states.at(-1).nextAttemptAt - env.clock.wall(), 100);
    await env.client.close();
  });
});

describe("pause, resume, reconnectNow", () => {
  test("pause() makes the wait open-ended; resume() restores the deadline", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const { WS, clock, client, states } = env;
    client.pause();
    assert.equal(client.paused, true);
    assert.equal(client.state, "open", "the connection is not touched");
    assert.deepEqual([states.at(-1).state, states.at(-1).paused], ["open", true]);
    WS.last.fail();
    await flush();
    assert.deepEqual([states.at(-1).state, states.at(-1).nextAttemptAt, states.at(-1).paused], ["reconnecting", null, true]);
    await clock.advance(3_600_000);
    assert.equal(WS.all.length, 1, "no attempt while paused");
    assert.equal(client.statistics().nextAttemptAt, null);
    client.resume();
    assert.equal(states.at(-1).paused, false);
    await flush();
    assert.equal(WS.all.length, 2, "the delay had passed: attempt at once");
    WS.last.fail();
    await flush();
    const deadline = states.at(-1).nextAttemptAt;
    client.pause();
    await clock.advance(100);
    client.resume();
    assert.equal(states.at(-1).nextAttemptAt, deadline, "resume() restores the same deadline");
    await clock.advance(deadline - clock.wall() - 1);
    assert.equal(WS.all.length, 2);
    await clock.advance(1);
    assert.equal(WS.all.length, 3);
    await client.close();
    await assertNothingLeft(assert, env);
  });

  test("reconnectNow() skips the rest of the wait, paused or not; false when not waiting", async () => {
    const env = await setup(Client, { random: () => 1 }, { welcome: HB });
    const { WS, clock, client, states } = env;
    assert.equal(client.reconnectNow(), false);
    WS.last.fail();
    await flush();
    assert.equal(states.at(-1).nextAttemptAt, clock.wall() + 500);
    assert.equal(client.reconnectNow(), true);
    assert.equal(states.at(-1).nextAttemptAt, clock.wall());
    assert.equal(client.reconnectNow(), false, "once per wait");
    await flush();
    assert.equal(WS.all.length, 2);
    client.pause();
    WS.last.fail();
    await flush();
    assert.equal(client.reconnectNow(), true);
    await flush();
    assert.equal(WS.all.length, 3);
    assert.equal(client.statistics().attempts, 3);
    await client.close();
    assert.equal(client.reconnectNow(), false);
    await assertNothingLeft(assert, env);
  });
});

describe("close", () => {
  test("close() sends 1000, resolves after the closing handshake, and is idempotent", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const { WS, client, states } = env;
    const closes = record(client, "close");
    const first = client.close();
    assert.equal(client.state, "closed", "closed at once");
    assert.deepEqual(WS.last.closedWith, { code: 1000, reason: "client closed" });
    assert.equal(client.close(), first);
    await first;
    await client.closed;
    assert.deepEqual(closes, [{ code: 1000, reason: "closed by the client", error: null }]);
    assert.equal(states.at(-1).reason, "closed by the client");
    await assertNothingLeft(assert, env);
  });

  test("close() waits at most 5 s for a server that never answers the close frame", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.WS.onClientClose = "none";
    let done = false;
    const closing = env.client.close().then(() => (done = true));
    await env.clock.advance(4999);
    assert.equal(done, false);
    await env.clock.advance(1);
    await closing;
    await assertNothingLeft(assert, env);
  });

  test("close() while connecting, while waiting, and before the first attempt leaves nothing behind", async () => {
    const connecting = await setup(Client);
    await connecting.client.close();
    await assertNothingLeft(assert, connecting);

    const waiting = await setup(Client, {}, { welcome: HB });
    waiting.WS.last.fail();
    await flush();
    assert.equal(waiting.client.state, "reconnecting");
    await waiting.client.close();
    await waiting.clock.advance(60_000);
    assert.equal(waiting.WS.all.length, 1);
    await assertNothingLeft(assert, waiting);

    const WS = makeFakeWebSocket();
    const clock = new FakeClock();
    const early = new Client(URL_, { WebSocket: WS, clock });
    await early.close();
    await flush();
    assert.equal(WS.all.length, 0, "closed before the first attempt: no socket");
    assert.equal(clock.pending(), 0);
  });

  test("close() while the token getter is still running opens no socket", async () => {
    let release;
    const env = await setup(Client, { token: () => new Promise((resolve) => (release = resolve)) });
    await env.client.close();
    release("late-token");
    await flush();
    assert.equal(env.WS.all.length, 0);
    assert.equal(env.clock.pending(), 0);
  });

  test("aborting the signal closes the client with 1000", async () => {
    const controller = new AbortController();
    const env = await setup(Client, { signal: controller.signal }, { welcome: HB });
    controller.abort();
    assert.equal(env.client.state, "closed");
    assert.deepEqual(env.WS.last.closedWith, { code: 1000, reason: "client closed" });
    await env.client.closed;
    await assertNothingLeft(assert, env);
    const aborted = new AbortController();
    aborted.abort();
    const WS = makeFakeWebSocket();
    const client = new Client(URL_, { WebSocket: WS, signal: aborted.signal });
    await client.closed;
    assert.equal(client.state, "closed");
    assert.equal(WS.all.length, 0);
  });

  test("the client's abort listener is removed however the client ends", async () => {
    for (const end of [(env) => env.client.close(), (env) => env.WS.last.serverClose(1000, ""), (env) => env.WS.last.serverClose(4403, "")]) {
      const controller = new AbortController();
      const env = await setup(Client, { signal: controller.signal }, { welcome: HB });
      assert.equal(getEventListeners(controller.signal, "abort").length, 1);
      await end(env);
      await flush();
      assert.equal(env.client.state, "closed");
      assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    }
  });

  test("connect() removes its listeners from the client once settled", async () => {
    const WS = makeFakeWebSocket();
    const clock = new FakeClock();
    const pending = connect(URL_, { WebSocket: WS, clock, timeout: 5000 });
    await flush();
    WS.last.welcome(HB);
    const client = await pending;
    assert.equal(clock.pending(), 1, "connect()'s timer is gone; only the watchdog is left");
    const closes = record(client, "close");
    await client.close();
    assert.equal(closes.length, 1);
    await assertNothingLeft(assert, { client, clock, WS });
  });

  test("a listener that closes the client inside 'open' stops everything cleanly", async () => {
    const env = await setup(Client, {});
    env.client.addEventListener("open", () => void env.client.close());
    const sub = env.client.subscribe("t");
    env.WS.last.welcome(HB);
    assert.equal(env.client.state, "closed");
    assert.equal(env.WS.last.frames[0].type, "subscribe");
    void sub;
    await env.client.closed;
    await assertNothingLeft(assert, env);
  });
});

describe("observing", () => {
  test("stateChanges() yields the current state first and ends after closed", async () => {
    const env = await setup(Client);
    const seen = [];
    const reading = (async () => {
      for await (const change of env.client.stateChanges()) seen.push([change.state, change.code]);
    })();
    env.WS.last.welcome(HB);
    env.WS.last.serverClose(1012, "restart");
    await flush();
    await env.clock.advance(250);
    env.WS.last.welcome(HB);
    env.WS.last.serverClose(1000, "done");
    await reading;
    assert.deepEqual(seen, [["connecting", null], ["open", null], ["reconnecting", 1012], ["open", null], ["closed", 1000]]);
    const late = [];
    for await (const change of env.client.stateChanges()) late.push(change.state);
    assert.deepEqual(late, ["closed"]);
  });

  test("a stateChanges() reader that stops early removes its listener", async () => {
    const env = await setup(Client);
    const before = getEventListeners(env.client, "statechange").length;
    for await (const change of env.client.stateChanges()) {
      assert.equal(getEventListeners(env.client, "statechange").length, before + 1);
      if (change.state === "connecting") break;
    }
    assert.equal(getEventListeners(env.client, "statechange").length, before);
    await env.client.close();
  });

  test("a stateChanges() reader that falls behind skips to the oldest of the last 64", async () => {
    const env = await setup(Client);
    const changes = env.client.stateChanges();
    for (let i = 0; i < 50; i++) {
      env.client.pause();
      env.client.resume();
    }
    // 101 changes (the current one, then 50 pauses and 50 resumes): the 64 last ones are kept
    const kept = [];
    for (let i = 0; i < 64; i++) kept.push((await changes.next()).value);
    assert.deepEqual(kept.map((change) => change.paused), Array.from({ length: 64 }, (_, i) => i % 2 === 0));
    await env.client.close();
    assert.equal((await changes.next()).value.state, "closed");
    assert.deepEqual(await changes.next(), { value: undefined, done: true });
  });

  test("statistics() counts attempts, connects, reconnects, events and resets", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const { WS, client, clock } = env;
    client.subscribe("t");
    WS.last.receive({ type: "subscribed", topic: "t", epoch: "e", offset: 0, kind: "stream", replayed: 0, ended: false, ref: 1 });
    WS.last.receive({ type: "event", topic: "t", offset: 1, data: 1 });
    WS.last.receive({ type: "event", topic: "t", offset: 1, data: 1 });
    WS.last.fail();
    await clock.advance(250);
    WS.last.welcome(HB);
    WS.last.receive({ type: "reset", topic: "t", epoch: "f", offset: 9, kind: "stream", replayed: 0, ended: false, ref: WS.last.frames[0].ref });
    assert.deepEqual(client.statistics(), {
      state: "open", attempts: 2, connects: 2, reconnects: 1, pingsAnswered: 0, lastRtt: null,
      eventsReceived: 2, resets: 1, subscriptions: 1, nextAttemptAt: null, paused: false,
    });
    await client.close();
  });

  test("every statechange detail is frozen and carries no token", async () => {
    const env = await setup(Client, { token: () => "zzsecretzz" }, { welcome: HB });
    env.WS.last.serverClose(1012, "restart zzsecretzz");
    await flush();
    for (const detail of env.states) {
      assert.ok(Object.isFrozen(detail));
      assert.ok(!JSON.stringify({ ...detail, error: String(detail.error) }).includes("zzsecretzz"));
    }
    await env.client.close();
  });
});
