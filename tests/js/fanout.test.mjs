// Several subscriptions to one topic on one client share one wire subscription; presence items.
// The same rules as trioconn/_client/subscription.py (Feed).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Client, ServerError } from "../../trioconn/js/trioconn.js";
import { flush, record, setup } from "./_fakes.mjs";

const HB = { interval: 2, timeout: 3 };

const subscribes = (ws, topic) => ws.frames.filter((f) => f.type === "subscribe" && f.topic === topic);
const unsubscribes = (ws, topic) => ws.frames.filter((f) => f.type === "unsubscribe" && f.topic === topic);

function answer(ws, topic, fields = {}) {
  const ref = subscribes(ws, topic).at(-1)?.ref;
  ws.receive({ type: "subscribed", topic, epoch: "e1", offset: 0, kind: "stream", replayed: 0, ended: false, ref, ...fields });
}

const event = (topic, offset, data = offset) => ({ type: "event", topic, offset, data });
const offsets = (items) => items.map((item) => item.offset);

async function reconnect(env) {
  env.WS.last.fail();
  await flush();
  await env.clock.advance(env.states.at(-1).nextAttemptAt - env.clock.wall());
  env.WS.last.welcome(HB);
}

describe("several subscriptions to one topic", () => {
  test("share one subscribe; each gets every item; the last one to leave unsubscribes", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const a = env.client.subscribe("feed");
    const b = env.client.subscribe("feed");
    const [seenA, seenB] = [record(a, "item"), record(b, "item")];
    assert.equal(subscribes(env.WS.last, "feed").length, 1);
    assert.equal(env.client.statistics().subscriptions, 2);
    answer(env.WS.last, "feed");
    env.WS.last.receive(event("feed", 1));
    env.WS.last.receive(event("feed", 2));
    assert.deepEqual([offsets(seenA), offsets(seenB)], [[1, 2], [1, 2]]);
    assert.deepEqual(await a.ready, { topic: "feed", epoch: "e1", offset: 0, kind: "stream" });
    b.close();
    assert.equal(unsubscribes(env.WS.last, "feed").length, 0, "a is still there");
    env.WS.last.receive(event("feed", 3));
    assert.deepEqual([offsets(seenA), offsets(seenB)], [[1, 2, 3], [1, 2]]);
    a.close();
    assert.equal(unsubscribes(env.WS.last, "feed").length, 1);
    assert.equal(env.client.statistics().subscriptions, 0);
    await env.client.close();
  });

  test("one resume after a reconnect; no duplicate and no gap for any of them", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const subs = [env.client.subscribe("feed"), env.client.subscribe("feed")];
    const seen = subs.map((sub) => record(sub, "event"));
    answer(env.WS.last, "feed");
    env.WS.last.receive(event("feed", 1));
    await reconnect(env);
    const resumes = subscribes(env.WS.last, "feed");
    assert.deepEqual(resumes.map((f) => f.resume), [{ epoch: "e1", offset: 1 }]);
    answer(env.WS.last, "feed", { offset: 3, replayed: 2 });
    env.WS.last.receive({ type: "batch", frames: [event("feed", 1), event("feed", 2), event("feed", 3)] });
    assert.deepEqual(seen.map(offsets), [[1, 2, 3], [1, 2, 3]]);
    await env.client.close();
  });

  test("a later subscription to a state topic gets its current value first, then what follows", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const first = env.client.subscribe("job");
    answer(env.WS.last, "job", { kind: "state", offset: 1, snapshot: 10 });
    env.WS.last.receive(event("job", 2, 20));
    const later = env.client.subscribe("job");
    const items = record(later, "item");
    assert.deepEqual(await later.ready, { topic: "job", epoch: "e1", offset: 2, kind: "state" });
    env.WS.last.receive(event("job", 3, 30));
    assert.deepEqual(items.map((i) => [i.type, i.offset, i.data]), [["snapshot", 2, 20], ["event", 3, 30]]);
    assert.equal(items[0].value, 20);
    assert.equal(subscribes(env.WS.last, "job").length, 1);
    void first;
    await env.client.close();
  });

  test("its start items wait for the page's listeners, and come before anything later", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.client.subscribe("job");
    answer(env.WS.last, "job", { kind: "state", offset: 1, snapshot: "v1" });
    const later = env.client.subscribe("job");
    const items = record(later, "item"); // added after subscribe() returned
    env.WS.last.receive(event("job", 2, "v2")); // in the same task: still after the start items
    await flush();
    assert.deepEqual(items.map((i) => i.data), ["v1", "v2"]);
    const it = later[Symbol.asyncIterator]();
    assert.deepEqual([(await it.next()).value.data, (await it.next()).value.data], ["v1", "v2"]);
    await env.client.close();
  });

  test("a later subscription gets up to `last` events from the client's cache", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const first = env.client.subscribe("logs", { last: 3 });
    assert.equal(subscribes(env.WS.last, "logs")[0].last, 3);
    answer(env.WS.last, "logs", { offset: 10, replayed: 3 });
    for (let offset = 8; offset <= 11; offset++) env.WS.last.receive(event("logs", offset));
    const two = env.client.subscribe("logs", { last: 2 });
    const none = env.client.subscribe("logs");
    const many = env.client.subscribe("logs", { last: 50 });
    await flush();
    const drain = async (sub, n) => {
      const it = sub[Symbol.asyncIterator]();
      const out = [];
      for (let i = 0; i < n; i++) out.push((await it.next()).value.offset);
      return out;
    };
    env.WS.last.receive(event("logs", 12));
    assert.deepEqual(await drain(two, 3), [10, 11, 12]);
    assert.deepEqual(await drain(none, 1), [12]);
    assert.deepEqual(await drain(many, 4), [9, 10, 11, 12], "what the client kept (3), then on");
    assert.deepEqual(await drain(first, 5), [8, 9, 10, 11, 12]);
    await env.client.close();
  });

  test("subscriptions made before the answer share the replay, each up to its own last", async () => {
    const env = await setup(Client);
    const two = env.client.subscribe("logs", { last: 2 });
    const five = env.client.subscribe("logs", { last: 5 });
    const none = env.client.subscribe("logs");
    env.WS.last.welcome(HB);
    assert.deepEqual(subscribes(env.WS.last, "logs").map((f) => f.last), [5]);
    const seen = [two, five, none].map((sub) => record(sub, "event"));
    answer(env.WS.last, "logs", { offset: 10, replayed: 5 });
    env.WS.last.receive({ type: "batch", frames: [6, 7, 8, 9, 10, 11].map((n) => event("logs", n)) });
    assert.deepEqual(seen.map(offsets), [[9, 10, 11], [6, 7, 8, 9, 10, 11], [11]]);
    await env.client.close();
  });

  test("a topic of unknown kind: a later subscription gets the latest event (it may be a value)", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.client.subscribe("job/1");
    answer(env.WS.last, "job/1", { kind: null });
    env.WS.last.receive(event("job/1", 1, "started"));
    env.WS.last.receive(event("job/1", 2, "half"));
    const later = env.client.subscribe("job/1");
    const items = record(later, "item");
    await flush();
    assert.deepEqual(items.map((i) => [i.type, i.data]), [["event", "half"]]);
    await env.client.close();
  });

  test("an end or a refusal ends every one of them", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const [a, b] = [env.client.subscribe("job"), env.client.subscribe("job")];
    const ends = [record(a, "end"), record(b, "end")];
    answer(env.WS.last, "job");
    env.WS.last.receive({ type: "end", topic: "job", offset: 0 });
    assert.deepEqual(ends, [[{ offset: 0 }], [{ offset: 0 }]]);
    assert.equal(env.client.statistics().subscriptions, 0);
    const [c, d] = [env.client.subscribe("secret"), env.client.subscribe("secret")];
    const { ref } = subscribes(env.WS.last, "secret")[0];
    env.WS.last.receive({ type: "error", code: "forbidden", message: "no", ref, topic: "secret" });
    for (const sub of [c, d]) await assert.rejects(sub.ready, ServerError);
    await env.client.close();
  });
});

describe("presence", () => {
  const member = (session, identity, since) => ({ type: "join", topic: "room", identity, session, since });

  test("join/leave items with presence: true, members for every subscription of the topic", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const watching = env.client.subscribe("room", { presence: true });
    const plain = env.client.subscribe("room");
    const [items, joins, leaves, plainItems] = [
      record(watching, "item"), record(watching, "join"), record(watching, "leave"), record(plain, "item"),
    ];
    answer(env.WS.last, "room", { presence: [{ info: { name: "Ann" }, session: "a", since: 1.5 }] });
    env.WS.last.receive({ type: "join", topic: "room", info: null, session: "b", since: 2 });
    env.WS.last.receive({ type: "leave", topic: "room", info: { name: "Ann" }, session: "a" });
    env.WS.last.receive({ type: "leave", topic: "room", info: "?", session: "nobody" }); // unknown: nothing
    env.WS.last.receive({ type: "join", topic: "room", info: null, session: "b", since: 2 }); // again: nothing
    assert.deepEqual(items, [
      member("a", { name: "Ann" }, 1.5), member("b", null, 2), { type: "leave", topic: "room", identity: { name: "Ann" }, session: "a" },
    ]);
    assert.equal(joins.length, 2);
    assert.equal(leaves.length, 1);
    assert.deepEqual(plainItems, [], "a subscription that did not ask gets no presence items");
    assert.deepEqual(watching.members, [member("b", null, 2)]);
    assert.deepEqual(plain.members, watching.members);
    await env.client.close();
  });

  test("after a reconnect the new member list replaces the old one, with joins and leaves", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    const sub = env.client.subscribe("room", { presence: true });
    const items = record(sub, "item");
    answer(env.WS.last, "room", { presence: [{ info: "Ann", session: "a", since: 1 }, { info: "Bo", session: "b", since: 2 }] });
    await reconnect(env);
    answer(env.WS.last, "room", { presence: [{ info: "Bo", session: "b", since: 2 }, { info: "Cy", session: "c", since: 3 }] });
    assert.deepEqual(items.slice(2), [{ type: "leave", topic: "room", identity: "Ann", session: "a" }, member("c", "Cy", 3)]);
    assert.deepEqual(sub.members.map((m) => m.session), ["b", "c"]);
    await reconnect(env);
    answer(env.WS.last, "room"); // our own subscribe answered without a list: presence is off now
    assert.deepEqual(items.slice(4).map((i) => [i.type, i.session]), [["leave", "b"], ["leave", "c"]]);
    assert.deepEqual(sub.members, []);
    await env.client.close();
  });

  test("a later presence subscription starts with the current members; frames before the answer are ignored", async () => {
    const env = await setup(Client, {}, { welcome: HB });
    env.client.subscribe("room");
    env.WS.last.receive({ type: "join", topic: "room", info: "Zed", session: "z", since: 9 }); // before the answer
    answer(env.WS.last, "room", { presence: [{ info: "Ann", session: "a", since: 1 }] });
    const later = env.client.subscribe("room", { presence: true });
    const items = record(later, "item");
    await flush();
    assert.deepEqual(items, [member("a", "Ann", 1)]);
    assert.throws(() => env.client.subscribe("room", { presence: "yes" }), { name: "TypeError", message: /presence must be a boolean/ });
    await env.client.close();
  });
});
