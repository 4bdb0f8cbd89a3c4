// Subscriptions: refs, resume by epoch/offset, dedupe, reset, snapshots, batch, end, errors,
// the iterator's bounded buffer. The same bookkeeping as trioconn/_client/subscription.py.
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, test } from "node:test";

import { Client, ConnectionClosed, ReconnectFailed, ServerError, TrioconnError } from "../../trioconn/js/trioconn.js";
import { assertNothingLeft, flush, record, setup } from "./_fakes.mjs";

const HB = { interval: 2, timeout: 3 };

/** The last subscribe frame the client sent for `topic` on the current socket. */
function subscribeFrame(ws, topic) {
  return ws.frames.filter((frame) => frame.type === "subscribe" && frame.topic === topic).at(-1);
}

function answer(ws, topic, fields = {}) {
  const ref = subscribeFrame(ws, topic)?.ref;
  ws.receive({ type: "subscribed", topic, epoch: "e1", offset: 0, kind: "stream", replayed: 0, ended: false, ref, ...fields });
}

const event = (topic, offset, data = offset) => ({ type: "event", topic, offset, data });
const brief = (items) => items.map((item) => [item.type, item.epoch, item.offset]);

/** The link drops; the next attempt opens after its backoff delay. */
async function reconnect(env) {
  const before = env.WS.all.length;
  env.WS.last.fail();
  await flush();
  await env.clock.advance(env.states.at(-1).nextAttemptAt - env.clock.wall());
  assert.equal(env.WS.all.length, before + 1);
  env.WS.last.welcome(HB);
}

describe("subscribing and resuming", () => {
  test("the first subscribe carries last and a ref; events wait for the answer", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const ws = env.WS.last;
    const sub = env.client.subscribe("logs", { last: 10 });
    const items = record(sub, "item");
    assert.deepEqual(ws.frames.at(-1), { type: "subscribe", topic: "logs", ref: 1, last: 10 });
    ws.receive(event("logs", 1)); // before the answer: ignored
    answer(ws, "logs", { offset: 3, replayed: 2 });
    ws.receive({ type: "batch", frames: [event("logs", 2, "b"), event("logs", 3, "c"), event("logs", 4, "d")] });
    assert.deepEqual(items.map((item) => [item.offset, item.data]), [[2, "b"], [3, "c"], [4, "d"]]);
    assert.deepEqual(items[0], { type: "event", topic: "logs", epoch: "e1", offset: 2, data: "b" });
    assert.deepEqual([sub.epoch, sub.offset, sub.kind], ["e1", 4, "stream"]);
    await env.client.close();
  });

  test("subscriptions made before the link opens are sent on welcome", async () => {
    const env = await setup(Client);
    env.client.subscribe("a");
    env.client.subscribe("b", { last: 0 });
    env.WS.last.welcome(HB);
    assert.deepEqual(env.WS.last.frames, [
      { type: "subscribe", topic: "a", ref: 1 },
      { type: "subscribe", topic: "b", ref: 2, last: 0 },
    ]);
    await env.client.close();
  });

  test("after a reconnect: resume from the last delivered item, duplicates dropped, every event once in order", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("logs");
    const items = record(sub, "event");
    answer(env.WS.last, "logs", { offset: 2 });
    env.WS.last.receive(event("logs", 3));
    env.WS.last.receive(event("logs", 4));
    await reconnect(env);
    const ws = env.WS.last;
    const frame = subscribeFrame(ws, "logs");
    assert.deepEqual(frame, { type: "subscribe", topic: "logs", ref: frame.ref, resume: { epoch: "e1", offset: 4 } });
    assert.ok(frame.ref > 1, "a fresh ref per connection");
    ws.receive(event("logs", 5)); // before this connection's answer
    answer(ws, "logs", { offset: 6, replayed: 2 });
    ws.receive({ type: "batch", frames: [event("logs", 4), event("logs", 5), event("logs", 6), event("logs", 6), event("logs", 7)] });
    assert.deepEqual(items.map((item) => item.offset), [3, 4, 5, 6, 7]);
    await env.client.close();
  });

  test("an answer to an older subscribe (another ref) is ignored", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t");
    const items = record(sub, "item");
    env.WS.last.receive({ type: "subscribed", topic: "t", epoch: "old", offset: 5, kind: "stream", replayed: 0, ended: false, ref: 999 });
    env.WS.last.receive(event("t", 6));
    assert.deepEqual(items, []);
    assert.equal(sub.epoch, null);
    answer(env.WS.last, "t", { offset: 5 });
    env.WS.last.receive(event("t", 6));
    assert.deepEqual(brief(items), [["event", "e1", 6]]);
    await env.client.close();
  });

  test("a subscribe never answered is re-sent with last, not a resume point", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.client.subscribe("t", { last: 5 });
    await reconnect(env);
    assert.deepEqual(subscribeFrame(env.WS.last, "t"), { type: "subscribe", topic: "t", ref: 2, last: 5 });
    await env.client.close();
  });

  test("a reset says what was lost and the subscription goes on from the new position", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("logs");
    const resets = record(sub, "reset");
    const items = record(sub, "item");
    answer(env.WS.last, "logs", { offset: 7 });
    env.WS.last.receive(event("logs", 8));
    await reconnect(env);
    const ws = env.WS.last;
    ws.receive({ type: "reset", topic: "logs", epoch: "e2", offset: 3, kind: "stream", replayed: 1, ended: false, ref: subscribeFrame(ws, "logs").ref });
    ws.receive(event("logs", 3));
    ws.receive(event("logs", 4));
    assert.deepEqual(resets, [{
      type: "reset", topic: "logs", epoch: "e2", offset: 3, previousEpoch: "e1", previousOffset: 8,
      kind: "stream", snapshot: null, hasSnapshot: false,
    }]);
    assert.deepEqual(brief(items), [["event", "e1", 8], ["reset", "e2", 3], ["event", "e2", 3], ["event", "e2", 4]]);
    assert.equal(env.client.statistics().resets, 1);
    // an unasked reset (no ref) on a live subscription, from a shared broker
    ws.receive({ type: "reset", topic: "logs", epoch: "e3", offset: 10, kind: "stream", replayed: 0, ended: false });
    ws.receive(event("logs", 10));
    ws.receive(event("logs", 11));
    assert.deepEqual(brief(items.slice(4)), [["reset", "e3", 10], ["event", "e3", 11]]);
    await env.client.close();
  });

  test("a state topic: the snapshot first, then updates; a resume catches up by snapshot", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("jobs/1");
    const items = record(sub, "item");
    const snapshots = record(sub, "snapshot");
    answer(env.WS.last, "jobs/1", { kind: "state", offset: 4, snapshot: { progress: 40 } });
    env.WS.last.receive(event("jobs/1", 5, { progress: 50 }));
    await reconnect(env);
    // the state moved on while we were away: the server sends the latest value, no replay
    answer(env.WS.last, "jobs/1", { kind: "state", offset: 9, snapshot: { progress: 90 } });
    env.WS.last.receive(event("jobs/1", 9, { progress: 90 }));
    await reconnect(env);
    // nothing new: no snapshot again
    answer(env.WS.last, "jobs/1", { kind: "state", offset: 9, snapshot: { progress: 90 } });
    assert.deepEqual(items.map((item) => [item.type, item.offset, item.data]), [
      ["snapshot", 4, { progress: 40 }], ["event", 5, { progress: 50 }], ["snapshot", 9, { progress: 90 }],
    ]);
    // one name for the value on both items; `value` is the older name
    assert.deepEqual(snapshots[0], {
      type: "snapshot", topic: "jobs/1", epoch: "e1", offset: 4, data: { progress: 40 }, value: { progress: 40 },
    });
    assert.equal(sub.kind, "state");
    await env.client.close();
  });

  test("ready resolves with the server's first answer", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t");
    answer(env.WS.last, "t", { epoch: "E", offset: 12, kind: null });
    assert.deepEqual(await sub.ready, { topic: "t", epoch: "E", offset: 12, kind: null });
    await env.client.close();
  });
});

describe("the end of a subscription", () => {
  test("end: an end event, iteration ends, it is not sent again after a reconnect", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("jobs/1");
    const ends = record(sub, "end");
    answer(env.WS.last, "jobs/1", { kind: "state", offset: 3, snapshot: "done", ended: true });
    env.WS.last.receive({ type: "end", topic: "jobs/1", offset: 3 });
    assert.deepEqual(ends, [{ offset: 3 }]);
    assert.equal(sub.ended, true);
    const seen = [];
    for await (const item of sub) seen.push(item.type);
    assert.deepEqual(seen, ["snapshot"], "buffered items first, then the end");
    assert.equal(env.client.statistics().subscriptions, 0);
    await reconnect(env);
    assert.equal(subscribeFrame(env.WS.last, "jobs/1"), undefined);
    await env.client.close();
  });

  test("an end before this connection's answer is ignored", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t");
    env.WS.last.receive({ type: "end", topic: "t", offset: 3 });
    assert.equal(sub.ended, false);
    await env.client.close();
  });

  test("a refused subscribe: ready rejects, an error event, iteration throws the ServerError", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("secret");
    const errors = record(sub, "error");
    const ref = subscribeFrame(env.WS.last, "secret").ref;
    env.WS.last.receive({ type: "error", code: "forbidden", message: "not for you", ref, topic: "secret" });
    const error = await sub.ready.catch((exc) => exc);
    assert.ok(error instanceof ServerError);
    assert.deepEqual([error.code, error.serverMessage, error.ref, error.topic], ["forbidden", "not for you", ref, "secret"]);
    assert.deepEqual(errors, [error]);
    await assert.rejects(sub[Symbol.asyncIterator]().next(), ServerError);
    assert.equal(env.client.statistics().subscriptions, 0);
    const again = env.client.subscribe("secret");
    assert.notEqual(again, sub, "the topic is free again");
    await env.client.close();
  });

  test("an error that answers nothing we sent is ignored", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t");
    env.WS.last.receive({ type: "error", code: "internal", message: "?", ref: 777 });
    env.WS.last.receive({ type: "error", code: "internal", message: "?" });
    assert.equal(env.client.state, "open");
    assert.equal(env.client.statistics().subscriptions, 1);
    void sub;
    await env.client.close();
  });

  test("close() sends unsubscribe on the open link, ends iteration, frees the topic", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t");
    const items = record(sub, "item");
    answer(env.WS.last, "t");
    const iteration = (async () => { for await (const item of sub) void item; return "ended"; })();
    sub.close();
    sub.close();
    assert.deepEqual(env.WS.last.frames.filter((f) => f.type === "unsubscribe"), [{ type: "unsubscribe", topic: "t", ref: 2 }]);
    env.WS.last.receive(event("t", 1));
    assert.deepEqual(items, []);
    assert.equal(await iteration, "ended");
    await assert.rejects(sub.ready.then(() => { throw new Error("ready had resolved"); }), /ready had resolved/);
    env.client.subscribe("t");
    await env.client.close();
  });

  test("unsubscribe() before the link opens sends nothing; after a reconnect it is not re-sent", async () => {
    const env = await setup(Client);
    const sub = env.client.subscribe("t");
    sub.unsubscribe();
    env.WS.last.welcome(HB);
    assert.deepEqual(env.WS.last.frames, []);
    await assert.rejects(sub.ready, TrioconnError);
    await env.client.close();
  });

  test("after the client closed, subscribe() throws its ConnectionClosed", async () => {
    const env = await setup(Client);
    await env.client.close();
    assert.throws(() => env.client.subscribe("other"), ConnectionClosed);
  });

  test("aborting the subscription's signal unsubscribes and removes the listener", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const controller = new AbortController();
    const sub = env.client.subscribe("t", { signal: controller.signal });
    answer(env.WS.last, "t");
    assert.equal(getEventListeners(controller.signal, "abort").length, 1);
    controller.abort();
    assert.equal(env.WS.last.frames.at(-1).type, "unsubscribe");
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    const other = new AbortController();
    const sub2 = env.client.subscribe("u", { signal: other.signal });
    sub2.close();
    assert.equal(getEventListeners(other.signal, "abort").length, 0, "removed on close() too");
    await env.client.close();
    void sub;
  });

  test("the client's normal close ends every iteration; its failure throws ReconnectFailed from each", async () => {
    const normal = await setup(Client, {}, { welcome: HB });
    const a = normal.client.subscribe("a");
    const done = (async () => { for await (const item of a) void item; return "ended"; })();
    await normal.client.close();
    assert.equal(await done, "ended");
    await assert.rejects(a.ready, ConnectionClosed);

    const failing = await setup(Client, {}, { welcome: HB });
    const b = failing.client.subscribe("b");
    const errors = record(b, "error");
    const iteration = (async () => { for await (const item of b) void item; })();
    failing.WS.last.serverClose(4403, "gone");
    await assert.rejects(iteration, ReconnectFailed);
    assert.ok(errors[0] instanceof ReconnectFailed);
    await assertNothingLeft(assert, failing);
  });
});

describe("the iterator's buffer", () => {
  test("items before the first for-await are kept, in order", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t");
    answer(env.WS.last, "t");
    for (let offset = 1; offset <= 5; offset++) env.WS.last.receive(event("t", offset));
    const seen = [];
    for await (const item of sub) {
      seen.push(item.offset);
      if (seen.length === 5) break;
    }
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    // leaving the loop does not unsubscribe
    env.WS.last.receive(event("t", 6));
    const next = await sub[Symbol.asyncIterator]().next();
    assert.equal(next.value.offset, 6);
    await env.client.close();
  });

  test("an iterator that waits gets items as they come", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t");
    answer(env.WS.last, "t");
    const it = sub[Symbol.asyncIterator]();
    const pending = it.next();
    env.WS.last.receive(event("t", 1, "x"));
    assert.equal((await pending).value.data, "x");
    await env.client.close();
  });

  test("overflow drops the oldest items and the iterator throws at the gap, never a silent gap", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t", { bufferSize: 3 });
    const events = record(sub, "event");
    answer(env.WS.last, "t");
    for (let offset = 1; offset <= 5; offset++) env.WS.last.receive(event("t", offset));
    assert.equal(events.length, 5, "listeners see every item");
    const it = sub[Symbol.asyncIterator]();
    await assert.rejects(it.next(), (exc) => exc instanceof TrioconnError && /fell behind by 2 items/.test(exc.message));
    const rest = [];
    for (let i = 0; i < 3; i++) rest.push((await it.next()).value.offset);
    assert.deepEqual(rest, [3, 4, 5]);
    await env.client.close();
    assert.deepEqual(await it.next(), { value: undefined, done: true });
  });

  test("a page that only listens holds at most bufferSize items", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("t", { bufferSize: 10 });
    answer(env.WS.last, "t");
    for (let offset = 1; offset <= 1000; offset++) env.WS.last.receive(event("t", offset));
    const it = sub[Symbol.asyncIterator]();
    await assert.rejects(it.next(), /fell behind by 990 items/);
    assert.equal((await it.next()).value.offset, 991);
    await env.client.close();
  });
});
