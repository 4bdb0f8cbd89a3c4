/**
 * trioconn.js: the browser client of trioconn (wire protocol v1). One dependency-free ES module.
 *
 * Theory of operation
 * -------------------
 * A `Client` runs one loop of connection *attempts* (`#run`). Before each attempt it calls the
 * token getter, opens a WebSocket and waits for the server's `welcome` within `connectTimeout`.
 * From `welcome` on the link is *open*: subscriptions are (re)sent with their resume point, every
 * `ping` is answered with `pong` inside the `message` handler (never from a timer: a background
 * tab's timers are throttled, its message events are not), and a watchdog declares the link dead
 * after `timeout + interval` of silence (the server pings every `interval` and gives up on us after
 * `timeout`). Every timer compares the real time (`performance.now()`) with its deadline when it
 * fires and re-arms for the rest, so a throttled timer fires late but never cuts a link early.
 *
 * How an attempt ended is described once (`{kind, code, reason, uptime}`), and `decide()` (a port
 * of `trioconn/_core/decision.py`, tested against the Python rules) says what follows: `done`
 * (close 1000: never reconnect), `fail` (final codes such as 4403 and 1008, protocol errors,
 * attempts exhausted), `reauth` (4401: at once with a fresh token, once per healthy link) or
 * `reconnect` after a full-jitter backoff delay. A close frame from the server decides; 1006 and
 * 1015 (no close frame: the network or TLS failed) are a broken link.
 *
 * Subscriptions outlive connections. A topic has at most one subscription on the wire (a `Feed`),
 * shared by every `client.subscribe(topic)` of it, each with its own buffer. The feed remembers the
 * epoch and offset of the last item it delivered and resumes from there; events are ignored until
 * this connection answered our `subscribe` (matched by `ref`), and an offset not beyond the last one
 * delivered in the same epoch is dropped, so no event is delivered twice. A lost resume point
 * arrives as a `reset` item. A subscription made while another of its topic is open starts at the
 * feed's position: a state topic's latest value, or up to `last` events the feed kept.
 *
 * Close codes this client sends (a page may only send 1000 and 3000-4999):
 * - 1000 "client closed": `close()`, or the `signal` aborted;
 * - 4000 "heartbeat timeout" / "connect timeout": the server went silent; the socket is abandoned
 *   at once, without waiting for a closing handshake;
 * - 4002 "protocol error": the server sent a frame protocol v1 does not allow (the Python client
 *   sends 1002, which a page may not).
 *
 * Units: durations are milliseconds; `nextAttemptAt` and `time` are `Date.now()` values. The token
 * never appears in an error message or an event detail: text from outside (a close reason, a
 * browser error) is scrubbed of it.
 *
 * Testing hook: the `clock` option ({now, wall, setTimeout, clearTimeout}) stands in for
 * `performance.now`, `Date.now` and the timer functions, for unit tests with fake time. Pages never
 * need it.
 */

/** @typedef {"done" | "fail" | "reauth" | "reconnect"} CloseActionName */
/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} ClientStateName */
/**
 * @typedef {{kind: "closed" | "protocol-error" | "certificate" | "broken" | "timeout", code?: number, reason?: string,
 *   uptime?: number | null}} AttemptEnd
 */
/** @typedef {{attempts: number, failures: number, reauthUsed: boolean}} Tally */
/** @typedef {{action: CloseActionName, delay: number, tally: Tally, exhausted: boolean}} Decision */
/** @typedef {{maxAttempts: number | null, delay(failures: number, random: () => number): number}} BackoffPolicy */
/**
 * @typedef {{now(): number, wall(): number, setTimeout(fn: () => void, ms: number): unknown,
 *   clearTimeout(id: unknown): void}} Clock
 */
/**
 * @typedef {{state: ClientStateName, code: number | null, reason: string, error: unknown,
 *   nextAttemptAt: number | null, paused: boolean, time: number}} StateChange
 */
/** @typedef {{type: "event", topic: string, epoch: string, offset: number, data: unknown}} EventItem */
/**
 * @typedef {{type: "snapshot", topic: string, epoch: string, offset: number, data: unknown, value: unknown}} SnapshotItem
 *   `data` is the value (as `EventItem.data`); `value` is its older name
 */
/**
 * @typedef {{type: "reset", topic: string, epoch: string, offset: number, previousEpoch: string | null,
 *   previousOffset: number | null, kind: string | null, snapshot: unknown, hasSnapshot: boolean}} ResetItem
 */
/** @typedef {{type: "join", topic: string, identity: unknown, session: string, since: number}} JoinItem */
/** @typedef {{type: "leave", topic: string, identity: unknown, session: string}} LeaveItem */
/** @typedef {EventItem | SnapshotItem | ResetItem | JoinItem | LeaveItem} Item */
/** @typedef {{topic: string, epoch: string, offset: number, kind: string | null}} Subscribed */

export const VERSION = "0.1.0-dev.0";

const PROTOCOL_VERSION = 1;
const MAX_TOPIC_LENGTH = 256;
const MAX_REF_LENGTH = 128;
const MAX_DATA_DEPTH = 32;
const MAX_FRAME_DEPTH = MAX_DATA_DEPTH + 3; // a batch, its frames list and an event around the data
const MIN_HEARTBEAT = 0.01;
const MAX_HEARTBEAT = 3600;
const CLOSE_TIMEOUT = 5000; // bound on the closing handshake after close()
const MAX_TIMER = 2 ** 31 - 1; // setTimeout's largest delay; longer waits re-arm
const HISTORY = 64; // state changes a slow stateChanges() reader may fall behind
const OPEN = 1; // WebSocket.OPEN
const ACTIONS = ["done", "fail", "reauth", "reconnect"];
// "certificate" (an untrusted server certificate: final) is never seen by a page, whose browser
// reports it as 1006; it is here so that decide() takes every decision the Python client takes.
const END_KINDS = ["closed", "protocol-error", "certificate", "broken", "timeout"];

// ------------------------------------------------------------------------------------------------
// Errors

/** Root of every error trioconn raises on purpose. */
export class TrioconnError extends Error {
  /** @param {string} message @param {{cause?: unknown}} [options] */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A close frame ended the connection. */
export class ConnectionClosed extends TrioconnError {
  /** @param {number} code @param {string} [reason] */
  constructor(code, reason = "") {
    super(`connection closed with code ${code}${reason ? `: ${reason}` : ""}`);
    /** @type {number} */ this.code = code;
    /** @type {string} */ this.reason = reason;
  }
}

/** The connection ended without a close frame (network failure, dead link, timeout): code 1006. */
export class ConnectionBroken extends ConnectionClosed {
  /** @param {string} [reason] */
  constructor(reason = "") {
    super(1006, reason);
  }
}

/** A frame from the server broke protocol v1; `code` is e.g. "invalid-json" or "invalid-field". */
export class ProtocolError extends TrioconnError {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    /** @type {string} */ this.code = code;
  }
}

/** The client gave up for good; `cause` is the last failure. */
export class ReconnectFailed extends TrioconnError {
  /** @param {string} message @param {unknown} cause @param {boolean} [exhausted] */
  constructor(message, cause, exhausted = false) {
    super(message, { cause });
    /** @type {unknown} */ this.cause = cause;
    /** @type {boolean} maxAttempts attempts in a row failed */ this.exhausted = exhausted;
  }
}

/** The server answered a request (subscribe, publish) with an `error` frame. */
export class ServerError extends TrioconnError {
  /**
   * @param {string} code @param {string} serverMessage
   * @param {string | number | null} [ref] @param {string | null} [topic]
   */
  constructor(code, serverMessage, ref = null, topic = null) {
    super(`${code}: ${serverMessage}`);
    /** @type {string} */ this.code = code;
    /** @type {string} */ this.serverMessage = serverMessage;
    /** @type {string | number | null} */ this.ref = ref;
    /** @type {string | null} */ this.topic = topic;
  }
}

/** A `publish()` or `connect()` did not finish within its `timeout`. */
export class RequestTimeout extends TrioconnError {}

// ------------------------------------------------------------------------------------------------
// Argument checks: TypeError for a wrong type, RangeError for a value out of range

/** @param {unknown} value */
const typeName = (value) => (value === null ? "null" : Array.isArray(value) ? "array" : typeof value);
/** @param {unknown} v @returns {v is Record<string, any>} */
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
/** @param {object} o @param {string} key */
const has = (o, key) => Object.prototype.hasOwnProperty.call(o, key);

/** A finite number > 0 (or >= 0). @param {string} name @param {unknown} value @returns {number} */
function checkNumber(name, value, allowZero = false) {
  if (typeof value !== "number") throw new TypeError(`${name} must be a number, not ${typeName(value)}`);
  if (!Number.isFinite(value) || value < 0 || (value === 0 && !allowZero)) {
    throw new RangeError(`${name} must be a finite number ${allowZero ? ">=" : ">"} 0, got ${value}`);
  }
  return value;
}

/** @param {string} name @param {unknown} value @param {number} min @returns {number} */
function checkInteger(name, value, min) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer, not ${typeName(value)} ${String(value)}`);
  }
  if (value < min) throw new RangeError(`${name} must be >= ${min}, got ${value}`);
  return value;
}

/** @param {string} name @param {unknown} signal @returns {AbortSignal | null} */
function checkSignal(name, signal) {
  if (signal == null) return null;
  if (!(signal instanceof AbortSignal)) throw new TypeError(`${name} must be an AbortSignal, not ${typeName(signal)}`);
  return signal;
}

/** An options object with no unknown keys (a typo would otherwise be ignored silently). */
function checkOptions(/** @type {unknown} */ options, /** @type {string} */ where, /** @type {string[]} */ known) {
  if (!isObject(options)) throw new TypeError(`${where} options must be an object, not ${typeName(options)}`);
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new TypeError(`${where}: unknown option ${JSON.stringify(key)}`);
  }
  return options;
}

/** What is wrong with a topic name ("" if nothing): the rules of protocol.py. @param {unknown} topic */
function topicProblem(topic) {
  if (typeof topic !== "string") return `must be a string, not ${typeName(topic)}`;
  if (!topic) return "must not be empty";
  // length counts UTF-16 units; the limit is in characters (code points), as in Python
  if (topic.length > MAX_TOPIC_LENGTH && [...topic].length > MAX_TOPIC_LENGTH) {
    return `is longer than ${MAX_TOPIC_LENGTH} characters`;
  }
  return /[\u0000-\u001f\u007f]/.test(topic) ? "must not contain control characters" : "";
}

/** @param {unknown} topic @returns {string} */
function checkTopic(topic) {
  const problem = topicProblem(topic);
  if (problem) throw new (typeof topic === "string" ? RangeError : TypeError)(`topic ${problem}`);
  return /** @type {string} */ (topic);
}

/** @param {AbortSignal} signal */
const abortReason = (signal) => signal.reason ?? new DOMException("This operation was aborted", "AbortError");

// ------------------------------------------------------------------------------------------------
// JSON limits, as the Python peer: frames nest at most 35 deep, data 32, numbers are finite

/** True if JSON `text` nests arrays/objects deeper than `limit`; linear, no recursion. */
function depthExceeds(/** @type {string} */ text, /** @type {number} */ limit) {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // a backslash escapes the next character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > limit) return true;
    } else if (c === 125 || c === 93) depth--;
  }
  return false;
}

/** True if a parsed value holds a number JSON.parse made infinite (`1e999`). @param {unknown} v */
function hasNonFinite(v) {
  if (typeof v === "number") return !Number.isFinite(v);
  if (v === null || typeof v !== "object") return false;
  for (const item of Array.isArray(v) ? v : Object.values(v)) if (hasNonFinite(item)) return true;
  return false;
}

/** Encode published data: JSON only, finite numbers, at most 32 levels. @param {unknown} data */
function encodeData(data) {
  let text;
  try {
    text = JSON.stringify(data, (_key, value) => {
      if (typeof value === "number" && !Number.isFinite(value)) throw new Error(`numbers must be finite, got ${value}`);
      return value;
    });
  } catch (exc) {
    throw new TypeError(`data is not JSON-serializable: ${/** @type {Error} */ (exc).message}`);
  }
  if (text === undefined) throw new TypeError(`data is not JSON-serializable: ${typeName(data)}`);
  if (depthExceeds(text, MAX_DATA_DEPTH)) throw new TypeError(`data is nested more than ${MAX_DATA_DEPTH} levels deep`);
  return text;
}

// ------------------------------------------------------------------------------------------------
// Server frames, validated as trioconn/_core/protocol.py does (unknown fields are ignored)

/** @param {string} field @param {string} why */
const bad = (field, why) => new ProtocolError("invalid-field", `field '${field}' ${why}`);

/** @param {Record<string, any>} o @returns {string} */
function topicField(o) {
  const problem = topicProblem(o.topic);
  if (problem) throw bad("topic", problem);
  return o.topic;
}

/** @param {Record<string, any>} o @param {string} field @returns {number} */
function intField(o, field, required = true) {
  const v = o[field];
  if (v == null && !required) return /** @type {any} */ (null);
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw bad(field, "must be a non-negative integer");
  return v;
}

/** @param {Record<string, any>} o @param {string} field @returns {string} */
function strField(o, field) {
  if (typeof o[field] !== "string") throw bad(field, "must be a string");
  return o[field];
}

/** @param {Record<string, any>} o @returns {string | number | null} */
function refField({ ref }) {
  if (ref == null) return null;
  if (typeof ref === "string" && ref.length > MAX_REF_LENGTH) {
    throw bad("ref", `must be at most ${MAX_REF_LENGTH} characters`);
  }
  if (typeof ref === "string" || Number.isInteger(ref)) return ref;
  throw bad("ref", "must be a string or an integer");
}

/** A heartbeat setting (s) within the bounds a client accepts. @param {Record<string, any>} o @param {string} field */
function secondsField(o, field) {
  const v = o[field];
  if (typeof v !== "number" || !(v >= MIN_HEARTBEAT && v <= MAX_HEARTBEAT)) {
    throw bad(field, `must be a number of seconds from ${MIN_HEARTBEAT} to ${MAX_HEARTBEAT}`);
  }
  return v;
}

/** @param {Record<string, any>} o @param {"subscribed" | "reset"} type */
function parseAnswer(o, type) {
  const kind = o.kind ?? null;
  if (kind !== null && kind !== "stream" && kind !== "state") throw bad("kind", "must be 'stream', 'state' or null");
  return {
    type, topic: topicField(o), epoch: strField(o, "epoch"), offset: intField(o, "offset"), kind,
    snapshot: o.snapshot ?? null, hasSnapshot: has(o, "snapshot"), replayed: intField(o, "replayed", false) ?? 0,
    ended: Boolean(o.ended), ref: refField(o), presence: presenceField(o),
  };
}

/** A Unix time in seconds (presence). @param {Record<string, any>} o */
function sinceField(o) {
  const v = o.since;
  if (typeof v !== "number" || !(v >= 0 && v < 1e12)) throw bad("since", "must be a Unix time in seconds");
  return v;
}

/** A session id (presence). @param {Record<string, any>} o */
function sessionField(o) {
  const session = strField(o, "session");
  if (session.length > MAX_REF_LENGTH) throw bad("session", `must be at most ${MAX_REF_LENGTH} characters`);
  return session;
}

/** `subscribed.presence`: null if absent (keep the members), else the list. @param {Record<string, any>} o */
function presenceField(o) {
  if (o.presence == null) return null;
  const problem = () => bad("presence", "must be a list of {info, session, since}");
  if (!Array.isArray(o.presence)) throw problem();
  return o.presence.map((/** @type {unknown} */ m) => {
    if (!isObject(m)) throw problem();
    return { info: m.info ?? null, session: sessionField(m), since: sinceField(m) };
  });
}

/** @type {Record<string, (o: Record<string, any>) => any>} */
const PARSERS = {
  welcome(o) {
    if (!isObject(o.heartbeat)) throw bad("heartbeat", "must be an object with 'interval' and 'timeout'");
    const version = intField(o, "version");
    if (version !== PROTOCOL_VERSION) {
      throw bad("version", `is ${version}; this client speaks version ${PROTOCOL_VERSION}`);
    }
    return {
      type: "welcome", session: strField(o, "session"), interval: secondsField(o.heartbeat, "interval"),
      timeout: secondsField(o.heartbeat, "timeout"), maxFrameSize: intField(o, "max_frame_size"),
    };
  },
  ping(o) {
    const rtt = typeof o.rtt === "number" && o.rtt >= 0 && o.rtt <= MAX_HEARTBEAT ? o.rtt : null; // informational
    return { type: "ping", id: intField(o, "id"), rtt };
  },
  subscribed: (o) => parseAnswer(o, "subscribed"),
  reset: (o) => parseAnswer(o, "reset"),
  event: (o) => ({ type: "event", topic: topicField(o), offset: intField(o, "offset"), data: o.data ?? null }),
  end: (o) => ({ type: "end", topic: topicField(o), offset: intField(o, "offset") }),
  unsubscribed: (o) => ({ type: "unsubscribed", topic: topicField(o), ref: refField(o) }),
  published: (o) => ({ type: "published", topic: topicField(o), offset: intField(o, "offset"), ref: refField(o) }),
  reply(o) {
    const ref = refField(o);
    if (ref === null) throw bad("ref", "is required");
    return { type: "reply", ref, data: o.data ?? null };
  },
  join: (o) => ({ type: "join", topic: topicField(o), info: o.info ?? null, session: sessionField(o), since: sinceField(o) }),
  leave: (o) => ({ type: "leave", topic: topicField(o), info: o.info ?? null, session: sessionField(o) }),
  error: (o) => ({
    type: "error", code: strField(o, "code"), message: strField(o, "message"), ref: refField(o),
    topic: typeof o.topic === "string" ? o.topic : null,
  }),
};

/** @param {unknown} o @param {boolean} nested */
function parseFrame(o, nested) {
  if (!isObject(o)) throw new ProtocolError("not-an-object", "frame must be a JSON object");
  const { type } = o;
  if (typeof type !== "string" || !has(PARSERS, type) || (nested && type === "welcome")) {
    throw new ProtocolError("unknown-type", `unknown frame type ${JSON.stringify(type) ?? "undefined"}`);
  }
  return PARSERS[type](o);
}

/** One server message → its frames (a batch becomes its frames, in order). @param {unknown} data @returns {any[]} */
function parseMessage(data) {
  if (typeof data !== "string") throw new ProtocolError("binary-frame", "binary frames are not part of protocol v1");
  if (depthExceeds(data, MAX_FRAME_DEPTH)) {
    throw new ProtocolError("invalid-json", `frame is nested more than ${MAX_FRAME_DEPTH} levels deep`);
  }
  let obj;
  try {
    obj = JSON.parse(data);
  } catch (exc) {
    throw new ProtocolError("invalid-json", `frame is not valid JSON: ${/** @type {Error} */ (exc).message}`);
  }
  if (hasNonFinite(obj)) throw new ProtocolError("invalid-field", "numbers must be finite");
  if (!isObject(obj)) throw new ProtocolError("not-an-object", `frame must be a JSON object, not ${typeName(obj)}`);
  if (obj.type !== "batch") return [parseFrame(obj, false)];
  if (!Array.isArray(obj.frames)) throw bad("frames", "must be a list of frames");
  return obj.frames.map((/** @type {unknown} */ frame) => parseFrame(frame, true));
}

// ------------------------------------------------------------------------------------------------
// Close codes and the reconnect decision (trioconn/_core/protocol.py and decision.py)

/** @param {string} name @param {CloseActionName} action @param {string} meaning */
const row = (name, action, meaning) => Object.freeze({ name, action, meaning });

/**
 * The one close-code table: the rows of Python's `trioconn.CLOSE_CODES` (a test compares them).
 * @type {Readonly<Record<number, Readonly<{name: string, action: CloseActionName, meaning: string}>>>}
 */
export const CLOSE_CODES = Object.freeze({
  1000: row("normal", "done", "work done; the client ends and does not reconnect"),
  1001: row("going-away", "reconnect", "server shutting down; reconnect to another or later"),
  1002: row("protocol-error", "fail", "WebSocket protocol violation"),
  1003: row("unsupported-data", "fail", "data the endpoint cannot accept"),
  1006: row("abnormal", "reconnect", "no close frame: reset socket, dead link (never sent)"),
  1007: row("invalid-payload", "fail", "text frame that is not UTF-8"),
  1008: row("policy", "fail", "policy violation, e.g. origin refused"),
  1009: row("too-big", "fail", "frame larger than the configured maximum"),
  1011: row("internal-error", "reconnect", "server error; reconnect"),
  1012: row("restart", "reconnect", "server restarting; reconnect"),
  1013: row("try-again-later", "reconnect", "overloaded (connection limit); back off"),
  4000: row("heartbeat-timeout", "reconnect", "no frame within the heartbeat timeout"),
  4001: row("slow-consumer", "reconnect", "client fell behind; reconnect and resume"),
  4401: row("unauthorized", "reauth", "credentials expired or missing"),
  4403: row("forbidden", "fail", "identity not allowed"),
});

/** `closeCodes` overrides ({code: action} or a Map) checked, as a Map. @param {unknown} overrides */
function checkOverrides(overrides) {
  /** @type {Map<number, CloseActionName>} */
  const map = new Map();
  if (overrides == null) return map;
  if (typeof overrides !== "object") {
    throw new TypeError(`closeCodes must be an object of code → action, not ${typeName(overrides)}`);
  }
  for (const [key, action] of overrides instanceof Map ? overrides : Object.entries(overrides)) {
    const code = Number(key);
    if (!Number.isInteger(code) || code < 1000 || code > 4999) {
      throw new RangeError(`closeCodes: close code ${String(key)} is not an integer from 1000 to 4999`);
    }
    if (!ACTIONS.includes(action)) {
      throw new TypeError(`closeCodes[${code}] must be one of ${ACTIONS.join(", ")}, got ${JSON.stringify(action)}`);
    }
    map.set(code, action);
  }
  return map;
}

/**
 * What the client does after close `code`: the table, else 1000-2999 fail and the rest reconnect.
 * @param {number} code @param {Record<number, CloseActionName> | Map<number, CloseActionName> | null} [overrides]
 * @returns {CloseActionName}
 */
export function closeAction(code, overrides) {
  checkInteger("code", code, 0);
  const listed = checkOverrides(overrides).get(code) ?? CLOSE_CODES[code]?.action;
  return listed ?? (code >= 1000 && code < 3000 ? "fail" : "reconnect");
}

/**
 * What follows the end of an attempt; pure, the rules of `trioconn/_core/decision.py`.
 * A link that lasted `minUptime` is healthy: losing it starts the count and the backoff again.
 * `maxAttempts` counts attempts in a row that failed (a new client's first attempt counts). `reauth`
 * (4401) needs a token getter, happens once per healthy link and is not counted.
 * @param {AttemptEnd} end
 * @param {Tally} tally the previous decision's (a new client: {attempts: 1, failures: 0, reauthUsed: false})
 * @param {{backoff: BackoffPolicy, random?: () => number, minUptime: number, hasTokenProvider: boolean,
 *   overrides?: Record<number, CloseActionName> | Map<number, CloseActionName> | null}} options
 * @returns {Decision}
 */
export function decide(end, tally, options) {
  if (!isObject(end) || !END_KINDS.includes(end.kind)) {
    throw new TypeError(`end must be {kind: ${END_KINDS.join(" | ")}, ...}`);
  }
  if ((end.kind === "closed") !== (end.code != null)) {
    throw new TypeError("end.code is given exactly when end.kind is 'closed'");
  }
  if (!isObject(tally)) throw new TypeError("tally must be {attempts, failures, reauthUsed}");
  if (!isObject(options) || !options.backoff) throw new TypeError("options.backoff is required");
  const { backoff, random = Math.random, minUptime, hasTokenProvider, overrides } = options;
  checkNumber("minUptime", minUptime, true);
  if (end.uptime != null && end.uptime >= minUptime) tally = { attempts: 0, failures: 0, reauthUsed: false };
  /** @type {CloseActionName} */
  let action = end.kind === "closed" ? closeAction(/** @type {number} */ (end.code), overrides) : "reconnect";
  if (end.kind === "protocol-error" || end.kind === "certificate") action = "fail";
  if (action === "reauth") {
    if (hasTokenProvider && !tally.reauthUsed) {
      return { action, delay: 0, tally: { ...tally, reauthUsed: true }, exhausted: false };
    }
    action = "fail";
  }
  if (action !== "reconnect") return { action, delay: 0, tally, exhausted: false };
  const failures = tally.failures + 1;
  if (backoff.maxAttempts != null && tally.attempts >= backoff.maxAttempts) {
    return { action: "fail", delay: 0, tally: { ...tally, failures }, exhausted: true };
  }
  const delay = backoff.delay(failures, random);
  tally = { attempts: tally.attempts + 1, failures, reauthUsed: tally.reauthUsed };
  return { action, delay, tally, exhausted: false };
}

/**
 * Exponential backoff with full jitter: before the n-th reconnect in a row, wait a delay drawn
 * uniformly from [0, min(cap, base * factor ** (n - 1))] ms.
 */
export class Backoff {
  /**
   * @param {{base?: number, factor?: number, cap?: number, maxAttempts?: number | null}} [options]
   *   base: the first ceiling (500 ms: a server back at once is found again within half a second);
   *   factor: growth per failure (2); cap: the largest ceiling (30000 ms: never much longer than
   *   half a minute once the server is back); maxAttempts: failed attempts in a row before giving
   *   up (null: never, a live-data page wants the server back whenever it returns).
   */
  constructor(options = {}) {
    const known = ["base", "factor", "cap", "maxAttempts"];
    const { base = 500, factor = 2, cap = 30000, maxAttempts = null } = checkOptions(options, "Backoff", known);
    /** @type {number} */ this.base = checkNumber("base", base);
    /** @type {number} */ this.factor = checkNumber("factor", factor);
    /** @type {number} */ this.cap = checkNumber("cap", cap);
    if (factor < 1) throw new RangeError(`factor must be >= 1, got ${factor}`);
    if (cap < base) throw new RangeError(`cap (${cap}) must be >= base (${base})`);
    /** @type {number | null} */
    this.maxAttempts = maxAttempts === null ? null : checkInteger("maxAttempts", maxAttempts, 1);
    Object.freeze(this);
  }

  /** The largest delay after `failures` consecutive failures. @param {number} failures */
  ceiling(failures) {
    checkInteger("failures", failures, 1);
    // Compare exponents instead of computing factor ** n, which overflows for a large n.
    if (this.factor > 1 && (failures - 1) * Math.log(this.factor) >= Math.log(this.cap / this.base)) return this.cap;
    return Math.min(this.cap, this.base * this.factor ** (failures - 1));
  }

  /**
   * ms to wait after `failures` consecutive failures: uniform in [0, ceiling].
   * @param {number} failures @param {() => number} [random] a number in [0, 1] (Math.random)
   */
  delay(failures, random = Math.random) {
    if (typeof random !== "function") throw new TypeError(`random must be a function, not ${typeName(random)}`);
    const ceiling = this.ceiling(failures);
    const r = random();
    if (typeof r !== "number" || !(r >= 0 && r <= 1)) {
      throw new RangeError(`random() must return a number in [0, 1], got ${r}`);
    }
    return r * ceiling;
  }
}

// ------------------------------------------------------------------------------------------------
// Small machinery: events, time, a bounded queue, urls, tokens

/** @param {string} type @param {unknown} detail */
function detailEvent(type, detail) {
  if (typeof CustomEvent === "function") return new CustomEvent(type, { detail });
  return Object.assign(new Event(type), { detail }); // node 18 has no global CustomEvent
}

/** @type {Clock} */
const REAL_CLOCK = {
  now: () => performance.now(),
  wall: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(/** @type {any} */ (id)),
};

/** @param {unknown} clock @returns {Clock} */
function checkClock(clock) {
  if (clock == null) return REAL_CLOCK;
  for (const name of ["now", "wall", "setTimeout", "clearTimeout"]) {
    const fn = /** @type {Record<string, unknown>} */ (clock)[name];
    if (typeof fn !== "function") throw new TypeError(`clock.${name} must be a function`);
  }
  return /** @type {Clock} */ (clock);
}

/**
 * Call `fn` once the monotonic clock reaches `at`. When the timer fires it compares the real time
 * with `at` and re-arms for the rest, so a timer that fires early (or a long wait) never ends early.
 */
class Deadline {
  /** @param {Clock} clock @param {number} at @param {() => void} fn */
  constructor(clock, at, fn) {
    this.clock = clock;
    this.at = at;
    this.fn = fn;
    /** @type {unknown} */ this.id = null;
    this.arm();
  }

  arm() {
    const left = Math.min(Math.max(this.at - this.clock.now(), 0), MAX_TIMER);
    this.id = this.clock.setTimeout(() => {
      this.id = null;
      if (this.clock.now() >= this.at) this.fn();
      else this.arm();
    }, left);
  }

  cancel() {
    if (this.id !== null) this.clock.clearTimeout(this.id);
    this.id = null;
  }
}

/**
 * Items for one async-iterator reader; `push` never waits. Past `limit` the oldest items go: with
 * `gap` the reader then gets that error where they were, never a silent gap; without, it skips.
 * @template T
 */
class Queue {
  /** @param {number} limit @param {((lost: number) => Error) | null} gap */
  constructor(limit, gap) {
    this.limit = limit;
    this.gap = gap;
    /** @type {T[]} */ this.items = [];
    this.lost = 0;
    this.ended = false;
    /** @type {unknown} */ this.error = null;
    /** @type {{resolve: (r: IteratorResult<T>) => void, reject: (e: unknown) => void} | null} */ this.waiter = null;
  }

  /** @param {T} item */
  push(item) {
    if (this.ended) return;
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter !== null) return waiter.resolve({ value: item, done: false });
    if (this.items.length >= this.limit) {
      this.items.shift();
      this.lost += 1;
    }
    this.items.push(item);
  }

  /** No more items: the reader gets the ones left, then the end (or `error`). @param {unknown} error */
  end(error = null) {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter === null) return;
    if (error === null) waiter.resolve({ value: undefined, done: true });
    else waiter.reject(error);
  }

  /** @returns {Promise<IteratorResult<T>>} */
  next() {
    const lost = this.lost;
    this.lost = 0;
    if (lost > 0 && this.gap !== null) return Promise.reject(this.gap(lost));
    if (this.items.length > 0) return Promise.resolve({ value: /** @type {T} */ (this.items.shift()), done: false });
    if (this.ended) {
      return this.error === null ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.error);
    }
    if (this.waiter !== null) return Promise.reject(new TypeError("a previous next() is still waiting"));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }
}

const REDACTED = "<redacted>";

/** `text` without the token, raw or url-encoded. @param {string} text @param {string | null} token */
function redact(text, token) {
  if (!token || !text) return text;
  const encoded = new URLSearchParams({ t: token }).toString().slice(2);
  return text.split(token).join(REDACTED).split(encoded).join(REDACTED);
}

/** A bearer token as the Python client requires: visible ASCII, no spaces. @param {unknown} t */
const validToken = (t) => typeof t === "string" && /^[\x21-\x7e]+$/.test(t);

/** @type {Record<string, string>} */
const SCHEMES = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" };

/** The WebSocket URL for `url`: relative to the page, http(s) → ws(s), no fragment. @param {unknown} url */
function resolveUrl(url) {
  if (url instanceof URL) url = url.href;
  if (typeof url !== "string" || !url) {
    throw new TypeError(`url must be a non-empty string or a URL, not ${typeName(url)}`);
  }
  const base = globalThis.location?.href;
  let parsed;
  try {
    parsed = new URL(url, base);
  } catch {
    const why = base === undefined ? " (a relative url needs a page)" : "";
    throw new TypeError(`url ${JSON.stringify(url)} is not a valid URL${why}`);
  }
  const scheme = SCHEMES[parsed.protocol];
  if (scheme === undefined) {
    throw new TypeError(`url must be ws:, wss:, http:, https: or relative, got ${parsed.protocol}`);
  }
  parsed.protocol = scheme;
  parsed.hash = "";
  return parsed.href;
}

// ------------------------------------------------------------------------------------------------
// Subscriptions

const KEY = Symbol("trioconn internal");

/** The `Subscribed` of an answer. @param {string} topic @param {any} frame @returns {Subscribed} */
const subscribed = (topic, { epoch, offset, kind }) => Object.freeze({ topic, epoch, offset, kind });

/**
 * A topic's one subscription on the wire, shared by the client's local subscriptions of the topic:
 * the resume point, dedupe, the latest value and recent events (for a local subscription that
 * joins later), and the presence member list. The client drives it.
 */
class Feed {
  /** @param {string} topic */
  constructor(topic) {
    this.topic = topic;
    /** @type {string | null} resume point: the epoch of the last delivered item */ this.epoch = null;
    /** @type {number | null} resume point: the offset of the last delivered item */ this.offset = null;
    /** @type {string | null} */ this.kind = null;
    /** @type {number | null} the ref of our latest subscribe */ this.ref = null;
    /** @type {Set<SubscriptionState>} the local subscriptions, in the order they were made */ this.locals = new Set();
    /** @type {Subscribed | null} the first answer */ this.info = null;
    /** @type {SnapshotItem | null} a state topic's latest value */ this.latest = null;
    /** @type {EventItem[]} the last events, at most `cacheSize()` */ this.recent = [];
    /** @type {Map<string, JoinItem>} presence: session → its join, in the order they joined */ this.members = new Map();
  }

  /** The `last` of the wire subscription: the largest asked for, or null. */
  get last() {
    const asked = [...this.locals].map((local) => local.last).filter((last) => last !== null);
    return asked.length === 0 ? null : Math.max(.../** @type {number[]} */ (asked));
  }

  /** Events kept for a later local subscription's `last` (at least the latest one). */
  cacheSize() {
    return Math.max(1, ...[...this.locals].map((local) => local.last ?? 0));
  }

  /** A local subscription joins; if the feed was answered it starts at the feed's position. @param {SubscriptionState} local */
  add(local) {
    local.feed = this;
    this.locals.add(local);
    if (this.info === null || this.epoch === null) return; // it waits for the answer with the others
    local.start = this.startItems(local);
    queueMicrotask(() => local.flushStart()); // after the page added its listeners
    local.answered(subscribed(this.topic, { epoch: this.epoch, offset: this.offset ?? 0, kind: this.kind }));
  }

  /** @param {SubscriptionState} local @returns {boolean} true if it was the last one */
  remove(local) {
    this.locals.delete(local);
    this.recent = this.recent.slice(-this.cacheSize());
    return this.locals.size === 0;
  }

  /** What a local subscription that joins now gets first. @param {SubscriptionState} local @returns {Item[]} */
  startItems(local) {
    /** @type {Item[]} */
    const items = [];
    if (this.kind === "state") {
      if (this.latest !== null) items.push(this.latest);
    } else {
      // A stream topic: up to `last` cached events. While the kind is unknown (nothing had been
      // written when the feed was answered) the latest event may be a state topic's value: given.
      const count = this.kind === null ? Math.max(local.last ?? 0, 1) : local.last ?? 0;
      if (count > 0) items.push(...this.recent.slice(-count));
    }
    if (local.presence) items.push(...this.members.values());
    return items;
  }

  /** Deliver `items` to every local subscription that wants them. @param {Item[]} items */
  deliver(items) {
    for (const item of items) for (const local of [...this.locals]) if (local.wants(item)) local.deliver(item);
  }

  /** Over: every local subscription ends. @param {unknown} error @param {{end?: number, readyError?: unknown}} [how] */
  finish(error, how = {}) {
    for (const local of [...this.locals]) local.finish(error, how);
  }

  /** The `subscribe` frame for a new connection: resume if we have a position, else `last`. @param {number} ref */
  frame(ref) {
    this.ref = ref;
    /** @type {Record<string, unknown>} */
    const frame = { type: "subscribe", topic: this.topic, ref };
    const { last } = this;
    if (this.epoch !== null) frame.resume = { epoch: this.epoch, offset: this.offset ?? 0 };
    else if (last !== null) frame.last = last;
    return JSON.stringify(frame);
  }

  /** Take a `subscribed`/`reset` answer; return the items it delivers. @param {any} frame @returns {Item[]} */
  onAnswer(frame) {
    /** @type {Item[]} */
    const items = [];
    const previousEpoch = this.epoch;
    const previousOffset = this.offset;
    if (frame.kind !== null) this.kind = frame.kind;
    const start = Math.max(frame.offset - frame.replayed, 0); // the replayed events end at frame.offset
    const { topic } = this;
    const { epoch, offset, kind, hasSnapshot } = frame;
    const value = frame.snapshot;
    /** @type {SnapshotItem} */
    const snapshot = Object.freeze({ type: "snapshot", topic, epoch, offset, data: value, value });
    if (frame.type === "reset") {
      const reset = {
        type: "reset", topic, epoch, offset, previousEpoch, previousOffset, kind, snapshot: frame.snapshot, hasSnapshot,
      };
      items.push(/** @type {ResetItem} */ (Object.freeze(reset)));
      this.recent = [];
      this.latest = hasSnapshot ? snapshot : null;
      [this.epoch, this.offset] = [frame.epoch, start];
    } else if (previousEpoch !== null && previousEpoch === frame.epoch) {
      // Resumed. A state topic is caught up by its snapshot rather than by a replay.
      this.offset = previousOffset ?? 0;
      if (frame.hasSnapshot && frame.offset > this.offset && frame.replayed === 0) {
        items.push((this.latest = snapshot));
        this.offset = frame.offset;
      }
    } else {
      [this.epoch, this.offset] = [frame.epoch, start];
      if (frame.hasSnapshot) {
        items.push((this.latest = snapshot));
        this.offset = Math.max(start, frame.offset);
      }
    }
    if (frame.presence !== null) {
      items.push(...this.onMembers(frame.presence.map((/** @type {any} */ m) => joinItem(topic, m.info, m.session, m.since))));
    } else if (frame.ref !== null && this.members.size > 0) {
      // The answer to our own subscribe without a member list: presence is off for us now. (An
      // unasked reset from a shared broker carries none either: nothing changed.)
      items.push(...this.onMembers([]));
    }
    if (this.info === null) {
      this.info = subscribed(topic, frame);
      for (const local of this.locals) {
        // Made before the answer: the wire's replay, but no more than its own `last`.
        if (frame.replayed > (local.last ?? 0)) local.skip = { epoch, through: offset - (local.last ?? 0) };
        local.answered(this.info);
      }
    }
    return items;
  }

  /** The item for an event, or null to drop it (a duplicate). @param {any} frame @returns {EventItem | null} */
  onEvent(frame) {
    if (this.epoch === null || (this.offset !== null && frame.offset <= this.offset)) return null;
    this.offset = frame.offset;
    const { topic, epoch } = this;
    const { offset, data } = frame;
    /** @type {EventItem} */
    const item = Object.freeze({ type: "event", topic, epoch, offset, data });
    this.recent.push(item);
    if (this.recent.length > this.cacheSize()) this.recent.shift();
    if (this.kind === "state") this.latest = Object.freeze({ type: "snapshot", topic, epoch, offset, data, value: data });
    return item;
  }

  /** A member list replaces ours; the joins and leaves between them. @param {JoinItem[]} members @returns {Item[]} */
  onMembers(members) {
    const next = new Map(members.map((member) => [member.session, member]));
    /** @type {Item[]} */
    const items = [];
    for (const [session, old] of this.members) {
      if (!sameMember(next.get(session), old)) items.push(leaveItem(this.topic, old.identity, session));
    }
    for (const [session, member] of next) if (!sameMember(this.members.get(session), member)) items.push(member);
    this.members = next;
    return items;
  }

  /** @param {JoinItem} member @returns {Item[]} */
  onJoin(member) {
    const old = this.members.get(member.session);
    if (sameMember(old, member)) return []; // already known (a join racing the list of a new answer)
    /** @type {Item[]} */
    const items = [];
    if (old !== undefined) {
      this.members.delete(member.session);
      items.push(leaveItem(this.topic, old.identity, old.session));
    }
    this.members.set(member.session, member);
    items.push(member);
    return items;
  }

  /** @param {string} session @returns {Item[]} */
  onLeave(session) {
    const old = this.members.get(session);
    if (old === undefined) return [];
    this.members.delete(session);
    return [leaveItem(this.topic, old.identity, session)];
  }
}

/** @param {string} topic @param {unknown} identity @param {string} session @param {number} since @returns {JoinItem} */
const joinItem = (topic, identity, session, since) => Object.freeze({ type: "join", topic, identity, session, since });
/** @param {string} topic @param {unknown} identity @param {string} session @returns {LeaveItem} */
const leaveItem = (topic, identity, session) => Object.freeze({ type: "leave", topic, identity, session });
/** @param {JoinItem | undefined} a @param {JoinItem | undefined} b */
const sameMember = (a, b) => a !== undefined && b !== undefined && a.since === b.since
  && JSON.stringify(a.identity) === JSON.stringify(b.identity);

/** One local subscription's bookkeeping (its reader's queue, `ready`); the feed drives it. */
class SubscriptionState {
  /**
   * @param {string} topic @param {number | null} last @param {number} bufferSize @param {boolean} presence
   * @param {(s: SubscriptionState) => void} unsubscribe
   */
  constructor(topic, last, bufferSize, presence, unsubscribe) {
    this.topic = topic;
    this.last = last;
    this.presence = presence;
    this.unsubscribe = unsubscribe;
    /** @type {Feed | null} */ this.feed = null;
    /** @type {EventTarget} the public Subscription (set by its constructor) */ this.target = new EventTarget();
    /** @type {Item[] | null} items from the feed's position when it joined, not yet delivered */ this.start = null;
    /** @type {{epoch: string, through: number} | null} replayed events through this offset are beyond `last` */
    this.skip = null;
    this.ended = false;
    this.finished = false;
    /** @type {Queue<Item>} */
    this.queue = new Queue(bufferSize, (lost) => new TrioconnError(`subscription to ${JSON.stringify(topic)} `
      + `fell behind by ${lost} items (bufferSize ${bufferSize}); they were dropped`));
    this.detach = () => {}; // removes the signal listener
    /** @type {((v: Subscribed) => void) | null} */ this.resolveReady = null;
    /** @type {(e: unknown) => void} */ this.rejectReady = () => {};
    this.ready = new Promise((resolve, reject) => ([this.resolveReady, this.rejectReady] = [resolve, reject]));
    this.ready.catch(() => {}); // a page that never awaits `ready` gets no unhandled rejection
  }

  /** @param {Subscribed} info */
  answered(info) {
    this.resolveReady?.(info);
    this.resolveReady = null;
  }

  /** Whether an item the feed delivers is for this subscription. @param {Item} item */
  wants(item) {
    if (item.type === "join" || item.type === "leave") return this.presence;
    const skip = this.skip;
    if (skip !== null && item.type === "event") {
      if (item.epoch === skip.epoch && item.offset <= skip.through) return false;
      this.skip = null; // past the replay
    }
    return true;
  }

  /** Deliver the start items (if not yet done): before anything the feed delivers later. */
  flushStart() {
    const start = this.start;
    this.start = null;
    if (start !== null) for (const item of start) this.deliver(item);
  }

  /** @param {Item} item */
  deliver(item) {
    if (this.finished) return;
    this.flushStart();
    this.queue.push(item);
    this.target.dispatchEvent(detailEvent(item.type, item));
    this.target.dispatchEvent(detailEvent("item", item));
  }

  /**
   * Over: iteration ends after the queued items, or throws `error`.
   * @param {unknown} error null for a normal end
   * @param {{end?: number, readyError?: unknown}} [how] end: the topic ended at this offset;
   *   readyError: what `ready` rejects with if the server never answered
   */
  finish(error, how = {}) {
    if (this.finished) return;
    this.flushStart();
    this.finished = true;
    this.feed?.locals.delete(this);
    this.detach();
    if (this.resolveReady !== null) {
      this.resolveReady = null;
      const early = new TrioconnError(`subscription to ${JSON.stringify(this.topic)} ended before the server answered`);
      this.rejectReady(error ?? how.readyError ?? early);
    }
    this.queue.end(error);
    if (how.end !== undefined) {
      this.ended = true;
      this.target.dispatchEvent(detailEvent("end", { offset: how.end }));
    } else if (error !== null) {
      this.target.dispatchEvent(detailEvent("error", error));
    }
  }
}

/**
 * A live subscription to one topic, from `client.subscribe(topic)`; resumed after every reconnect.
 * Several subscriptions to one topic on a client share one subscription on the wire, each with its
 * own buffer; one made while another is open starts at the shared position (a state topic's value,
 * or up to `last` recent events the client kept).
 * Events (`detail`): `snapshot`, `event`, `reset`, `join`, `leave` (presence: true) and `item` (the
 * item), `end` ({offset}), `error`.
 * Iterate it with `for await`; leaving the loop does not unsubscribe (`close()` does).
 */
export class Subscription extends EventTarget {
  /** @type {SubscriptionState} */
  #state;

  /** @param {symbol} key @param {SubscriptionState} state */
  constructor(key, state) {
    if (key !== KEY) throw new TypeError("use client.subscribe(topic) to create a Subscription");
    super();
    this.#state = state;
    state.target = this;
  }

  get topic() { return this.#state.topic; }
  /** The epoch of the last delivered item (null before the server answered). */
  get epoch() { return this.#state.feed?.epoch ?? null; }
  /** The offset of the last delivered item: the resume point. */
  get offset() { return this.#state.feed?.offset ?? null; }
  /** "stream", "state", or null (unknown, or nothing written yet). */
  get kind() { return this.#state.feed?.kind ?? null; }
  /** The topic ended (an `end` frame came). */
  get ended() { return this.#state.ended; }
  /** Resolves on the server's first answer with `{topic, epoch, offset, kind}`; rejects if refused. */
  get ready() { return this.#state.ready; }
  /** The topic's members (presence), in the order they joined; empty unless the server sends presence. */
  get members() { return [...(this.#state.feed?.members.values() ?? [])]; }

  /** Unsubscribe and end iteration; idempotent. */
  close() { this.#state.unsubscribe(this.#state); }

  /** The same as `close()`. */
  unsubscribe() { this.close(); }

  /** @returns {AsyncIterableIterator<Item>} */
  [Symbol.asyncIterator]() {
    const state = this.#state;
    return {
      next: () => {
        state.flushStart();
        return state.queue.next();
      },
      return: async () => ({ value: undefined, done: true }),
      [Symbol.asyncIterator]() { return this; },
    };
  }
}

// ------------------------------------------------------------------------------------------------
// Client

const CLIENT_OPTIONS = [
  "token", "connectTimeout", "backoff", "random", "minUptime", "closeCodes", "signal", "WebSocket", "clock",
];

/**
 * One WebSocket, from its creation to its end.
 * @typedef {object} Link
 * @property {WebSocket} ws
 * @property {string | null} token
 * @property {(result: {end: AttemptEnd, error: Error}) => void} resolve ends the attempt
 * @property {boolean} done
 * @property {number | null} openedAt when `welcome` came (null before)
 * @property {number} lastHeard when the last message came
 * @property {number} window silence that means a dead link: timeout + interval
 * @property {Deadline | null} timer the connect timeout, then the heartbeat watchdog
 * @property {Set<Feed>} sent feeds whose subscribe went out on this link
 * @property {Set<Feed>} answered feeds this link answered
 * @property {Map<number, Pending>} pending publishes and requests sent, by ref
 * @property {() => void} detach removes the socket listeners
 */

/**
 * A publish or a request sent on a link, waiting for its answer.
 * @typedef {object} Pending
 * @property {(value: any) => void} resolve @property {(e: unknown) => void} reject
 * @property {string} lost what the caller is told if the link drops first
 */

/**
 * @typedef {object} Wait the wait between two attempts
 * @property {number} deadline monotonic ms @property {number} wallAt the same, Date.now() ms
 * @property {number | null} nowAt set by reconnectNow() @property {Deadline | null} timer
 * @property {ClientStateName} state @property {number | null} code @property {string} reason
 * @property {unknown} error @property {() => void} done ends the wait
 */

/**
 * A connection to a trioconn Hub that reconnects by itself (see the module comment).
 * Events (`detail`): `statechange` (StateChange), `open` ({session}), `close` ({code, reason, error}).
 */
export class Client extends EventTarget {
  // options
  #url; #token; #connectTimeout; #backoff; #random; #minUptime; #overrides; #signal; #WebSocket; #clock;
  // state
  /** @type {StateChange} */ #detail;
  #paused = false;
  /** @type {string | null} */ #session = null;
  /** @type {{interval: number, timeout: number} | null} */ #heartbeat = null;
  /** @type {Map<string, Feed>} one feed (wire subscription) per topic */ #subs = new Map();
  #nextRef = 1;
  #stats = {
    attempts: 0, connects: 0, reconnects: 0, pingsAnswered: 0, lastRtt: /** @type {number | null} */ (null),
    eventsReceived: 0, resets: 0,
  };
  /** @type {Link | null} the link being attempted or open */ #attempt = null;
  /** @type {Link | null} the open link (after welcome) */ #link = null;
  /** @type {Wait | null} */ #wait = null;
  /** @type {Set<(link: Link | null) => void>} publishes waiting for a link (null: closed) */
  #linkWaiters = new Set();
  #everOpen = false;
  #closing = false;
  /** @type {ReconnectFailed | null} */ #fatal = null;
  /** @type {Promise<void> | null} */ #closeDone = null;
  /** @type {Promise<void>} */ #closed;
  #resolveClosed = () => {};
  #rejectClosed = (/** @type {unknown} */ _error) => {};
  #onAbort = () => void this.close();

  /**
   * Start connecting at once (state "connecting").
   * @param {string | URL} url ws:, wss:, http(s): (mapped to ws(s):) or relative to the page
   * @param {{token?: () => string | Promise<string>, connectTimeout?: number,
   *   backoff?: BackoffPolicy | {base?: number, factor?: number, cap?: number, maxAttempts?: number | null},
   *   random?: () => number, minUptime?: number, closeCodes?: Record<number, CloseActionName>,
   *   signal?: AbortSignal, WebSocket?: typeof WebSocket, clock?: Clock}} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#url = resolveUrl(url);
    const {
      token = null, connectTimeout = 10000, backoff = {}, random = Math.random, minUptime = 10000, closeCodes,
      signal, WebSocket: WS = globalThis.WebSocket, clock,
    } = checkOptions(options, "Client", CLIENT_OPTIONS);
    if (token !== null && typeof token !== "function") {
      throw new TypeError(`token must be a function returning a string, not ${typeName(token)}`);
    }
    /** @type {(() => string | Promise<string>) | null} */ this.#token = token;
    this.#connectTimeout = checkNumber("connectTimeout", connectTimeout);
    if (isObject(backoff) && typeof backoff.delay === "function") {
      if (!("maxAttempts" in backoff)) throw new TypeError("backoff must have a maxAttempts property (null: none)");
      /** @type {BackoffPolicy} */ this.#backoff = /** @type {any} */ (backoff);
    } else if (isObject(backoff)) {
      this.#backoff = new Backoff(backoff);
    } else {
      throw new TypeError(`backoff must be a Backoff or {base, factor, cap, maxAttempts}, not ${typeName(backoff)}`);
    }
    if (typeof random !== "function") throw new TypeError(`random must be a function, not ${typeName(random)}`);
    /** @type {() => number} */ this.#random = random;
    this.#minUptime = checkNumber("minUptime", minUptime, true);
    this.#overrides = checkOverrides(closeCodes);
    this.#signal = checkSignal("signal", signal);
    if (typeof WS !== "function") throw new TypeError("WebSocket must be a constructor (no global WebSocket here)");
    /** @type {typeof WebSocket} */ this.#WebSocket = WS;
    this.#clock = checkClock(clock);
    this.#detail = this.#change("connecting", {});
    this.#closed = new Promise((resolve, reject) => ([this.#resolveClosed, this.#rejectClosed] = [resolve, reject]));
    this.#closed.catch(() => {}); // a page that never awaits `closed` gets no unhandled rejection
    if (this.#signal?.aborted) {
      void this.close();
      return;
    }
    this.#signal?.addEventListener("abort", this.#onAbort);
    void this.#run();
  }

  /** "connecting" | "open" | "reconnecting" | "closed" */
  get state() { return this.#detail.state; }
  /** Automatic reconnection is paused (see `pause()`). */
  get paused() { return this.#paused; }
  /** The session id from the last `welcome`, or null. */
  get session() { return this.#session; }
  /** `{interval, timeout}` in ms from the last `welcome`, or null. */
  get heartbeat() { return this.#heartbeat; }
  /** Resolves when the client has closed normally; rejects with `ReconnectFailed` if it failed. */
  get closed() { return this.#closed; }

  /** A snapshot of the client's counters. */
  statistics() {
    let subscriptions = 0;
    for (const feed of this.#subs.values()) subscriptions += feed.locals.size;
    return { state: this.state, ...this.#stats, subscriptions, nextAttemptAt: this.#nextAttemptAt(), paused: this.#paused };
  }

  /**
   * The state changes, the current one first; ends after "closed". A reader more than 64 changes
   * behind skips to the oldest one kept.
   * @returns {AsyncIterableIterator<StateChange>}
   */
  stateChanges() {
    /** @type {Queue<StateChange>} */
    const queue = new Queue(HISTORY, null);
    const onChange = (/** @type {Event} */ event) => {
      const detail = /** @type {CustomEvent<StateChange>} */ (event).detail;
      queue.push(detail);
      if (detail.state === "closed") stop();
    };
    const stop = () => {
      this.removeEventListener("statechange", onChange);
      queue.end();
    };
    queue.push(this.#detail);
    if (this.state === "closed") queue.end();
    else this.addEventListener("statechange", onChange);
    return {
      next: () => queue.next(),
      return: async () => {
        stop();
        queue.items.length = 0;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }

  // ---------------------------------------------------------------------------------- controls

  /** Pause automatic reconnection: after the link is lost, wait until `resume()` or `reconnectNow()`. */
  pause() {
    if (this.#paused || this.state === "closed") return;
    this.#paused = true;
    this.#wait?.timer?.cancel();
    this.#showWait();
  }

  /** Resume automatic reconnection; a wait whose delay has passed ends at once. */
  resume() {
    if (!this.#paused || this.state === "closed") return;
    this.#paused = false;
    this.#showWait();
    const wait = this.#wait;
    if (wait === null || wait.nowAt !== null) return;
    if (this.#clock.now() >= wait.deadline) wait.done();
    else wait.timer = new Deadline(this.#clock, wait.deadline, wait.done);
  }

  /**
   * Start the next attempt at once, skipping the rest of the delay (paused or not).
   * @returns {boolean} false if the client was not waiting between attempts
   */
  reconnectNow() {
    const wait = this.#wait;
    if (wait === null || wait.nowAt !== null) return false;
    wait.nowAt = this.#clock.wall();
    this.#showWait();
    wait.done();
    return true;
  }

  // ---------------------------------------------------------------------------------- requests

  /**
   * Subscribe to `topic`; resumed after every reconnect. Several subscriptions to one topic share
   * one subscription on the wire; one made while another is open starts at the shared position.
   * @param {string} topic
   * @param {{last?: number | null, signal?: AbortSignal, bufferSize?: number, presence?: boolean}} [options]
   *   last: replay up to this many recent events when it starts; signal: aborting it unsubscribes;
   *   bufferSize: items kept for the async iterator (1000), see `Subscription`; presence: also
   *   deliver `join`/`leave` items when the server sends presence for the topic.
   * @returns {Subscription}
   */
  subscribe(topic, options = {}) {
    checkTopic(topic);
    const known = ["last", "signal", "bufferSize", "presence"];
    const { last = null, signal, bufferSize = 1000, presence = false } = checkOptions(options, "subscribe", known);
    if (last !== null) checkInteger("last", last, 0);
    checkInteger("bufferSize", bufferSize, 1);
    if (typeof presence !== "boolean") throw new TypeError(`presence must be a boolean, not ${typeName(presence)}`);
    const abort = checkSignal("signal", signal);
    if (this.state === "closed") throw this.#closedError();
    const state = new SubscriptionState(topic, last, bufferSize, presence, (s) => this.#unsubscribe(s));
    const sub = new Subscription(KEY, state);
    if (abort?.aborted) {
      state.finish(null);
      return sub;
    }
    let feed = this.#subs.get(topic);
    const fresh = feed === undefined;
    if (feed === undefined) this.#subs.set(topic, (feed = new Feed(topic)));
    feed.add(state);
    if (abort !== null) {
      const onAbort = () => this.#unsubscribe(state);
      abort.addEventListener("abort", onAbort);
      state.detach = () => abort.removeEventListener("abort", onAbort);
    }
    if (fresh && this.#link !== null) this.#sendSubscribe(this.#link, feed);
    return sub;
  }

  /** A local subscription leaves; the last one of its topic unsubscribes on the wire. @param {SubscriptionState} state */
  #unsubscribe(state) {
    if (state.finished) return;
    const feed = state.feed;
    state.finish(null);
    if (feed === null || feed.remove(state) === false || this.#subs.get(feed.topic) !== feed) return;
    this.#subs.delete(feed.topic);
    const link = this.#link;
    if (link !== null && link.sent.has(feed)) {
      this.#send(link, JSON.stringify({ type: "unsubscribe", topic: feed.topic, ref: this.#nextRef++ }));
    }
  }

  /** @param {Link} link @param {Feed} feed */
  #sendSubscribe(link, feed) {
    if (this.#send(link, feed.frame(this.#nextRef++))) link.sent.add(feed);
  }

  /**
   * Send one frame; false if the socket is closing (nothing sent: its close event is next).
   * @param {Link} link @param {string} text
   */
  #send(link, text) {
    if (link.done || link.ws.readyState !== OPEN) return false;
    try {
      link.ws.send(text);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Publish `data` to `topic`; resolves with the offset the server stored it at. Waits while
   * disconnected (bounded by `timeout`). Never re-sent: if the link drops after sending, it rejects
   * with `ConnectionBroken` (the server may or may not have stored it).
   * @param {string} topic @param {unknown} data
   * @param {{timeout?: number, signal?: AbortSignal}} [options] timeout: ms (10000; Infinity: none)
   * @returns {Promise<number>}
   */
  publish(topic, data, options = {}) {
    return this.#ask("publish", topic, data, options, "the server acknowledged the publish",
      "it may or may not have been stored");
  }

  /**
   * Ask the server's request handler for `topic`; resolves with its answer. The request goes on
   * the live connection, after everything sent before it, and its answer comes in order with the
   * subscriptions' items. Waits while disconnected (bounded by `timeout`). Never re-sent: if the
   * link drops after sending, it rejects with `ConnectionBroken` (the handler may or may not have
   * run). An `error` answer rejects with `ServerError` (`no-handler`, `forbidden`, `request-failed`,
   * `request-timeout`, `too-many-requests`, or the handler's own code); no answer in time with
   * `RequestTimeout`.
   * @param {string} topic @param {unknown} data
   * @param {{timeout?: number, signal?: AbortSignal}} [options] timeout: ms (10000; Infinity: none)
   * @returns {Promise<unknown>}
   */
  request(topic, data, options = {}) {
    return this.#ask("request", topic, data, options, "the server answered the request",
      "the handler may or may not have run");
  }

  /**
   * Send a publish or a request once a link is up, and wait for its answer (matched by ref).
   * @param {"publish" | "request"} type @param {string} topic @param {unknown} data @param {unknown} options
   * @param {string} before what the answer would have told @param {string} outcome what is unknown once sent
   * @returns {Promise<any>}
   */
  #ask(type, topic, data, options, before, outcome) {
    let text, timeout, signal;
    try {
      checkTopic(topic);
      ({ timeout = 10000, signal } = checkOptions(options, type, ["timeout", "signal"]));
      if (timeout !== Infinity) checkNumber("timeout", timeout);
      signal = checkSignal("signal", signal);
      text = `{"type":"${type}","topic":${JSON.stringify(topic)},"data":${encodeData(data)},"ref":`;
    } catch (exc) {
      return Promise.reject(exc);
    }
    if (this.state === "closed") return Promise.reject(this.#closedError());
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      /** @type {Link | null} */
      let sentOn = null;
      let ref = 0;
      /** @param {(value: any) => void} fn @param {unknown} value */
      const settle = (fn, value) => {
        timer?.cancel();
        signal?.removeEventListener("abort", onAbort);
        this.#linkWaiters.delete(onLink);
        sentOn?.pending.delete(ref);
        fn(value);
      };
      const onLink = (/** @type {Link | null} */ link) => {
        if (link === null) return settle(reject, this.#closedError());
        ref = this.#nextRef++;
        if (!this.#send(link, text + ref + "}")) return; // the link is closing: wait for the next
        this.#linkWaiters.delete(onLink);
        sentOn = link;
        const lost = `the connection was lost before ${before}; ${outcome}`;
        link.pending.set(ref, { resolve: (value) => settle(resolve, value), reject: (e) => settle(reject, e), lost });
      };
      const onAbort = () => settle(reject, abortReason(/** @type {AbortSignal} */ (signal)));
      const timer = timeout === Infinity ? null : new Deadline(this.#clock, this.#clock.now() + timeout, () => {
        const what = sentOn === null ? "no connection" : "no answer";
        const message = `${type} to ${JSON.stringify(topic)}: ${what} within ${timeout} ms; `
          + (sentOn === null ? "nothing was sent" : outcome);
        settle(reject, new RequestTimeout(message));
      });
      signal?.addEventListener("abort", onAbort);
      this.#linkWaiters.add(onLink);
      if (this.#link !== null) onLink(this.#link);
    });
  }

  /**
   * Close with 1000; the client never reconnects. Resolves when the closing handshake is over (at
   * most 5 s later). Idempotent.
   * @returns {Promise<void>}
   */
  close() {
    if (this.#closeDone !== null) return this.#closeDone;
    this.#end({ code: 1000, reason: "closed by the client", error: null }, null);
    const link = this.#attempt;
    let socketClosed = Promise.resolve();
    if (link !== null) {
      const { ws } = link;
      socketClosed = new Promise((resolve) => {
        const finish = () => {
          timer.cancel();
          ws.removeEventListener("close", finish);
          resolve();
        };
        const timer = new Deadline(this.#clock, this.#clock.now() + CLOSE_TIMEOUT, finish);
        ws.addEventListener("close", finish);
        this.#finishLink(link, { kind: "closed", code: 1000 }, new ConnectionClosed(1000, "closed by the client"));
        try {
          ws.close(1000, "client closed");
        } catch {
          finish();
        }
      });
    }
    this.#closeDone = socketClosed.then(() => this.#resolveClosed());
    return this.#closeDone;
  }

  // -------------------------------------------------------------------------------- the loop

  async #run() {
    await null; // the page adds its listeners first
    /** @type {Tally} */
    let tally = { attempts: 1, failures: 0, reauthUsed: false };
    try {
      for (;;) {
        const token = await this.#freshToken();
        if (this.#closing) return;
        this.#stats.attempts += 1;
        const { end, error } = await this.#attemptOnce(token);
        if (this.#closing) return;
        const decision = decide(end, tally, {
          backoff: this.#backoff, random: this.#random, minUptime: this.#minUptime,
          hasTokenProvider: this.#token !== null, overrides: this.#overrides,
        });
        tally = decision.tally;
        const code = error instanceof ConnectionClosed ? error.code : null;
        if (decision.action === "done") {
          const reason = error instanceof ConnectionClosed ? error.reason : "";
          this.#end({ code, reason: reason || "done", error }, null);
          this.#resolveClosed();
          return;
        }
        if (decision.action === "fail") {
          const message = decision.exhausted
            ? `gave up after ${tally.attempts} failed attempt(s) in a row; last: ${error.message}`
            : `connection failed for good: ${error.message}`;
          throw new ReconnectFailed(message, error, decision.exhausted);
        }
        await this.#waitForNextAttempt(decision.delay, { code, reason: error.message, error });
        if (this.#closing) return;
      }
    } catch (exc) {
      if (this.#closing) return;
      const failure = exc instanceof ReconnectFailed ? exc : new ReconnectFailed(`internal error: ${exc}`, exc);
      this.#fatal = failure;
      const { cause } = failure;
      const code = cause instanceof ConnectionClosed ? cause.code : null;
      this.#end({ code, reason: failure.message, error: failure }, failure);
      this.#rejectClosed(failure);
    }
  }

  async #freshToken() {
    if (this.#token === null) return null;
    let token;
    try {
      token = await this.#token();
    } catch (exc) {
      throw new ReconnectFailed(`the token getter failed: ${exc}`, exc);
    }
    if (validToken(token)) return /** @type {string} */ (token);
    const length = typeof token === "string" ? ` of length ${token.length}` : "";
    const error = new TypeError("the token getter must return a non-empty string of visible ASCII characters "
      + `(no spaces or control characters); got ${typeName(token)}${length}`);
    throw new ReconnectFailed(error.message, error);
  }

  /** Run one WebSocket from creation to end; resolves with how it ended. @param {string | null} token */
  #attemptOnce(token) {
    return /** @type {Promise<{end: AttemptEnd, error: Error}>} */ (new Promise((resolve) => {
      const url = new URL(this.#url);
      if (token !== null) url.searchParams.set("token", token);
      let ws;
      try {
        ws = new this.#WebSocket(url.href);
      } catch (exc) {
        // A bad URL or a refused scheme (mixed content): trying again cannot fix it.
        const why = redact(String(/** @type {any} */ (exc)?.message ?? exc), token);
        const message = `cannot open a WebSocket to ${this.#url}: ${why}`;
        throw new ReconnectFailed(message, new TrioconnError(message));
      }
      const onMessage = (/** @type {MessageEvent} */ event) => this.#onMessage(link, event);
      const onClose = (/** @type {CloseEvent} */ event) => this.#onClose(link, event);
      /** @type {Link} */
      const link = {
        ws, token, resolve, done: false, openedAt: null, lastHeard: 0, window: 0, timer: null,
        sent: new Set(), answered: new Set(), pending: new Map(),
        detach: () => {
          ws.removeEventListener("message", onMessage);
          ws.removeEventListener("close", onClose);
        },
      };
      ws.addEventListener("message", onMessage);
      ws.addEventListener("close", onClose);
      this.#attempt = link;
      const ms = this.#connectTimeout;
      link.timer = new Deadline(this.#clock, this.#clock.now() + ms, () => this.#abandon(link, { kind: "timeout" },
        new ConnectionBroken(`no welcome from the server within connectTimeout (${ms} ms)`), 4000, "connect timeout"));
    }));
  }

  /**
   * The link is over (for any reason): stop listening, fail its publishes, end the attempt.
   * @param {Link} link @param {AttemptEnd} end @param {Error} error
   */
  #finishLink(link, end, error) {
    if (link.done) return;
    link.done = true;
    link.timer?.cancel();
    link.detach();
    if (this.#attempt === link) this.#attempt = null;
    if (this.#link === link) this.#link = null;
    const pending = [...link.pending.values()];
    link.pending.clear();
    for (const { reject, lost } of pending) reject(new ConnectionBroken(lost));
    link.resolve({ end: { ...end, uptime: link.openedAt === null ? null : this.#clock.now() - link.openedAt }, error });
  }

  /**
   * End a link from our side without waiting for the peer (it went silent, or broke protocol).
   * @param {Link} link @param {AttemptEnd} end @param {Error} error @param {number} code @param {string} reason
   */
  #abandon(link, end, error, code, reason) {
    this.#finishLink(link, end, error);
    try {
      link.ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  /** @param {Link} link @param {CloseEvent} event */
  #onClose(link, event) {
    const reason = redact(String(event.reason ?? ""), link.token);
    const { code } = event;
    if (code === 1006 || code === 1015 || !Number.isInteger(code)) {
      this.#finishLink(link, { kind: "broken", reason }, new ConnectionBroken(reason || "connection lost"));
    } else {
      this.#finishLink(link, { kind: "closed", code, reason }, new ConnectionClosed(code, reason));
    }
  }

  /** @param {Link} link @param {MessageEvent} event */
  #onMessage(link, event) {
    if (link.done) return;
    link.lastHeard = this.#clock.now();
    let frames;
    try {
      frames = parseMessage(event.data);
      if (link.openedAt === null && (frames.length !== 1 || frames[0].type !== "welcome")) {
        throw new ProtocolError("unexpected-frame", "the first frame from the server must be 'welcome'");
      }
    } catch (exc) {
      if (!(exc instanceof ProtocolError)) throw exc;
      exc.message = redact(exc.message, link.token); // a server may echo the request
      this.#abandon(link, { kind: "protocol-error", reason: exc.message }, exc, 4002, "protocol error");
      return;
    }
    if (link.openedAt === null) return this.#opened(link, frames[0]);
    for (const frame of frames) {
      if (link.done) return; // a listener closed the client, or a frame ended the link
      this.#dispatch(link, frame);
    }
  }

  /** @param {Link} link @param {any} welcome */
  #opened(link, welcome) {
    link.openedAt = link.lastHeard;
    link.window = (welcome.timeout + welcome.interval) * 1000;
    link.timer?.cancel();
    link.timer = new Deadline(this.#clock, link.lastHeard + link.window, () => this.#watchdog(link));
    this.#link = link;
    this.#session = welcome.session;
    this.#heartbeat = Object.freeze({ interval: welcome.interval * 1000, timeout: welcome.timeout * 1000 });
    this.#stats.connects += 1;
    if (this.#everOpen) this.#stats.reconnects += 1;
    this.#everOpen = true;
    for (const feed of this.#subs.values()) this.#sendSubscribe(link, feed);
    this.#record("open", { reason: `session ${welcome.session.slice(0, 64)}` });
    if (link.done) return; // a statechange listener closed the client
    this.dispatchEvent(detailEvent("open", { session: welcome.session }));
    for (const onLink of [...this.#linkWaiters]) if (this.#link === link) onLink(link);
  }

  /** The watchdog's timer fired: the link is dead if nothing came for the whole window. @param {Link} link */
  #watchdog(link) {
    const silent = this.#clock.now() - link.lastHeard;
    if (silent < link.window) {
      link.timer = new Deadline(this.#clock, link.lastHeard + link.window, () => this.#watchdog(link));
      return;
    }
    const { interval, timeout } = /** @type {{interval: number, timeout: number}} */ (this.#heartbeat);
    const error = new ConnectionBroken(`heartbeat: nothing from the server for ${Math.round(silent)} ms `
      + `(its timeout ${timeout} ms + one ping interval ${interval} ms)`);
    this.#abandon(link, { kind: "timeout", reason: error.reason }, error, 4000, "heartbeat timeout");
  }

  /** @param {Link} link @param {any} frame */
  #dispatch(link, frame) {
    const feed = this.#subs.get(frame.topic);
    const answered = feed !== undefined && link.answered.has(feed);
    switch (frame.type) {
      case "event": {
        this.#stats.eventsReceived += 1;
        const item = answered ? feed.onEvent(frame) : null;
        if (item !== null) feed?.deliver([item]);
        return;
      }
      case "ping":
        // Answered here, in the message handler: a background tab's timers may be throttled.
        if (this.#send(link, `{"type":"pong","id":${frame.id}}`)) {
          this.#stats.pingsAnswered += 1;
          if (frame.rtt !== null) this.#stats.lastRtt = frame.rtt * 1000;
        }
        return;
      case "subscribed":
      case "reset":
        if (feed === undefined || (frame.ref !== null && frame.ref !== feed.ref)) return; // not our latest subscribe
        link.answered.add(feed);
        if (frame.type === "reset") this.#stats.resets += 1;
        feed.deliver(feed.onAnswer(frame));
        return;
      case "join": // presence: like events, ignored until this connection answered (its member list decides)
        if (answered) feed.deliver(feed.onJoin(joinItem(frame.topic, frame.info, frame.session, frame.since)));
        return;
      case "leave":
        if (answered) feed.deliver(feed.onLeave(frame.session));
        return;
      case "end":
        if (answered) {
          this.#subs.delete(frame.topic);
          feed.finish(null, { end: frame.offset });
        }
        return;
      case "published":
        if (typeof frame.ref === "number") link.pending.get(frame.ref)?.resolve(frame.offset);
        return;
      case "reply": // no pending request: it timed out or was aborted, and its answer is not needed
        if (typeof frame.ref === "number") link.pending.get(frame.ref)?.resolve(frame.data);
        return;
      case "error":
        return this.#onError(link, frame);
      case "welcome": {
        const error = new ProtocolError("unexpected-frame", "a second 'welcome' on the same connection");
        return this.#abandon(link, { kind: "protocol-error", reason: error.message }, error, 4002, "protocol error");
      }
      default: // unsubscribed: nothing to do
    }
  }

  /**
   * An `error` frame answers a publish, a request or a subscribe of ours (by `ref`), or nothing we
   * can name (then it is ignored: e.g. the late answer to a request that timed out).
   * @param {Link} link @param {any} frame
   */
  #onError(link, frame) {
    const error = new ServerError(frame.code, frame.message, frame.ref, frame.topic);
    const pending = typeof frame.ref === "number" ? link.pending.get(frame.ref) : undefined;
    if (pending !== undefined) return pending.reject(error);
    if (frame.ref === null) return;
    for (const [topic, feed] of this.#subs) {
      if (feed.ref === frame.ref) {
        this.#subs.delete(topic);
        return feed.finish(error);
      }
    }
  }

  // ------------------------------------------------------------------------ waits and states

  /**
   * Wait `delay` ms before the next attempt, or as pause(), resume() and reconnectNow() say.
   * @param {number} delay @param {{code: number | null, reason: string, error: unknown}} cause
   */
  #waitForNextAttempt(delay, cause) {
    return new Promise((resolve) => {
      /** @type {Wait} */
      const wait = {
        deadline: this.#clock.now() + delay, wallAt: this.#clock.wall() + delay, nowAt: null, timer: null,
        state: this.#everOpen ? "reconnecting" : "connecting", ...cause,
        done: () => {
          wait.timer?.cancel();
          if (this.#wait === wait) this.#wait = null;
          resolve(undefined);
        },
      };
      this.#wait = wait;
      this.#showWait();
      if (this.#paused) return;
      if (delay <= 0) wait.done(); // reauth: at once
      else wait.timer = new Deadline(this.#clock, wait.deadline, wait.done);
    });
  }

  #nextAttemptAt() {
    const wait = this.#wait;
    if (wait === null) return null;
    return wait.nowAt ?? (this.#paused ? null : wait.wallAt);
  }

  /** Record the wait as it is now (outside a wait: the current state, with the new `paused`). */
  #showWait() {
    const wait = this.#wait;
    const { state, code, reason, error } = wait ?? this.#detail;
    this.#record(state, { code, reason, error, nextAttemptAt: this.#nextAttemptAt() });
  }

  /** @param {ClientStateName} state @param {Partial<StateChange>} fields @returns {StateChange} */
  #change(state, { code = null, reason = "", error = null, nextAttemptAt = null }) {
    return Object.freeze({ state, code, reason, error, nextAttemptAt, paused: this.#paused, time: this.#clock.wall() });
  }

  /**
   * Enter `state` and fire `statechange`; false (nothing done) once closed.
   * @param {ClientStateName} state @param {Partial<StateChange>} fields
   */
  #record(state, fields) {
    if (this.state === "closed") return false;
    this.#detail = this.#change(state, fields);
    this.dispatchEvent(detailEvent("statechange", this.#detail));
    return true;
  }

  /**
   * The client is over: record "closed", end the wait, the subscriptions and the waiting publishes.
   * @param {{code: number | null, reason: string, error: unknown}} fields @param {ReconnectFailed | null} failure
   */
  #end(fields, failure) {
    this.#closing = true;
    if (!this.#record("closed", fields)) return;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#wait?.done();
    const closedError = this.#closedError();
    const feeds = [...this.#subs.values()];
    this.#subs.clear();
    for (const feed of feeds) feed.finish(failure, { readyError: closedError });
    const waiters = [...this.#linkWaiters];
    this.#linkWaiters.clear();
    for (const onLink of waiters) onLink(null);
    this.dispatchEvent(detailEvent("close", { code: fields.code, reason: fields.reason, error: failure }));
  }

  #closedError() {
    return this.#fatal ?? new ConnectionClosed(this.#detail.code ?? 1000, this.#detail.reason);
  }
}

/**
 * Create a `Client` and wait for its first `welcome`.
 * @param {string | URL} url
 * @param {ConstructorParameters<typeof Client>[1] & {timeout?: number}} [options] the client's options,
 *   and timeout: ms for the whole connect (RequestTimeout; the client is then closed)
 * @returns {Promise<Client>} rejects with ReconnectFailed if the client fails first, with the
 *   signal's reason if it is aborted
 */
export function connect(url, options = {}) {
  let client, timeout;
  try {
    const { timeout: given = Infinity, ...rest } = checkOptions(options, "connect", [...CLIENT_OPTIONS, "timeout"]);
    timeout = given === Infinity ? given : checkNumber("timeout", given);
    client = new Client(url, rest);
  } catch (exc) {
    return Promise.reject(exc);
  }
  const { signal = null, clock: given } = options;
  const clock = checkClock(given);
  const closedWith = (/** @type {number | null} */ code, /** @type {string} */ reason) =>
    signal?.aborted ? abortReason(signal) : new ConnectionClosed(code ?? 1000, reason);
  return new Promise((resolve, reject) => {
    if (client.state === "closed") return reject(closedWith(1000, "closed"));
    /** @param {() => void} fn */
    const settle = (fn) => {
      timer?.cancel();
      client.removeEventListener("open", onOpen);
      client.removeEventListener("close", onClose);
      fn();
    };
    const onOpen = () => settle(() => resolve(client));
    const onClose = (/** @type {Event} */ event) => {
      const { error, code, reason } = /** @type {CustomEvent} */ (event).detail;
      settle(() => reject(error ?? closedWith(code, reason)));
    };
    client.addEventListener("open", onOpen);
    client.addEventListener("close", onClose);
    const timer = timeout === Infinity ? null : new Deadline(clock, clock.now() + timeout, () => {
      settle(() => reject(new RequestTimeout(`no connection within timeout (${timeout} ms)`)));
      void client.close();
    });
  });
}
