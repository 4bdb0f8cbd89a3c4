// request(): the answer, errors, timeouts, a link lost after sending, waiting for a link, abort.
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, test } from "node:test";

import { Client, ConnectionBroken, ConnectionClosed, RequestTimeout, ServerError } from "../../trioconn/js/trioconn.js";
import { assertNothingLeft, flush, record, setup } from "./_fakes.mjs";

const HB = { interval: 2, timeout: 3 };
const requests = (ws) => ws.frames.filter((frame) => frame.type === "request");

describe("request", () => {
  test("resolves with the reply's data, matched by ref", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const first = env.client.request("math/add", { a: 1, b: 2 });
    const second = env.client.request("math/add", { a: 5, b: 5 });
    const [f1, f2] = requests(env.WS.last);
    assert.deepEqual(f1, { type: "request", topic: "math/add", data: { a: 1, b: 2 }, ref: f1.ref });
    env.WS.last.receive({ type: "reply", ref: f2.ref, data: 10 });
    env.WS.last.receive({ type: "reply", ref: f1.ref, data: 3 });
    assert.deepEqual([await first, await second], [3, 10]);
    await env.client.close();
    await assertNothingLeft(assert, env);
  });

  test("an error answer rejects with ServerError and its code", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const pending = env.client.request("jobs/get", 7);
    const { ref } = requests(env.WS.last)[0];
    env.WS.last.receive({ type: "error", code: "not-found", message: "no job 7", ref, topic: "jobs/get" });
    const error = await pending.catch((exc) => exc);
    assert.ok(error instanceof ServerError);
    assert.deepEqual([error.code, error.serverMessage, error.topic], ["not-found", "no job 7", "jobs/get"]);
    assert.equal(env.client.state, "open");
    await env.client.close();
  });

  test("no answer in time: RequestTimeout; a late answer or error is ignored", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const outcome = env.client.request("slow", 1, { timeout: 500 }).catch((exc) => exc);
    const { ref } = requests(env.WS.last)[0];
    await env.clock.advance(500);
    const error = await outcome;
    assert.ok(error instanceof RequestTimeout);
    assert.match(error.message, /request to "slow": no answer within 500 ms; the handler may or may not have run/);
    env.WS.last.receive({ type: "reply", ref, data: "late" });
    env.WS.last.receive({ type: "error", code: "request-timeout", message: "slow", ref });
    await flush();
    assert.equal(env.client.state, "open");
    await env.client.close();
  });

  test("the answer comes in order with the subscription's items", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("jobs/1");
    const items = record(sub, "item");
    const ref = env.WS.last.frames[0].ref;
    env.WS.last.receive({ type: "subscribed", topic: "jobs/1", epoch: "e", offset: 0, kind: null, replayed: 0, ref });
    const seenAtAnswer = env.client.request("jobs/start", null).then(() => items.length);
    const req = requests(env.WS.last)[0];
    env.WS.last.receive({ type: "batch", frames: [
      { type: "event", topic: "jobs/1", offset: 1, data: "started" }, { type: "reply", ref: req.ref, data: "ok" },
    ] });
    assert.equal(await seenAtAnswer, 1);
    await env.client.close();
  });

  test("a link lost after sending rejects with ConnectionBroken; never re-sent", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const pending = env.client.request("work", 1);
    env.WS.last.fail();
    const error = await pending.catch((exc) => exc);
    assert.ok(error instanceof ConnectionBroken);
    assert.match(error.message, /before the server answered the request; the handler may or may not have run/);
    await env.clock.advance(250);
    env.WS.last.welcome(HB);
    assert.deepEqual(requests(env.WS.last), []);
    await env.client.close();
  });

  test("waits while disconnected; bounded by the timeout, and then nothing was sent", async () => {
    const env = await setup(Client);
    const pending = env.client.request("echo", "queued", { timeout: 5000 });
    env.WS.last.welcome(HB);
    const frame = requests(env.WS.last)[0];
    env.WS.last.receive({ type: "reply", ref: frame.ref, data: frame.data });
    assert.equal(await pending, "queued");
    env.WS.last.fail();
    const outcome = env.client.request("echo", 1, { timeout: 100 }).catch((exc) => exc);
    await env.clock.advance(100);
    const error = await outcome;
    assert.ok(error instanceof RequestTimeout);
    assert.match(error.message, /no connection within 100 ms; nothing was sent/);
    await env.client.close();
  });

  test("checks its arguments; an aborted signal rejects and removes its listener; closed: ConnectionClosed", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    await assert.rejects(env.client.request("", 1), { name: "RangeError", message: /topic/ });
    await assert.rejects(env.client.request("t", NaN), { name: "TypeError", message: /finite/ });
    await assert.rejects(env.client.request("t", 1, { timeout: 0 }), { name: "RangeError", message: /timeout/ });
    await assert.rejects(env.client.request("t", 1, { tiemout: 5 }), { name: "TypeError", message: /unknown option/ });
    const controller = new AbortController();
    const pending = env.client.request("t", 1, { signal: controller.signal });
    const reason = new Error("left the page");
    controller.abort(reason);
    assert.equal(await pending.catch((exc) => exc), reason);
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    await env.client.close();
    await assert.rejects(env.client.request("t", 1), (exc) => exc instanceof ConnectionClosed && exc.code === 1000);
  });
});
