// publish(): ack, error, timeout, a link lost after sending, waiting for a link, abort, close.
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, test } from "node:test";

import { Client, ConnectionBroken, ConnectionClosed, ReconnectFailed, RequestTimeout, ServerError } from "../../trioconn/js/trioconn.js";
import { assertNothingLeft, flush, setup } from "./_fakes.mjs";

const HB = { interval: 2, timeout: 3 };

function lastPublish(ws) {
  return ws.frames.filter((frame) => frame.type === "publish").at(-1);
}

describe("publish", () => {
  test("resolves with the offset of the published answer", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const pending = env.client.publish("chat", { text: "hi" });
    const frame = lastPublish(env.WS.last);
    assert.deepEqual(frame, { type: "publish", topic: "chat", data: { text: "hi" }, ref: frame.ref });
    env.WS.last.receive({ type: "published", topic: "chat", offset: 17, ref: frame.ref + 1 }); // someone else's
    env.WS.last.receive({ type: "published", topic: "chat", offset: 18, ref: frame.ref });
    assert.equal(await pending, 18);
    await env.client.close();
    await assertNothingLeft(assert, env);
  });

  test("rejects with ServerError for an error answer", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const pending = env.client.publish("chat", 1);
    const { ref } = lastPublish(env.WS.last);
    env.WS.last.receive({ type: "error", code: "forbidden", message: "read-only", ref });
    const error = await pending.catch((exc) => exc);
    assert.ok(error instanceof ServerError);
    assert.deepEqual([error.code, error.serverMessage, error.ref], ["forbidden", "read-only", ref]);
    assert.equal(env.client.state, "open");
    await env.client.close();
  });

  test("rejects with RequestTimeout when no answer comes; a late answer is ignored", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const pending = env.client.publish("chat", 1, { timeout: 1000 });
    const outcome = pending.catch((exc) => exc);
    const { ref } = lastPublish(env.WS.last);
    await env.clock.advance(999);
    env.WS.last.receive({ type: "ping", id: 1 });
    assert.equal(await Promise.race([outcome, Promise.resolve("pending")]), "pending");
    await env.clock.advance(1);
    const error = await outcome;
    assert.ok(error instanceof RequestTimeout);
    assert.match(error.message, /no answer within 1000 ms; it may or may not have been stored/);
    env.WS.last.receive({ type: "published", topic: "chat", offset: 1, ref });
    assert.equal(env.clock.pending(), 1, "only the watchdog");
    await env.client.close();
  });

  test("a link lost after sending rejects with ConnectionBroken; it is never re-sent", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const pending = env.client.publish("chat", 1);
    env.WS.last.fail();
    const error = await pending.catch((exc) => exc);
    assert.ok(error instanceof ConnectionBroken);
    assert.match(error.message, /may or may not have been stored/);
    await env.clock.advance(250);
    env.WS.last.welcome(HB);
    assert.equal(lastPublish(env.WS.last), undefined);
    await env.client.close();
  });

  test("waits while disconnected and is sent when the link comes back", async () => {
    const env = await setup(Client);
    const pending = env.client.publish("chat", "queued", { timeout: 5000 });
    env.WS.last.fail();
    await env.clock.advance(250);
    env.WS.last.welcome(HB);
    const frame = lastPublish(env.WS.last);
    assert.equal(frame.data, "queued");
    env.WS.last.receive({ type: "published", topic: "chat", offset: 1, ref: frame.ref });
    assert.equal(await pending, 1);
    await env.client.close();
  });

  test("the wait for a link is bounded by the timeout, and nothing was sent", async () => {
    const env = await setup(Client);
    const outcome = env.client.publish("chat", 1, { timeout: 3000 }).catch((exc) => exc);
    await env.clock.advance(3000);
    const error = await outcome;
    assert.ok(error instanceof RequestTimeout);
    assert.match(error.message, /no connection within 3000 ms; nothing was sent/);
    await env.client.close();
  });

  test("while the socket is closing nothing is sent and it waits for the next link", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.WS.last.readyState = 2; // the server's close frame is in, the close event not yet
    const pending = env.client.publish("chat", 1);
    assert.equal(lastPublish(env.WS.last), undefined);
    env.WS.last.serverClose(1012, "restart");
    await env.clock.advance(250);
    env.WS.last.welcome(HB);
    env.WS.last.receive({ type: "published", topic: "chat", offset: 4, ref: lastPublish(env.WS.last).ref });
    assert.equal(await pending, 4);
    await env.client.close();
  });

  test("close() rejects a waiting publish with ConnectionClosed(1000) and an in-flight one with ConnectionBroken", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const inFlight = env.client.publish("chat", 1);
    env.WS.last.readyState = 2;
    const waiting = env.client.publish("chat", 2);
    env.WS.last.readyState = 1;
    await env.client.close();
    await assert.rejects(inFlight, ConnectionBroken);
    const error = await waiting.catch((exc) => exc);
    assert.ok(error instanceof ConnectionClosed && !(error instanceof ConnectionBroken));
    assert.equal(error.code, 1000);
    await assert.rejects(env.client.publish("chat", 3), (exc) => exc instanceof ConnectionClosed && exc.code === 1000);
    await assertNothingLeft(assert, env);
  });

  test("a failed client rejects publishes with its ReconnectFailed", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.WS.last.serverClose(4403, "no");
    await flush();
    await assert.rejects(env.client.publish("chat", 1), ReconnectFailed);
  });

  test("an aborted signal rejects with its reason and removes its listener", async () => {
    const env = await setup(Client);
    const controller = new AbortController();
    const pending = env.client.publish("chat", 1, { signal: controller.signal });
    assert.equal(getEventListeners(controller.signal, "abort").length, 1);
    const reason = new Error("user left");
    controller.abort(reason);
    assert.equal(await pending.catch((exc) => exc), reason);
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    await assert.rejects(env.client.publish("chat", 1, { signal: controller.signal }), (exc) => exc === reason);
    // a settled publish leaves no listener either
    env.WS.last.welcome(HB);
    const other = new AbortController();
    const acked = env.client.publish("chat", 1, { signal: other.signal });
    env.WS.last.receive({ type: "published", topic: "chat", offset: 1, ref: lastPublish(env.WS.last).ref });
    await acked;
    assert.equal(getEventListeners(other.signal, "abort").length, 0);
    await env.client.close();
    await assertNothingLeft(assert, env);
  });

  test("timeout: Infinity waits without a timer", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const pending = env.client.publish("chat", 1, { timeout: Infinity });
    assert.equal(env.clock.pending(), 1, "only the watchdog");
    env.WS.last.receive({ type: "published", topic: "chat", offset: 2, ref: lastPublish(env.WS.last).ref });
    assert.equal(await pending, 2);
    await env.client.close();
  });

  test("RequestTimeout is a TrioconnError", async () => {
    const { TrioconnError } = await import("../../trioconn/js/trioconn.js");
    assert.ok(new RequestTimeout("x") instanceof TrioconnError);
    assert.equal(new RequestTimeout("x").name, "RequestTimeout");
  });
});
