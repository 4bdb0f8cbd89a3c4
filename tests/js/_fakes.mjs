// Test doubles for trioconn.js unit tests: a scripted WebSocket and a fake clock.
// Only node:test / node:assert and what node 18 has (EventTarget, Event) are used.

/** Let pending promise callbacks run (the client's loop is async). */
export async function flush(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * A fake clock for the client's `clock` option: time only moves with `advance()`.
 * `lateBy` makes every timer fire that many ms after it is due (a throttled background tab);
 * `earlyBy` makes timers longer than that fire that many ms before they are due (timers that
 * disagree with performance.now()).
 */
export class FakeClock {
  constructor({ wall = 1_700_000_000_000 } = {}) {
    this.t = 0;
    this.wallBase = wall;
    this.timers = new Map();
    this.nextId = 1;
    this.lateBy = 0;
    this.earlyBy = 0;
    this.now = () => this.t;
    this.wall = () => this.wallBase + this.t;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      ms = Math.max(0, ms);
      // Early only when there is room for it, so a timer re-armed for the rest is exact.
      const early = ms > this.earlyBy ? this.earlyBy : 0;
      this.timers.set(id, { at: this.t + ms - early + this.lateBy, fn, ms });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** How many timers are pending. */
  pending() {
    return this.timers.size;
  }

  /** The delays (ms) of the pending timers. */
  delays() {
    return [...this.timers.values()].map((timer) => timer.ms);
  }

  /** Move time forward by `ms`, firing due timers in order and letting promises settle between. */
  async advance(ms) {
    const target = this.t + ms;
    for (;;) {
      await flush();
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= target && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = target;
    await flush();
  }
}

/** A scripted WebSocket: the test plays the server. Every instance is kept in `FakeWebSocket.all`. */
export function makeFakeWebSocket() {
  class FakeWebSocket extends EventTarget {
    static all = [];
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    /** What close() does: "echo" (the server answers the close frame), "none" (it never does). */
    static onClientClose = "echo";
    /** Throw from the constructor (e.g. a SecurityError) when set. */
    static throwOnCreate = null;

    constructor(url) {
      if (FakeWebSocket.throwOnCreate) throw FakeWebSocket.throwOnCreate;
      super();
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      FakeWebSocket.all.push(this);
    }

    static get last() {
      return FakeWebSocket.all[FakeWebSocket.all.length - 1];
    }

    /** The frames the client sent, parsed. */
    get frames() {
      return this.sent.map((text) => JSON.parse(text));
    }

    send(text) {
      if (this.readyState === 0) throw new Error("InvalidStateError: still connecting");
      if (this.readyState !== 1) return;
      if (typeof text !== "string") throw new TypeError("the client must send text");
      this.sent.push(text);
    }

    close(code, reason) {
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw new Error(`InvalidAccessError: a page may not close with ${code}`);
      }
      if (this.closedWith !== null || this.readyState === 3) return;
      this.closedWith = { code, reason };
      const wasConnecting = this.readyState === 0;
      this.readyState = 2;
      if (FakeWebSocket.onClientClose === "echo") {
        queueMicrotask(() => this.#closed(wasConnecting ? 1006 : code ?? 1005, wasConnecting ? "" : reason ?? ""));
      }
    }

    // ---- the server's side

    open() {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    }

    /** Deliver one message (an object is JSON-encoded). */
    receive(message) {
      const data = typeof message === "string" || message instanceof ArrayBuffer ? message : JSON.stringify(message);
      this.dispatchEvent(Object.assign(new Event("message"), { data }));
    }

    welcome({ interval = 15, timeout = 45, session = "s1" } = {}) {
      if (this.readyState === 0) this.open();
      this.receive({ type: "welcome", version: 1, session, heartbeat: { interval, timeout }, max_frame_size: 1048576 });
    }

    /** The server closes with a close frame. */
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.#closed(code, reason);
    }

    /** The network fails: error, then close 1006. */
    fail() {
      this.readyState = 3;
      this.dispatchEvent(new Event("error"));
      this.#closed(1006, "");
    }

    #closed(code, reason) {
      this.readyState = 3;
      this.dispatchEvent(Object.assign(new Event("close"), { code, reason, wasClean: code !== 1006 }));
    }

    /** How many listeners of `type` are attached (EventTarget cannot tell, so we count). */
    listenerCount(type) {
      return this.counts?.[type] ?? 0;
    }

    addEventListener(type, listener, options) {
      this.counts ??= {};
      this.counts[type] = (this.counts[type] ?? 0) + 1;
      super.addEventListener(type, listener, options);
    }

    removeEventListener(type, listener, options) {
      this.counts ??= {};
      this.counts[type] = (this.counts[type] ?? 0) - 1;
      super.removeEventListener(type, listener, options);
    }
  }
  return FakeWebSocket;
}

/** A client's events of one type, recorded. */
export function record(target, type) {
  const seen = [];
  target.addEventListener(type, (event) => seen.push(event.detail));
  return seen;
}

/**
 * A client on a fake socket and clock (jitter fixed at 0.5), with its state changes recorded.
 * `welcome`: open the first connection with these heartbeat settings (seconds, as on the wire).
 */
export async function setup(Client, options = {}, { url = "ws://127.0.0.1:9/live", welcome = null } = {}) {
  const WS = makeFakeWebSocket();
  const clock = new FakeClock();
  const client = new Client(url, { WebSocket: WS, clock, random: () => 0.5, ...options });
  const states = record(client, "statechange");
  await flush();
  if (welcome !== null) WS.last.welcome(welcome);
  return { WS, clock, client, states };
}

/** The client is over and left nothing behind: no pending timer, no socket listener. */
export async function assertNothingLeft(assert, { client, clock, WS }) {
  await flush();
  assert.equal(client.state, "closed");
  assert.equal(clock.pending(), 0, `timers left: ${clock.delays()}`);
  for (const ws of WS.all) {
    for (const type of ["message", "close", "open", "error"]) {
      assert.equal(ws.listenerCount(type), 0, `a ${type} listener was left on a socket`);
    }
  }
}
