// Frames from the server that break protocol v1 fail the client; URLs, tokens, argument checks.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Client, ProtocolError, ReconnectFailed, connect } from "../../trioconn/js/trioconn.js";
import { FakeClock, assertNothingLeft, flush, makeFakeWebSocket, record, setup } from "./_fakes.mjs";

const WELCOME = { type: "welcome", version: 1, session: "s", heartbeat: { interval: 1, timeout: 2 }, max_frame_size: 100 };

/** Send `message` as the server and check that it fails the client with ProtocolError `code`. */
async function assertFails(message, code, { before = true } = {}) {
  const env = await setup(Client, {}, { welcome: before ? null : { interval: 1, timeout: 2 } });
  const { WS, client, states } = env;
  const closes = record(client, "close");
  if (before) WS.last.open();
  WS.last.receive(message);
  await flush();
  assert.equal(client.state, "closed", `${code}: ${String(message).slice(0, 80)}`);
  const failure = states.at(-1).error;
  assert.ok(failure instanceof ReconnectFailed);
  assert.ok(failure.cause instanceof ProtocolError, String(failure.cause));
  assert.equal(failure.cause.code, code, failure.cause.message);
  assert.equal(closes.length, 1);
  assert.equal(closes[0].error, failure);
  assert.deepEqual(WS.all[0].closedWith, { code: 4002, reason: "protocol error" });
  assert.equal(WS.all.length, 1, "no reconnect after a protocol error");
  await assert.rejects(client.closed, ReconnectFailed);
  await assertNothingLeft(assert, env);
  return failure.cause;
}

describe("protocol errors fail the client (close 4002, no reconnect)", () => {
  test("a welcome whose heartbeat is out of 0.01-3600 s", async () => {
    for (const heartbeat of [{ interval: 0, timeout: 2 }, { interval: 1, timeout: 3601 }, { interval: 0.009, timeout: 1 }, { interval: "1", timeout: 1 }, { interval: 1 }]) {
      const error = await assertFails({ ...WELCOME, heartbeat }, "invalid-field");
      assert.match(error.message, /must be a number of seconds from 0.01 to 3600/);
    }
    await assertFails({ ...WELCOME, heartbeat: null }, "invalid-field");
    await assertFails({ ...WELCOME, heartbeat: [1, 2] }, "invalid-field");
  });

  test("a welcome with another version, or without its fields", async () => {
    const error = await assertFails({ ...WELCOME, version: 2 }, "invalid-field");
    assert.match(error.message, /field 'version' is 2; this client speaks version 1/);
    await assertFails({ ...WELCOME, session: 5 }, "invalid-field");
    await assertFails({ ...WELCOME, max_frame_size: -1 }, "invalid-field");
  });

  test("a first frame that is not a lone welcome", async () => {
    await assertFails({ type: "ping", id: 1 }, "unexpected-frame");
    await assertFails({ type: "batch", frames: [WELCOME] }, "unknown-type");
  });

  test("a second welcome", async () => {
    await assertFails(WELCOME, "unexpected-frame", { before: false });
  });

  test("invalid JSON, a non-object, an unknown type, a binary frame", async () => {
    await assertFails("{not json", "invalid-json", { before: false });
    await assertFails("NaN", "invalid-json", { before: false });
    await assertFails("[1]", "not-an-object", { before: false });
    await assertFails({ type: "nope" }, "unknown-type", { before: false });
    await assertFails({ topic: "x" }, "unknown-type", { before: false });
    await assertFails(new ArrayBuffer(4), "binary-frame", { before: false });
  });

  test("nesting deeper than 35 levels; 35 is fine", async () => {
    const nest = (depth) => "[".repeat(depth) + "]".repeat(depth);
    // an event frame is one level, its data the rest: 35 levels in all is accepted
    const ok = await setup(Client, {}, { welcome: { interval: 1, timeout: 2 } });
    ok.WS.last.receive(`{"type":"event","topic":"t","offset":1,"data":${nest(34)}}`);
    await flush();
    assert.equal(ok.client.state, "open");
    await ok.client.close();
    const error = await assertFails(`{"type":"event","topic":"t","offset":1,"data":${nest(35)}}`, "invalid-json", { before: false });
    assert.match(error.message, /nested more than 35 levels/);
    // brackets inside strings do not count
    const strings = await setup(Client, {}, { welcome: { interval: 1, timeout: 2 } });
    strings.WS.last.receive({ type: "event", topic: "t", offset: 1, data: "[[[[".repeat(20) + '\\"{{{{'.repeat(20) });
    await flush();
    assert.equal(strings.client.state, "open");
    await strings.client.close();
  });

  test("a number JSON cannot hold (1e999)", async () => {
    const error = await assertFails('{"type":"event","topic":"t","offset":1,"data":{"x":[1e999]}}', "invalid-field", { before: false });
    assert.match(error.message, /finite/);
  });

  test("bad fields in every server frame", async () => {
    const cases = [
      { type: "ping" },
      { type: "ping", id: -1 },
      { type: "event", topic: "", offset: 1 },
      { type: "event", topic: "t\n", offset: 1 },
      { type: "event", topic: "x".repeat(257), offset: 1 },
      { type: "event", topic: "t", offset: 1.5 },
      { type: "event", topic: "t" },
      { type: "subscribed", topic: "t", epoch: 1, offset: 0 },
      { type: "subscribed", topic: "t", epoch: "e", offset: 0, kind: "queue" },
      { type: "reset", topic: "t", epoch: "e", offset: 0, replayed: -2 },
      { type: "subscribed", topic: "t", epoch: "e", offset: 0, ref: true },
      { type: "subscribed", topic: "t", epoch: "e", offset: 0, ref: "r".repeat(129) },
      { type: "end", topic: "t" },
      { type: "published", topic: "t", offset: "1" },
      { type: "unsubscribed", topic: 3 },
      { type: "error", code: "x" },
      { type: "error", message: "x" },
      { type: "reply", data: 1 },
      { type: "reply", ref: true, data: 1 },
      { type: "join", topic: "t", session: "s" },
      { type: "join", topic: "t", session: "s", since: -1 },
      { type: "join", topic: "t", session: "s", since: "now" },
      { type: "join", topic: "t", session: 5, since: 1 },
      { type: "join", topic: "t", session: "s".repeat(129), since: 1 },
      { type: "leave", topic: "t" },
      { type: "leave", session: "s" },
      { type: "subscribed", topic: "t", epoch: "e", offset: 0, presence: {} },
      { type: "subscribed", topic: "t", epoch: "e", offset: 0, presence: [3] },
      { type: "subscribed", topic: "t", epoch: "e", offset: 0, presence: [{ session: "s" }] },
      { type: "batch", frames: {} },
      { type: "batch", frames: [{ type: "batch", frames: [] }] },
      { type: "batch", frames: [3] },
    ];
    for (const frame of cases) {
      const expected = frame.type === "batch" && Array.isArray(frame.frames)
        ? (typeof frame.frames[0] === "number" ? "not-an-object" : "unknown-type")
        : "invalid-field";
      await assertFails(frame, expected, { before: false });
    }
  });

  test("a topic of 256 characters outside the BMP is valid (code points, not UTF-16 units)", async () => {
    const env = await setup(Client, {}, { welcome: { interval: 1, timeout: 2 } });
    env.WS.last.receive({ type: "end", topic: "😀".repeat(256), offset: 1 });
    await flush();
    assert.equal(env.client.state, "open");
    await env.client.close();
    await assertFails({ type: "end", topic: "😀".repeat(257), offset: 1 }, "invalid-field", { before: false });
  });

  test("unknown fields are ignored; an out-of-range ping rtt is not an error", async () => {
    const env = await setup(Client, {}, { welcome: { interval: 1, timeout: 2 } });
    env.WS.last.receive({ type: "ping", id: 3, rtt: -5, later: { field: true } });
    env.WS.last.receive({ type: "unsubscribed", topic: "t", extra: 1 });
    await flush();
    assert.equal(env.client.state, "open");
    assert.equal(env.client.statistics().lastRtt, null);
    await env.client.close();
  });
});

describe("urls", () => {
  async function urlOf(url, location) {
    const saved = Object.getOwnPropertyDescriptor(globalThis, "location");
    if (location !== undefined) Object.defineProperty(globalThis, "location", { value: { href: location }, configurable: true });
    try {
      const env = await setup(Client, {}, { url });
      const seen = env.WS.last.url;
      await env.client.close();
      return seen;
    } finally {
      if (saved) Object.defineProperty(globalThis, "location", saved);
      else delete globalThis.location;
    }
  }

  test("relative urls follow the page, and its scheme (wss: on https:)", async () => {
    assert.equal(await urlOf("/ws", "https://example.com/app/page.html?x=1"), "wss://example.com/ws");
    assert.equal(await urlOf("ws", "http://127.0.0.1:8000/app/"), "ws://127.0.0.1:8000/app/ws");
    assert.equal(await urlOf("/live?room=1#frag", "http://h:1/"), "ws://h:1/live?room=1");
  });

  test("http(s) maps to ws(s); ws(s) is kept even on an https page", async () => {
    assert.equal(await urlOf("https://h/live"), "wss://h/live");
    assert.equal(await urlOf("http://h:8/live"), "ws://h:8/live");
    assert.equal(await urlOf("ws://h/live", "https://page/"), "ws://h/live");
    assert.equal(await urlOf(new URL("wss://h/x")), "wss://h/x");
  });

  test("the token goes into the query, replacing one already there", async () => {
    const env = await setup(Client, { token: () => "a+b/c=" }, { url: "ws://h/live?token=old&room=2" });
    const url = new URL(env.WS.last.url);
    assert.deepEqual(url.searchParams.getAll("token"), ["a+b/c="]);
    assert.equal(url.searchParams.get("room"), "2");
    await env.client.close();
  });

  test("a missing, relative (without a page) or non-WebSocket url is a TypeError", () => {
    assert.throws(() => new Client(), { name: "TypeError", message: /url must be/ });
    assert.throws(() => new Client(""), { name: "TypeError", message: /url must be/ });
    assert.throws(() => new Client("/ws"), { name: "TypeError", message: /url "\/ws" is not a valid URL \(a relative url needs a page\)/ });
    assert.throws(() => new Client("ftp://h/x"), { name: "TypeError", message: /url must be ws:, wss:, http:, https: or relative, got ftp:/ });
  });
});

describe("the token never shows", () => {
  test("a close reason echoing the token is redacted, raw or url-encoded", async () => {
    const token = "s3cr3t+/=";
    const env = await setup(Client, { token: () => token });
    const closes = record(env.client, "close");
    env.WS.last.open();
    env.WS.last.serverClose(4403, `no: ${token} ${encodeURIComponent(token)} ${new URLSearchParams({ t: token }).toString().slice(2)}`);
    await flush();
    const detail = env.states.at(-1);
    const shown = [detail.reason, detail.error.message, String(detail.error.cause?.reason), closes[0].reason, closes[0].error.message];
    for (const text of shown) {
      assert.ok(!text.includes(token) && !text.includes("s3cr3t"), text);
    }
    assert.match(detail.reason, /<redacted>/);
    await assertNothingLeft(assert, env);
  });

  test("a WebSocket constructor error quoting the url is redacted and fails the client", async () => {
    const WS = makeFakeWebSocket();
    WS.throwOnCreate = new SyntaxError("Failed to construct 'WebSocket': The URL 'ws://h/x?token=tok-123' is invalid.");
    const clock = new FakeClock();
    const client = new Client("ws://h/x", { WebSocket: WS, clock, token: () => "tok-123" });
    const states = record(client, "statechange");
    await flush();
    assert.equal(client.state, "closed");
    const failure = states.at(-1).error;
    assert.ok(failure instanceof ReconnectFailed);
    assert.match(failure.message, /cannot open a WebSocket to ws:\/\/h\/x: .*<redacted>/);
    for (const text of [states.at(-1).reason, failure.message, failure.cause.message]) assert.ok(!text.includes("tok-123"), text);
    assert.equal(clock.pending(), 0);
  });

  test("a token getter that throws or returns a bad token fails the client", async () => {
    for (const getter of [() => { throw new Error("no session"); }, async () => "", () => "with space", () => 42]) {
      const env = await setup(Client, { token: getter });
      assert.equal(env.client.state, "closed");
      const failure = env.states.at(-1).error;
      assert.ok(failure instanceof ReconnectFailed, String(failure));
      assert.equal(env.WS.all.length, 0, "no socket opened");
      await assertNothingLeft(assert, env);
    }
  });
});

describe("argument checks name the argument", () => {
  const WebSocket = class {};
  const cases = [
    [{ token: "abc" }, TypeError, /token must be a function/],
    [{ connectTimeout: 0 }, RangeError, /connectTimeout must be a finite number > 0/],
    [{ connectTimeout: "5" }, TypeError, /connectTimeout must be a number/],
    [{ minUptime: -1 }, RangeError, /minUptime/],
    [{ backoff: 5 }, TypeError, /backoff must be a Backoff/],
    [{ backoff: { base: -1 } }, RangeError, /base/],
    [{ backoff: { delay() { return 1; } } }, TypeError, /maxAttempts/],
    [{ random: 0.5 }, TypeError, /random must be a function/],
    [{ closeCodes: { 4403: "retry" } }, TypeError, /closeCodes\[4403\]/],
    [{ closeCodes: { 5000: "fail" } }, RangeError, /closeCodes: close code 5000/],
    [{ signal: {} }, TypeError, /signal must be an AbortSignal/],
    [{ WebSocket: 5 }, TypeError, /WebSocket must be a constructor/],
    [{ clock: { now() {} } }, TypeError, /clock.wall must be a function/],
    [{ tokn: () => "x" }, TypeError, /Client: unknown option "tokn"/],
  ];
  for (const [options, Type, message] of cases) {
    test(`new Client(url, ${JSON.stringify(options) ?? String(options)})`, () => {
      assert.throws(() => new Client("ws://h/x", { WebSocket, ...options }), (exc) => exc instanceof Type && message.test(exc.message));
    });
  }

  test("connect() rejects (does not throw) with the same errors, and checks its timeout", async () => {
    await assert.rejects(connect("ws://h/x", { WebSocket, connectTimeout: -1 }), RangeError);
    await assert.rejects(connect("ws://h/x", { WebSocket, timeout: 0 }), { name: "RangeError", message: /timeout/ });
    await assert.rejects(connect(42, { WebSocket }), { name: "TypeError", message: /url/ });
  });

  test("subscribe() checks topic, last, bufferSize, signal", async () => {
    const env = await setup(Client);
    const { client } = env;
    assert.throws(() => client.subscribe(5), { name: "TypeError", message: /topic must be a string/ });
    assert.throws(() => client.subscribe(""), { name: "RangeError", message: /topic must not be empty/ });
    assert.throws(() => client.subscribe("a\u0007b"), { name: "RangeError", message: /control characters/ });
    assert.throws(() => client.subscribe("x".repeat(257)), { name: "RangeError", message: /longer than 256/ });
    assert.throws(() => client.subscribe("t", { last: -1 }), { name: "RangeError", message: /last must be >= 0/ });
    assert.throws(() => client.subscribe("t", { last: "5" }), { name: "TypeError", message: /last must be an integer/ });
    assert.throws(() => client.subscribe("t", { bufferSize: 0 }), { name: "RangeError", message: /bufferSize/ });
    assert.throws(() => client.subscribe("t", { signal: 1 }), { name: "TypeError", message: /signal/ });
    assert.throws(() => client.subscribe("t", { lats: 1 }), { name: "TypeError", message: /unknown option "lats"/ });
    assert.equal(client.statistics().subscriptions, 0, "nothing registered by a refused call");
    await client.close();
  });

  test("publish() rejects bad topics, data JSON cannot carry, and bad options", async () => {
    const env = await setup(Client);
    const { client } = env;
    await assert.rejects(client.publish(1, {}), { name: "TypeError", message: /topic/ });
    await assert.rejects(client.publish("t", NaN), { name: "TypeError", message: /finite/ });
    await assert.rejects(client.publish("t", { x: [Infinity] }), { name: "TypeError", message: /finite/ });
    await assert.rejects(client.publish("t", undefined), { name: "TypeError", message: /not JSON-serializable/ });
    await assert.rejects(client.publish("t", 10n), { name: "TypeError", message: /not JSON-serializable/ });
    const cyclic = {};
    cyclic.self = cyclic;
    await assert.rejects(client.publish("t", cyclic), { name: "TypeError", message: /not JSON-serializable/ });
    let deep = 1;
    for (let i = 0; i < 33; i++) deep = [deep];
    await assert.rejects(client.publish("t", deep), { name: "TypeError", message: /nested more than 32 levels/ });
    await assert.rejects(client.publish("t", 1, { timeout: -5 }), { name: "RangeError", message: /timeout/ });
    await assert.rejects(client.publish("t", 1, { signal: "no" }), { name: "TypeError", message: /signal/ });
    await assert.rejects(client.publish("t", 1, { tiemout: 5 }), { name: "TypeError", message: /unknown option/ });
    await client.close();
  });

  test("a Subscription cannot be made by hand", async () => {
    const { Subscription } = await import("../../trioconn/js/trioconn.js");
    assert.throws(() => new Subscription(), { name: "TypeError", message: /client.subscribe/ });
  });
});
