/**
 * trioconn.js: the browser client of trioconn (wire protocol v1). One dependency-free ES module.
 *
 * Theory of operation
 * -------------------
 * A `Client` runs one loop of connection *attempts* (`#run`). Before each attempt it calls the
 * token getter, opens a WebSocket and waits for the server's `welcome` within `connectTimeout`.
 * From `welcome` on, the link is *open*: subscriptions are (re)sent with their resume point, every
 * `ping` is answered with `pong` from inside the `message` handler (never from a timer, so a
 * background tab whose timers are throttled keeps answering), and a watchdog declares the link dead
 * after `timeout + interval` of silence (the server pings every `interval` and gives up on us after
 * `timeout`). The watchdog compares real elapsed time (`performance.now()`) when its timer fires and
 * re-arms for the remainder, so a throttled timer fires late but never cuts a link early.
 *
 * How an attempt ended is described once (`{kind, code, reason, uptime}`) and the pure `decide()`
 * (a port of `trioconn/_core/decision.py`, tested against the Python table) says what follows:
 * `done` (close 1000: never reconnect), `fail` (final codes such as 4403/1008, protocol errors,
 * attempts exhausted), `reauth` (4401: once per healthy link, with a fresh token) or `reconnect`
 * after a full-jitter backoff delay. A close frame from the server decides; 1006 and 1015 (no close
 * frame: network failure) count as a broken link.
 *
 * Subscriptions outlive connections. Each remembers the epoch and offset of the last item it
 * delivered and resumes from there; events are ignored until this connection answered our
 * `subscribe` (matched by `ref`), and an offset not beyond the last one delivered in the same epoch
 * is dropped, so no event is delivered twice. A lost resume point arrives as a `reset` item.
 *
 * Close codes this client sends (browsers only allow 1000 and 3000-4999):
 * - 1000 "client closed": `close()`, an aborted `signal`;
 * - 4000 "heartbeat timeout" / "connect timeout": the server went silent (the socket is then
 *   abandoned at once, without waiting for the closing handshake);
 * - 4002 "protocol error": the server sent a frame protocol v1 does not allow (Python sends 1002,
 *   which a page may not send).
 *
 * Units: every duration is in milliseconds; `nextAttemptAt` and `time` are `Date.now()` values.
 * The token is never part of an error message or an event detail: text from outside (a close
 * reason, a browser error) is scrubbed of it.
 *
 * Testing hook: the `clock` option ({now, wall, setTimeout, clearTimeout}) replaces
 * `performance.now`, `Date.now` and the timer functions. It exists for unit tests with fake timers;
 * pages never need it.
 */

/** @typedef {"done" | "fail" | "reauth" | "reconnect"} CloseActionName */
/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} ClientStateName */
/**
 * @typedef {object} AttemptEnd
 * @property {"closed" | "protocol-error" | "broken" | "timeout"} kind
 * @property {number} [code] the close code (kind "closed" only)
 * @property {string} [reason]
 * @property {number | null} [uptime] ms the link was open after `welcome`; null if it never opened
 */
/**
 * @typedef {object} Tally
 * @property {number} attempts counted attempts since the last healthy link (a new client: 1)
 * @property {number} failures consecutive unhealthy ends (the backoff's `failures`)
 * @property {boolean} reauthUsed the fresh-token retry has been spent
 */
/**
 * @typedef {object} Decision
 * @property {CloseActionName} action
 * @property {number} delay ms to wait (0 unless "reconnect")
 * @property {Tally} tally pass it to the next `decide()`
 * @property {boolean} exhausted "fail" only because maxAttempts attempts in a row failed
 */
/**
 * @typedef {object} Clock
 * @property {() => number} now monotonic ms (performance.now)
 * @property {() => number} wall epoch ms (Date.now)
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(id: unknown) => void} clearTimeout
 */

export const VERSION = "0.1.0-dev.0";

const PROTOCOL_VERSION = 1;
const MAX_TOPIC_LENGTH = 256;
const MAX_REF_LENGTH = 128;
const MAX_DATA_DEPTH = 32;
const MAX_FRAME_DEPTH = MAX_DATA_DEPTH + 3;
const MIN_HEARTBEAT = 0.01;
const MAX_HEARTBEAT = 3600;
/** Bound on the closing handshake after `close()`; the socket is then left to the browser. */
const CLOSE_TIMEOUT = 5000;
/** setTimeout's largest delay; longer waits re-arm. */
const MAX_TIMER = 2 ** 31 - 1;
/** How many state changes a slow `stateChanges()` reader can fall behind before skipping. */
const HISTORY = 64;
const SESSION_SHOWN = 64;
const OPEN = 1;
const ACTIONS = ["done", "fail", "reauth", "reconnect"];

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

/** A close frame ended the connection (`code`, `reason`). */
export class ConnectionClosed extends TrioconnError {
  /** @param {number} code @param {string} [reason] @param {{cause?: unknown}} [options] */
  constructor(code, reason = "", options) {
    super(`connection closed with code ${code}${reason ? `: ${reason}` : ""}`, options);
    /** @type {number} */
    this.code = code;
    /** @type {string} */
    this.reason = reason;
  }
}

/** The connection ended without a close frame (network failure, dead link, timeout): code 1006. */
export class ConnectionBroken extends ConnectionClosed {
  /** @param {string} [reason] @param {{cause?: unknown}} [options] */
  constructor(reason = "", options) {
    super(1006, reason, options);
  }
}

/** A frame from the server broke protocol v1; `code` is e.g. "invalid-json", "invalid-field". */
export class ProtocolError extends TrioconnError {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    /** @type {string} */
    this.code = code;
  }
}

/** The client gave up for good; `cause` is the last failure. */
export class ReconnectFailed extends TrioconnError {
  /** @param {string} message @param {unknown} cause @param {boolean} [exhausted] */
  constructor(message, cause, exhausted = false) {
    super(message, { cause });
    /** @type {unknown} */
    this.cause = cause;
    /** @type {boolean} true if maxAttempts attempts in a row failed */
    this.exhausted = exhausted;
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
    /** @type {string} */
    this.code = code;
    /** @type {string} */
    this.serverMessage = serverMessage;
    /** @type {string | number | null} */
    this.ref = ref;
    /** @type {string | null} */
    this.topic = topic;
  }
}

/** A `publish()` or `connect()` did not finish within its `timeout`. */
export class RequestTimeout extends TrioconnError {}

// ------------------------------------------------------------------------------------------------
// Argument checks

/** @param {unknown} value */
function typeName(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/**
 * A finite number >= 0 (or > 0).
 * @param {string} name @param {unknown} value @param {{allowZero?: boolean}} [opts]
 * @returns {number}
 */
function checkNumber(name, value, { allowZero = false } = {}) {
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

/** @param {string} name @param {unknown} signal */
function checkSignal(name, signal) {
  if (signal !== undefined && signal !== null && !(signal instanceof AbortSignal)) {
    throw new TypeError(`${name} must be an AbortSignal, not ${typeName(signal)}`);
  }
  return /** @type {AbortSignal | null | undefined} */ (signal) ?? null;
}

/** @param {object} options @param {string} where @param {string[]} known */
function checkOptions(options, where, known) {
  if (options === null || typeof options !== "object") {
    throw new TypeError(`${where} options must be an object, not ${typeName(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new TypeError(`${where}: unknown option ${JSON.stringify(key)}`);
  }
}

/** The problem with a topic name, or "" if it is valid. @param {unknown} topic */
function topicProblem(topic) {
  if (typeof topic !== "string") return `must be a string, not ${typeName(topic)}`;
  if (!topic) return "must not be empty";
  if (topic.length > MAX_TOPIC_LENGTH && [...topic].length > MAX_TOPIC_LENGTH) {
    return `is longer than ${MAX_TOPIC_LENGTH} characters`;
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(topic)) return "must not contain control characters";
  return "";
}

/** @param {unknown} topic @returns {string} */
function checkTopic(topic) {
  const problem = topicProblem(topic);
  if (problem) {
    const Type = typeof topic === "string" ? RangeError : TypeError;
    throw new Type(`topic ${problem}`);
  }
  return /** @type {string} */ (topic);
}

/** @param {AbortSignal} signal */
function abortReason(signal) {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}

// ------------------------------------------------------------------------------------------------
// JSON limits (the same as the Python peer: depth 35 per frame, 32 for data, finite numbers)

/**
 * True if JSON `text` nests arrays/objects more than `limit` deep. Linear, no recursion.
 * @param {string} text @param {number} limit
 */
function depthExceeds(text, limit) {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > limit) return true;
    } else if (c === 125 || c === 93) depth--;
  }
  return false;
}

/** True if a parsed JSON value holds a number JSON.parse turned into ±Infinity. @param {unknown} v */
function hasNonFinite(v) {
  if (typeof v === "number") return !Number.isFinite(v);
  if (v === null || typeof v !== "object") return false;
  for (const item of Array.isArray(v) ? v : Object.values(v)) if (hasNonFinite(item)) return true;
  return false;
}

/**
 * Encode published data like the Python client: JSON only, finite numbers, at most 32 levels.
 * @param {unknown} data @returns {string}
 */
function encodeData(data) {
  let text;
  try {
    text = JSON.stringify(data, (_key, value) => {
      if (typeof value === "number" && !Number.isFinite(value)) {
        throw new TypeError(`numbers must be finite, got ${value}`);
      }
      return value;
    });
  } catch (exc) {
    throw new TypeError(`data is not JSON-serializable: ${/** @type {Error} */ (exc).message}`);
  }
  if (text === undefined) throw new TypeError(`data is not JSON-serializable: ${typeName(data)}`);
  if (depthExceeds(text, MAX_DATA_DEPTH)) {
    throw new TypeError(`data is nested more than ${MAX_DATA_DEPTH} levels deep`);
  }
  return text;
}

// ------------------------------------------------------------------------------------------------
// Server frames (validated as trioconn/_core/protocol.py does)

/** @param {string} field @param {string} why */
const bad = (field, why) => new ProtocolError("invalid-field", `field '${field}' ${why}`);

/** @param {any} o @param {string} [field] @returns {string} */
function topicField(o, field = "topic") {
  const problem = topicProblem(o[field]);
  if (problem) throw bad(field, problem);
  return o[field];
}

/** @param {any} o @param {string} field @param {boolean} [required] @returns {number | null} */
function intField(o, field, required = true) {
  const v = o[field];
  if (v == null && !required) return null;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw bad(field, "must be a non-negative integer");
  return v;
}

/** @param {any} o @param {string} field @returns {string} */
function strField(o, field) {
  if (typeof o[field] !== "string") throw bad(field, "must be a string");
  return o[field];
}

/** @param {any} o @returns {string | number | null} */
function refField(o) {
  const ref = o.ref;
  if (ref == null) return null;
  if (typeof ref === "string") {
    if (ref.length > MAX_REF_LENGTH) throw bad("ref", `must be at most ${MAX_REF_LENGTH} characters`);
    return ref;
  }
  if (typeof ref === "number" && Number.isInteger(ref)) return ref;
  throw bad("ref", "must be a string or an integer");
}

/** @param {any} o @param {string} field @returns {number} seconds */
function secondsField(o, field) {
  const v = o[field];
  if (typeof v !== "number" || !(v >= MIN_HEARTBEAT && v <= MAX_HEARTBEAT)) {
    throw bad(field, `must be a number of seconds from ${MIN_HEARTBEAT} to ${MAX_HEARTBEAT}`);
  }
  return v;
}

/** @param {unknown} v */
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const has = (/** @type {object} */ o, /** @type {string} */ k) => Object.prototype.hasOwnProperty.call(o, k);

/** @param {any} o @param {"subscribed" | "reset"} type */
function parseSubscribed(o, type) {
  const kind = o.kind ?? null;
  if (kind !== null && kind !== "stream" && kind !== "state") throw bad("kind", "must be 'stream', 'state' or null");
  return {
    type,
    topic: topicField(o),
    epoch: strField(o, "epoch"),
    offset: /** @type {number} */ (intField(o, "offset")),
    kind,
    snapshot: o.snapshot ?? null,
    hasSnapshot: has(o, "snapshot"),
    replayed: intField(o, "replayed", false) ?? 0,
    ended: Boolean(o.ended),
    ref: refField(o),
  };
}

/** @type {Record<string, (o: any) => any>} */
const SERVER_PARSERS = {
  welcome(o) {
    if (!isObject(o.heartbeat)) throw bad("heartbeat", "must be an object with 'interval' and 'timeout'");
    const version = intField(o, "version");
    if (version !== PROTOCOL_VERSION) {
      throw bad("version", `is ${version}; this client speaks version ${PROTOCOL_VERSION}`);
    }
    return {
      type: "welcome",
      session: strField(o, "session"),
      interval: secondsField(o.heartbeat, "interval"),
      timeout: secondsField(o.heartbeat, "timeout"),
      maxFrameSize: intField(o, "max_frame_size"),
    };
  },
  ping(o) {
    const rtt = o.rtt;
    const sane = typeof rtt === "number" && rtt >= 0 && rtt <= MAX_HEARTBEAT;
    return { type: "ping", id: intField(o, "id"), rtt: sane ? rtt : null };
  },
  subscribed: (o) => parseSubscribed(o, "subscribed"),
  reset: (o) => parseSubscribed(o, "reset"),
  event: (o) => ({ type: "event", topic: topicField(o), offset: intField(o, "offset"), data: o.data ?? null }),
  end: (o) => ({ type: "end", topic: topicField(o), offset: intField(o, "offset") }),
  unsubscribed: (o) => ({ type: "unsubscribed", topic: topicField(o), ref: refField(o) }),
  published: (o) => ({ type: "published", topic: topicField(o), offset: intField(o, "offset"), ref: refField(o) }),
  error: (o) => ({
    type: "error",
    code: strField(o, "code"),
    message: strField(o, "message"),
    ref: refField(o),
    topic: typeof o.topic === "string" ? o.topic : null,
  }),
};

/** @param {unknown} o @param {boolean} nested */
function parseServerObject(o, nested) {
  if (!isObject(o)) throw new ProtocolError("not-an-object", "frame must be a JSON object");
  const type = /** @type {any} */ (o).type;
  const parser = typeof type === "string" && has(SERVER_PARSERS, type) ? SERVER_PARSERS[type] : null;
  if (parser === null || (nested && type === "welcome")) {
    throw new ProtocolError("unknown-type", `unknown frame type ${JSON.stringify(type) ?? "undefined"}`);
  }
  return parser(o);
}

/**
 * One server message → its frames (a `batch` becomes its frames, in order).
 * @param {unknown} data @returns {any[]}
 */
function parseServerMessage(data) {
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
  if (obj.type !== "batch") return [parseServerObject(obj, false)];
  if (!Array.isArray(obj.frames)) throw bad("frames", "must be a list of frames");
  return obj.frames.map((/** @type {unknown} */ item) => parseServerObject(item, true));
}

// ------------------------------------------------------------------------------------------------
// Close codes and the reconnect decision (trioconn/_core/protocol.py and decision.py)

/** @param {string} name @param {CloseActionName} action @param {string} meaning */
const row = (name, action, meaning) => Object.freeze({ name, action, meaning });

/**
 * The one close-code table (the same rows as Python's `trioconn.CLOSE_CODES`; a test compares them).
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

/**
 * Check a `closeCodes` overrides object ({code: action}) and return it as a Map.
 * @param {unknown} overrides @returns {Map<number, CloseActionName>}
 */
function checkOverrides(overrides) {
  /** @type {Map<number, CloseActionName>} */
  const map = new Map();
  if (overrides == null) return map;
  if (typeof overrides !== "object") {
    throw new TypeError(`closeCodes must be an object of code → action, not ${typeName(overrides)}`);
  }
  const entries = overrides instanceof Map ? [...overrides] : Object.entries(overrides);
  for (const [key, action] of entries) {
    const code = Number(key);
    if (!Number.isInteger(code) || code < 1000 || code > 4999) {
      throw new RangeError(`closeCodes: close code ${String(key)} is not an integer from 1000 to 4999`);
    }
    if (!ACTIONS.includes(action)) {
      throw new TypeError(`closeCodes[${code}] must be one of ${ACTIONS.join(", ")}; got ${JSON.stringify(action)}`);
    }
    map.set(code, action);
  }
  return map;
}

/**
 * What the client does after close `code`: the table, else 1000-2999 fail and the rest reconnect.
 * @param {number} code
 * @param {Record<number, CloseActionName> | Map<number, CloseActionName> | null} [overrides]
 * @returns {CloseActionName}
 */
export function closeAction(code, overrides) {
  checkInteger("code", code, 0);
  const chosen = checkOverrides(overrides).get(code);
  if (chosen !== undefined) return chosen;
  const info = CLOSE_CODES[code];
  if (info !== undefined) return info.action;
  return code >= 1000 && code < 3000 ? "fail" : "reconnect";
}

const END_KINDS = ["closed", "protocol-error", "broken", "timeout"];

/**
 * Decide what follows the end of an attempt; pure, the rules of `trioconn/_core/decision.py`.
 *
 * A link that lasted `minUptime` is healthy: losing it starts the count and the backoff again.
 * `maxAttempts` is how many attempts in a row may fail (a new client's first attempt counts).
 * `reauth` (4401) needs a token getter, happens once per healthy link and is not counted.
 *
 * @param {AttemptEnd} end
 * @param {Tally} tally what the previous decision returned ({attempts: 1, failures: 0, reauthUsed: false} at first)
 * @param {{backoff: {maxAttempts: number | null, delay(failures: number, random: () => number): number},
 *   random?: () => number, minUptime: number, hasTokenProvider: boolean,
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
  checkNumber("minUptime", minUptime, { allowZero: true });
  if (end.uptime != null && end.uptime >= minUptime) tally = { attempts: 0, failures: 0, reauthUsed: false };
  let action = end.kind === "closed" ? closeAction(/** @type {number} */ (end.code), overrides) : "reconnect";
  if (end.kind === "protocol-error") action = "fail";
  if (action === "reauth") {
    if (hasTokenProvider && !tally.reauthUsed) {
      return { action, delay: 0, tally: { ...tally, reauthUsed: true }, exhausted: false };
    }
    action = "fail";
  }
  if (action !== "reconnect") return { action, delay: 0, tally, exhausted: false };
  const failures = tally.failures + 1;
  const max = backoff.maxAttempts;
  if (max != null && tally.attempts >= max) {
    return { action: "fail", delay: 0, tally: { ...tally, failures }, exhausted: true };
  }
  const delay = backoff.delay(failures, random);
  return { action, delay, tally: { attempts: tally.attempts + 1, failures, reauthUsed: tally.reauthUsed }, exhausted: false };
}

/**
 * Exponential backoff with full jitter: before the n-th reconnect in a row, wait a delay drawn
 * uniformly from [0, min(cap, base * factor ** (n - 1))] ms.
 */
export class Backoff {
  /**
   * @param {{base?: number, factor?: number, cap?: number, maxAttempts?: number | null}} [options]
   *   base: first ceiling (500 ms: a server that is back at once is found within half a second);
   *   factor: growth per failure (2); cap: largest ceiling (30000 ms);
   *   maxAttempts: failed attempts in a row before giving up (null: never give up).
   */
  constructor(options = {}) {
    checkOptions(options, "Backoff", ["base", "factor", "cap", "maxAttempts"]);
    const { base = 500, factor = 2, cap = 30000, maxAttempts = null } = options;
    /** @type {number} */
    this.base = checkNumber("base", base);
    /** @type {number} */
    this.factor = checkNumber("factor", factor);
    /** @type {number} */
    this.cap = checkNumber("cap", cap);
    if (factor < 1) throw new RangeError(`factor must be >= 1, got ${factor}`);
    if (cap < base) throw new RangeError(`cap (${cap}) must be >= base (${base})`);
    /** @type {number | null} */
    this.maxAttempts = maxAttempts === null ? null : checkInteger("maxAttempts", maxAttempts, 1);
    Object.freeze(this);
  }

  /** The largest delay after `failures` consecutive failures. @param {number} failures */
  ceiling(failures) {
    checkInteger("failures", failures, 1);
    // Compare exponents instead of computing factor ** n, which overflows for large n.
    if (this.factor > 1 && (failures - 1) * Math.log(this.factor) >= Math.log(this.cap / this.base)) {
      return this.cap;
    }
    return Math.min(this.cap, this.base * this.factor ** (failures - 1));
  }

  /**
   * ms to wait after `failures` consecutive failed attempts: uniform in [0, ceiling].
   * @param {number} failures @param {() => number} [random]
   */
  delay(failures, random = Math.random) {
    if (typeof random !== "function") throw new TypeError(`random must be a function, not ${typeName(random)}`);
    const ceiling = this.ceiling(failures);
    const r = random();
    if (typeof r !== "number" || !(r >= 0 && r <= 1)) throw new RangeError(`random() must return a number in [0, 1], got ${r}`);
    return r * ceiling;
  }
}

// ------------------------------------------------------------------------------------------------
// Events and small helpers

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
  const c = /** @type {any} */ (clock);
  for (const name of ["now", "wall", "setTimeout", "clearTimeout"]) {
    if (typeof c[name] !== "function") throw new TypeError(`clock.${name} must be a function`);
  }
  return c;
}

/**
 * A timer for a deadline on the monotonic clock. When the timer fires, the real time is compared
 * with the deadline and the timer re-armed for what is left, so it never fires early.
 */
class Deadline {
  /** @param {Clock} clock @param {number} at @param {() => void} fn */
  constructor(clock, at, fn) {
    this.clock = clock;
    this.at = at;
    this.fn = fn;
    /** @type {unknown} */
    this.id = null;
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

  /** @param {number} at */
  moveTo(at) {
    this.at = at; // takes effect when the timer fires: no timer churn per message
  }

  cancel() {
    if (this.id !== null) this.clock.clearTimeout(this.id);
    this.id = null;
  }
}

const REDACTED = "<redacted>";

/** @param {string} text @param {string | null} token */
function redact(text, token) {
  if (!token || !text) return text;
  const encoded = new URLSearchParams({ t: token }).toString().slice(2);
  return text.split(token).join(REDACTED).split(encoded).join(REDACTED);
}

/**
 * A page's URL → the WebSocket URL: relative to the page, http(s) → ws(s), no fragment.
 * @param {unknown} url @returns {string}
 */
function resolveUrl(url) {
  if (url instanceof URL) url = url.href;
  if (typeof url !== "string" || !url) throw new TypeError(`url must be a non-empty string or a URL, not ${typeName(url)}`);
  const base = globalThis.location?.href;
  let parsed;
  try {
    parsed = base === undefined ? new URL(url) : new URL(url, base);
  } catch {
    throw new TypeError(`url ${JSON.stringify(url)} is not a valid URL${base === undefined ? " (a relative url needs a page)" : ""}`);
  }
  const schemes = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" };
  const scheme = /** @type {Record<string, string>} */ (schemes)[parsed.protocol];
  if (scheme === undefined) throw new TypeError(`url must be ws:, wss:, http:, https: or relative, got ${parsed.protocol}`);
  parsed.protocol = scheme;
  parsed.hash = "";
  return parsed.href;
}

/** A bearer token: visible ASCII, no spaces (as the Python client requires). @param {unknown} t */
const validToken = (t) => typeof t === "string" && /^[\x21-\x7e]+$/.test(t);

// ------------------------------------------------------------------------------------------------
// Subscriptions

const KEY = Symbol("trioconn internal");

/**
 * @typedef {{type: "event", topic: string, epoch: string, offset: number, data: unknown}} EventItem
 * @typedef {{type: "snapshot", topic: string, epoch: string, offset: number, value: unknown}} SnapshotItem
 * @typedef {{type: "reset", topic: string, epoch: string, offset: number, previousEpoch: string | null,
 *   previousOffset: number | null, kind: string | null, snapshot: unknown, hasSnapshot: boolean}} ResetItem
 * @typedef {EventItem | SnapshotItem | ResetItem} Item
 */

/** The bookkeeping behind a `Subscription` (resume point, dedupe, buffer); the client drives it. */
class SubscriptionCore {
  /**
   * @param {string} topic @param {number | null} last @param {number} bufferSize
   * @param {(core: SubscriptionCore) => void} unsubscribe
   */
  constructor(topic, last, bufferSize, unsubscribe) {
    /** @type {EventTarget} the public Subscription */
    this.sub = new EventTarget();
    this.topic = topic;
    this.last = last;
    this.bufferSize = bufferSize;
    this.unsubscribe = unsubscribe;
    /** @type {string | null} epoch of the last delivered item: the resume point */
    this.epoch = null;
    /** @type {number | null} */
    this.offset = null;
    /** @type {string | null} */
    this.kind = null;
    /** @type {number | null} ref of the subscribe sent on the current connection */
    this.ref = null;
    this.ended = false;
    this.finished = false;
    /** @type {unknown} */
    this.error = null;
    /** @type {Item[]} */
    this.buffer = [];
    this.lost = 0;
    /** @type {{resolve: (r: IteratorResult<Item>) => void, reject: (e: unknown) => void} | null} */
    this.waiter = null;
    /** @type {() => void} */
    this.detach = () => {};
    this.readySettled = false;
    /** @type {(v: {epoch: string, offset: number, kind: string | null}) => void} */
    this.resolveReady = () => {};
    /** @type {(e: unknown) => void} */
    this.rejectReady = () => {};
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // a page that never awaits `ready` gets no unhandled rejection
  }

  /** The `subscribe` frame for a new connection: resume if we have a position, else `last`. */
  frame(/** @type {number} */ ref) {
    this.ref = ref;
    /** @type {Record<string, unknown>} */
    const frame = { type: "subscribe", topic: this.topic, ref };
    if (this.epoch !== null) frame.resume = { epoch: this.epoch, offset: this.offset ?? 0 };
    else if (this.last !== null) frame.last = this.last;
    return JSON.stringify(frame);
  }

  /** @param {unknown} ref */
  matches(ref) {
    return ref === null || ref === this.ref;
  }

  /** Take a `subscribed`/`reset` answer; return the items to deliver. @param {any} frame @returns {Item[]} */
  onAnswer(frame) {
    /** @type {Item[]} */
    const items = [];
    const previousEpoch = this.epoch;
    const previousOffset = this.offset;
    if (frame.kind !== null) this.kind = frame.kind;
    // The replayed events that follow carry offsets up to frame.offset.
    const start = Math.max(frame.offset - frame.replayed, 0);
    const snapshot = () => Object.freeze({ type: "snapshot", topic: this.topic, epoch: frame.epoch, offset: frame.offset, value: frame.snapshot });
    if (frame.type === "reset") {
      items.push(Object.freeze({
        type: "reset", topic: this.topic, epoch: frame.epoch, offset: frame.offset, previousEpoch, previousOffset,
        kind: frame.kind, snapshot: frame.snapshot, hasSnapshot: frame.hasSnapshot,
      }));
      this.epoch = frame.epoch;
      this.offset = start;
    } else if (previousEpoch !== null && previousEpoch === frame.epoch) {
      // Resumed. A state topic is caught up by its snapshot rather than by replay.
      let position = previousOffset ?? 0;
      if (frame.hasSnapshot && frame.offset > position && frame.replayed === 0) {
        items.push(snapshot());
        position = frame.offset;
      }
      this.offset = position;
    } else {
      this.epoch = frame.epoch;
      this.offset = start;
      if (frame.hasSnapshot) {
        items.push(snapshot());
        this.offset = Math.max(start, frame.offset);
      }
    }
    if (!this.readySettled) {
      this.readySettled = true;
      this.resolveReady({ epoch: frame.epoch, offset: frame.offset, kind: frame.kind });
    }
    return items;
  }

  /** The item for an event, or null to drop it (a duplicate). @param {any} frame @returns {EventItem | null} */
  onEvent(frame) {
    if (this.epoch === null) return null;
    if (this.offset !== null && frame.offset <= this.offset) return null;
    this.offset = frame.offset;
    return Object.freeze({ type: "event", topic: this.topic, epoch: this.epoch, offset: frame.offset, data: frame.data });
  }

  /** Buffer `item` for the iterator (bounded) and fire its events. @param {Item} item */
  deliver(item) {
    if (this.finished) return;
    if (this.waiter !== null) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.resolve({ value: item, done: false });
    } else {
      if (this.buffer.length >= this.bufferSize) {
        this.buffer.shift();
        this.lost += 1;
      }
      this.buffer.push(item);
    }
    this.sub.dispatchEvent(detailEvent(item.type, item));
    this.sub.dispatchEvent(detailEvent("item", item));
  }

  /** @returns {Promise<IteratorResult<Item>>} */
  next() {
    if (this.lost > 0) {
      const lost = this.lost;
      this.lost = 0;
      return Promise.reject(new TrioconnError(
        `subscription to ${JSON.stringify(this.topic)} fell behind by ${lost} items (bufferSize ${this.bufferSize}); they were dropped`,
      ));
    }
    const item = this.buffer.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.finished) {
      return this.error === null ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.error);
    }
    if (this.waiter !== null) return Promise.reject(new TypeError("a previous next() is still waiting"));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /**
   * The subscription is over: iteration ends after the buffered items (or throws `error`).
   * @param {unknown} error null for a normal end
   * @param {{end?: number, readyError?: unknown}} [how] `end`: the topic ended at this offset;
   *   `readyError`: what `ready` rejects with if the server had not answered yet
   */
  finish(error, how = {}) {
    if (this.finished) return;
    this.finished = true;
    this.error = error;
    this.detach();
    if (!this.readySettled) {
      this.readySettled = true;
      this.rejectReady(error ?? how.readyError ?? new TrioconnError(`subscription to ${JSON.stringify(this.topic)} ended before the server answered`));
    }
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter !== null) {
      if (error === null) waiter.resolve({ value: undefined, done: true });
      else waiter.reject(error);
    }
    if (how.end !== undefined) {
      this.ended = true;
      this.sub.dispatchEvent(detailEvent("end", { offset: how.end }));
    } else if (error !== null) {
      this.sub.dispatchEvent(detailEvent("error", error));
    }
  }
}

/**
 * A live subscription to one topic; get it from `client.subscribe(topic)`.
 * Events: `snapshot`, `event`, `reset`, `item` (detail: the item), `end` ({offset}), `error`.
 * Iterate it with `for await`; leaving the loop early does not unsubscribe (call `close()`).
 */
export class Subscription extends EventTarget {
  /** @type {SubscriptionCore} */
  #core;

  /** @param {symbol} key @param {SubscriptionCore} core */
  constructor(key, core) {
    if (key !== KEY) throw new TypeError("use client.subscribe(topic) to create a Subscription");
    super();
    this.#core = core;
    core.sub = this;
  }

  /** @returns {string} */
  get topic() { return this.#core.topic; }
  /** The epoch of the last delivered item (null before the server answered). @returns {string | null} */
  get epoch() { return this.#core.epoch; }
  /** The offset of the last delivered item: the resume point. @returns {number | null} */
  get offset() { return this.#core.offset; }
  /** "stream", "state", or null (unknown, or nothing written yet). @returns {string | null} */
  get kind() { return this.#core.kind; }
  /** The topic ended (an `end` frame arrived). @returns {boolean} */
  get ended() { return this.#core.ended; }
  /** Resolves on the server's first answer with `{epoch, offset, kind}`; rejects if refused. */
  get ready() { return this.#core.ready; }

  /** Unsubscribe and end iteration; idempotent. */
  close() {
    this.#core.unsubscribe(this.#core);
  }

  /** The same as `close()`. */
  unsubscribe() {
    this.close();
  }

  /** @returns {AsyncIterator<Item> & AsyncIterable<Item>} */
  [Symbol.asyncIterator]() {
    const core = this.#core;
    return {
      next: () => core.next(),
      return: async () => ({ value: undefined, done: true }),
      [Symbol.asyncIterator]() { return this; },
    };
  }
}

// ------------------------------------------------------------------------------------------------
// Client

const CLIENT_OPTIONS = ["token", "connectTimeout", "backoff", "random", "minUptime", "closeCodes", "signal", "WebSocket", "clock"];

/**
 * @typedef {object} StateChange
 * @property {ClientStateName} state
 * @property {number | null} code the close code that caused it, if any
 * @property {string} reason
 * @property {unknown} error the error that caused it, if any
 * @property {number | null} nextAttemptAt Date.now() time of the next attempt, or null
 * @property {boolean} paused
 * @property {number} time Date.now() when it happened
 */

/**
 * One WebSocket from creation to end.
 * @typedef {object} Connection
 * @property {WebSocket} ws
 * @property {string | null} token
 * @property {(result: {end: AttemptEnd, error: Error}) => void} resolve
 * @property {boolean} done
 * @property {boolean} open `welcome` received
 * @property {number | null} openedAt
 * @property {number} lastHeard
 * @property {number} window
 * @property {Deadline | null} timer connect timeout, then the heartbeat watchdog
 * @property {Set<SubscriptionCore>} sent subscriptions whose subscribe went out on this connection
 * @property {Set<SubscriptionCore>} answered subscriptions this connection answered
 * @property {Map<number, {resolve: (offset: number) => void, reject: (e: unknown) => void}>} pending publishes
 * @property {() => void} detach removes the socket listeners
 */

/**
 * A connection to a trioconn Hub that reconnects by itself (see the module comment).
 * Events: `statechange` (detail: StateChange), `open` ({session}), `close` ({code, reason, error}).
 */
export class Client extends EventTarget {
  #url;
  /** @type {(() => string | Promise<string>) | null} */
  #token;
  #connectTimeout;
  /** @type {{maxAttempts: number | null, delay(failures: number, random: () => number): number}} */
  #backoff;
  #random;
  #minUptime;
  #overrides;
  /** @type {AbortSignal | null} */
  #signal;
  #WebSocket;
  #clock;

  /** @type {ClientStateName} */
  #state = "connecting";
  /** @type {StateChange} */
  #detail;
  #paused = false;
  /** @type {string | null} */
  #session = null;
  /** @type {{interval: number, timeout: number} | null} */
  #heartbeat = null;
  /** @type {Map<string, SubscriptionCore>} */
  #subs = new Map();
  #nextRef = 1;
  #stats = { attempts: 0, connects: 0, reconnects: 0, pingsAnswered: 0, lastRtt: /** @type {number | null} */ (null), eventsReceived: 0, resets: 0 };
  /** @type {Connection | null} the connection being attempted or open */
  #attempt = null;
  /** @type {Connection | null} the open connection (after welcome) */
  #conn = null;
  /** @type {{deadline: number, wallAt: number, nowAt: number | null, timer: Deadline | null, state: ClientStateName, code: number | null, reason: string, error: unknown, done: () => void} | null} */
  #wait = null;
  /** @type {Set<{onLink: (conn: Connection) => void, onClosed: (error: unknown) => void}>} publishes waiting for a link */
  #linkWaiters = new Set();
  #everOpen = false;
  #closing = false;
  /** @type {ReconnectFailed | null} */
  #fatal = null;
  /** @type {Promise<void> | null} */
  #closeDone = null;
  /** @type {Promise<void>} */
  #closed;
  /** @type {() => void} */
  #resolveClosed = () => {};
  /** @type {(e: unknown) => void} */
  #rejectClosed = () => {};
  #onAbort = () => { void this.close(); };

  /**
   * Start connecting at once (state "connecting").
   * @param {string | URL} url ws:, wss:, http(s): (mapped to ws(s):) or relative to the page
   * @param {{token?: () => string | Promise<string>, connectTimeout?: number,
   *   backoff?: Backoff | {base?: number, factor?: number, cap?: number, maxAttempts?: number | null},
   *   random?: () => number, minUptime?: number, closeCodes?: Record<number, CloseActionName>,
   *   signal?: AbortSignal, WebSocket?: typeof WebSocket, clock?: Clock}} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#url = resolveUrl(url);
    checkOptions(options, "Client", CLIENT_OPTIONS);
    const { token = null, connectTimeout = 10000, backoff, random = Math.random, minUptime = 10000, closeCodes, signal, WebSocket: WS = globalThis.WebSocket, clock } = options;
    if (token !== null && typeof token !== "function") throw new TypeError(`token must be a function returning a string, not ${typeName(token)}`);
    this.#token = token;
    this.#connectTimeout = checkNumber("connectTimeout", connectTimeout);
    if (backoff instanceof Backoff || (isObject(backoff) && typeof (/** @type {any} */ (backoff)).delay === "function")) {
      this.#backoff = /** @type {any} */ (backoff);
      if (!("maxAttempts" in this.#backoff)) throw new TypeError("backoff must have a maxAttempts property (null: unlimited)");
    } else if (backoff === undefined || isObject(backoff)) {
      this.#backoff = new Backoff(/** @type {object} */ (backoff) ?? {});
    } else {
      throw new TypeError(`backoff must be a Backoff or {base, factor, cap, maxAttempts}, not ${typeName(backoff)}`);
    }
    if (typeof random !== "function") throw new TypeError(`random must be a function, not ${typeName(random)}`);
    this.#random = random;
    this.#minUptime = checkNumber("minUptime", minUptime, { allowZero: true });
    this.#overrides = checkOverrides(closeCodes);
    this.#signal = checkSignal("signal", signal);
    if (typeof WS !== "function") throw new TypeError("WebSocket must be a constructor (no global WebSocket here)");
    this.#WebSocket = WS;
    this.#clock = checkClock(clock);
    this.#detail = this.#change("connecting", {});
    this.#closed = new Promise((resolve, reject) => {
      this.#resolveClosed = resolve;
      this.#rejectClosed = reject;
    });
    this.#closed.catch(() => {}); // a page that never awaits `closed` gets no unhandled rejection
    if (this.#signal !== null) {
      if (this.#signal.aborted) {
        void this.close();
        return;
      }
      this.#signal.addEventListener("abort", this.#onAbort);
    }
    void this.#run();
  }

  /** @returns {ClientStateName} */
  get state() { return this.#state; }
  /** Automatic reconnection is paused (see `pause()`). */
  get paused() { return this.#paused; }
  /** The session id from the last `welcome`, or null. */
  get session() { return this.#session; }
  /** `{interval, timeout}` in ms from the last `welcome`, or null. */
  get heartbeat() { return this.#heartbeat; }
  /** Resolves when the client closed normally; rejects with `ReconnectFailed` if it failed. */
  get closed() { return this.#closed; }

  /** A snapshot of the client's counters. */
  statistics() {
    return { state: this.#state, ...this.#stats, subscriptions: this.#subs.size, nextAttemptAt: this.#nextAttemptAt(), paused: this.#paused };
  }

  /**
   * The state changes, starting with the current one; ends after "closed". A reader more than 64
   * changes behind skips to the oldest one kept.
   * @returns {AsyncIterableIterator<StateChange>}
   */
  stateChanges() {
    /** @type {StateChange[]} */
    const queue = [this.#detail];
    /** @type {((r: IteratorResult<StateChange>) => void) | null} */
    let waiter = null;
    let over = false;
    /** @param {Event} event */
    const onChange = (event) => {
      const detail = /** @type {CustomEvent<StateChange>} */ (event).detail;
      if (detail.state === "closed") this.removeEventListener("statechange", onChange);
      if (waiter !== null) {
        const wake = waiter;
        waiter = null;
        wake({ value: detail, done: false });
      } else {
        if (queue.length >= HISTORY) queue.shift();
        queue.push(detail);
      }
    };
    if (this.#state !== "closed") this.addEventListener("statechange", onChange);
    /** @type {AsyncIterableIterator<StateChange>} */
    const iterator = {
      next: () => {
        const detail = over ? undefined : queue.shift();
        if (detail !== undefined) {
          over = detail.state === "closed";
          return Promise.resolve({ value: detail, done: false });
        }
        if (over || this.#state === "closed") return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          waiter = (result) => {
            over = result.value?.state === "closed";
            resolve(result);
          };
        });
      },
      return: async () => {
        over = true;
        this.removeEventListener("statechange", onChange);
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() { return iterator; },
    };
    return iterator;
  }

  // ---------------------------------------------------------------------------------- controls

  /** Pause automatic reconnection; the current connection is not touched. */
  pause() {
    if (this.#paused || this.#state === "closed") return;
    this.#paused = true;
    this.#wait?.timer?.cancel();
    this.#showWait();
  }

  /** Resume automatic reconnection; a wait whose delay has passed ends at once. */
  resume() {
    if (!this.#paused || this.#state === "closed") return;
    this.#paused = false;
    const wait = this.#wait;
    if (wait !== null && wait.nowAt === null) {
      this.#showWait();
      if (this.#clock.now() >= wait.deadline) wait.done();
      else wait.timer = new Deadline(this.#clock, wait.deadline, wait.done);
    } else {
      this.#showWait();
    }
  }

  /**
   * Start the next attempt at once, skipping the rest of the delay (paused or not).
   * @returns {boolean} false if the client was not waiting between attempts
   */
  reconnectNow() {
    const wait = this.#wait;
    if (wait === null || wait.nowAt !== null) return false;
    wait.nowAt = this.#clock.wall();
    wait.timer?.cancel();
    this.#showWait();
    wait.done();
    return true;
  }

  // ---------------------------------------------------------------------------------- requests

  /**
   * Subscribe to `topic`; resumed after every reconnect. One subscription per topic per client.
   * @param {string} topic
   * @param {{last?: number | null, signal?: AbortSignal, bufferSize?: number}} [options]
   *   last: replay up to this many recent events on the first subscribe;
   *   bufferSize: items kept for the async iterator (1000); older ones are dropped and reported.
   * @returns {Subscription}
   */
  subscribe(topic, options = {}) {
    checkTopic(topic);
    checkOptions(options, "subscribe", ["last", "signal", "bufferSize"]);
    const { last = null, signal, bufferSize = 1000 } = options;
    if (last !== null) checkInteger("last", last, 0);
    checkInteger("bufferSize", bufferSize, 1);
    const checkedSignal = checkSignal("signal", signal);
    if (this.#state === "closed") throw this.#closedError();
    if (this.#subs.has(topic)) throw new Error(`this client is already subscribed to ${JSON.stringify(topic)}`);
    const made = new SubscriptionCore(topic, last, bufferSize, (c) => this.#unsubscribe(c));
    const sub = new Subscription(KEY, made);
    this.#subs.set(topic, made);
    if (checkedSignal !== null) {
      if (checkedSignal.aborted) {
        this.#unsubscribe(made);
        return sub;
      }
      const onAbort = () => this.#unsubscribe(made);
      checkedSignal.addEventListener("abort", onAbort);
      made.detach = () => checkedSignal.removeEventListener("abort", onAbort);
    }
    const conn = this.#conn;
    if (conn !== null) this.#sendSubscribe(conn, made);
    return sub;
  }

  /** @param {SubscriptionCore} core */
  #unsubscribe(core) {
    if (core.finished) return;
    if (this.#subs.get(core.topic) === core) {
      this.#subs.delete(core.topic);
      const conn = this.#conn;
      if (conn !== null && conn.sent.has(core)) {
        this.#send(conn, JSON.stringify({ type: "unsubscribe", topic: core.topic, ref: this.#nextRef++ }));
      }
    }
    core.finish(null);
  }

  /** @param {Connection} conn @param {SubscriptionCore} core */
  #sendSubscribe(conn, core) {
    conn.answered.delete(core);
    if (this.#send(conn, core.frame(this.#nextRef++))) conn.sent.add(core);
  }

  /**
   * Send one frame; false if the socket is already closing (nothing sent; the close event follows).
   * @param {Connection} conn @param {string} text
   */
  #send(conn, text) {
    if (conn.done || conn.ws.readyState !== OPEN) return false;
    try {
      conn.ws.send(text);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Publish `data` to `topic`; resolves with the offset the server stored it at. Waits while
   * disconnected (bounded by `timeout`); never re-sent: if the link drops after sending, it rejects
   * with `ConnectionBroken` (the server may or may not have stored it).
   * @param {string} topic @param {unknown} data
   * @param {{timeout?: number, signal?: AbortSignal}} [options] timeout: ms (10000)
   * @returns {Promise<number>}
   */
  publish(topic, data, options = {}) {
    let text, timeout, signal;
    try {
      checkTopic(topic);
      checkOptions(options, "publish", ["timeout", "signal"]);
      timeout = options.timeout ?? 10000;
      if (timeout !== Infinity) checkNumber("timeout", timeout);
      signal = checkSignal("signal", options.signal);
      text = encodeData(data);
    } catch (exc) {
      return Promise.reject(exc);
    }
    if (this.#state === "closed") return Promise.reject(this.#closedError());
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const head = `{"type":"publish","topic":${JSON.stringify(topic)},"data":${text},"ref":`;
    return new Promise((resolve, reject) => {
      /** @type {Connection | null} */
      let sentOn = null;
      let ref = 0;
      /** @type {Deadline | null} */
      let timer = null;
      const waiter = {
        onLink: (/** @type {Connection} */ conn) => {
          ref = this.#nextRef++;
          if (!this.#send(conn, head + ref + "}")) return; // closing: nothing left, wait for the next link
          this.#linkWaiters.delete(waiter);
          sentOn = conn;
          conn.pending.set(ref, { resolve: (offset) => settle(resolve, offset), reject: (e) => settle(reject, e) });
        },
        onClosed: (/** @type {unknown} */ error) => settle(reject, error),
      };
      const onAbort = () => settle(reject, abortReason(/** @type {AbortSignal} */ (signal)));
      /** @param {(v: any) => void} fn @param {unknown} value */
      const settle = (fn, value) => {
        timer?.cancel();
        signal?.removeEventListener("abort", onAbort);
        this.#linkWaiters.delete(waiter);
        sentOn?.pending.delete(ref);
        fn(value);
      };
      if (timeout !== Infinity) {
        timer = new Deadline(this.#clock, this.#clock.now() + timeout, () => settle(reject, new RequestTimeout(
          sentOn === null
            ? `publish to ${JSON.stringify(topic)}: no connection within ${timeout} ms; nothing was sent`
            : `publish to ${JSON.stringify(topic)}: no answer within ${timeout} ms; it may or may not have been stored`,
        )));
      }
      signal?.addEventListener("abort", onAbort);
      this.#linkWaiters.add(waiter);
      if (this.#conn !== null) waiter.onLink(this.#conn);
    });
  }

  /**
   * Close with 1000; the client never reconnects. Resolves when the closing handshake is over
   * (at most 5 s). Idempotent.
   * @returns {Promise<void>}
   */
  close() {
    if (this.#closeDone !== null) return this.#closeDone;
    this.#closing = true;
    const wait = this.#wait;
    this.#end("closed", { code: 1000, reason: "closed by the client", error: null }, null);
    wait?.done();
    let socketClosed = Promise.resolve();
    const conn = this.#attempt;
    if (conn !== null && !conn.done) {
      const ws = conn.ws;
      socketClosed = new Promise((resolve) => {
        /** @type {Deadline | null} */
        let timer = null;
        const finish = () => {
          timer?.cancel();
          ws.removeEventListener("close", finish);
          resolve();
        };
        ws.addEventListener("close", finish);
        timer = new Deadline(this.#clock, this.#clock.now() + CLOSE_TIMEOUT, finish);
        this.#finishConn(conn, { kind: "closed", code: 1000 }, new ConnectionClosed(1000, "closed by the client"));
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
    await null; // let the page add its listeners first
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
          this.#end("closed", { code, reason: reason || "done", error }, null);
          this.#resolveClosed();
          return;
        }
        if (decision.action === "fail") {
          throw new ReconnectFailed(decision.exhausted
            ? `gave up after ${tally.attempts} failed attempt(s) in a row; last: ${error.message}`
            : `connection failed for good: ${error.message}`, error, decision.exhausted);
        }
        await this.#waitForNextAttempt(decision.delay, { code, reason: error.message, error });
        if (this.#closing) return;
      }
    } catch (exc) {
      if (this.#closing) return;
      const failure = exc instanceof ReconnectFailed ? exc : new ReconnectFailed(`internal error: ${exc}`, exc);
      this.#fatal = failure;
      const cause = failure.cause;
      this.#end("closed", { code: cause instanceof ConnectionClosed ? cause.code : null, reason: failure.message, error: failure }, failure);
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
    if (!validToken(token)) {
      const error = new TypeError(`the token getter must return a non-empty string of visible ASCII characters (no spaces or control characters); got ${typeName(token)}${typeof token === "string" ? ` of length ${token.length}` : ""}`);
      throw new ReconnectFailed(error.message, error);
    }
    return /** @type {string} */ (token);
  }

  /**
   * Run one connection from creation to end; resolves with how it ended.
   * @param {string | null} token @returns {Promise<{end: AttemptEnd, error: Error}>}
   */
  #attemptOnce(token) {
    return new Promise((resolve) => {
      let url = this.#url;
      if (token !== null) {
        const withToken = new URL(url);
        withToken.searchParams.set("token", token);
        url = withToken.href;
      }
      let ws;
      try {
        ws = new this.#WebSocket(url);
      } catch (exc) {
        // A bad URL or a refused scheme (mixed content): trying again cannot fix it.
        const message = `cannot open a WebSocket to ${this.#url}: ${redact(String(/** @type {Error} */ (exc)?.message ?? exc), token)}`;
        throw new ReconnectFailed(message, new TrioconnError(message));
      }
      const onMessage = (/** @type {MessageEvent} */ event) => this.#onMessage(conn, event);
      const onClose = (/** @type {CloseEvent} */ event) => this.#onClose(conn, event);
      /** @type {Connection} */
      const conn = {
        ws, token, resolve, done: false, open: false, openedAt: null, lastHeard: 0, window: 0, timer: null,
        sent: new Set(), answered: new Set(), pending: new Map(),
        detach: () => {
          ws.removeEventListener("message", onMessage);
          ws.removeEventListener("close", onClose);
        },
      };
      ws.addEventListener("message", onMessage);
      ws.addEventListener("close", onClose);
      this.#attempt = conn;
      conn.timer = new Deadline(this.#clock, this.#clock.now() + this.#connectTimeout, () => this.#abandon(conn,
        { kind: "timeout" }, new ConnectionBroken(`no welcome from the server within connectTimeout (${this.#connectTimeout} ms)`), 4000, "connect timeout"));
    });
  }

  /**
   * The connection is over (for any reason): stop listening, fail what waited on it, report.
   * @param {Connection} conn @param {AttemptEnd} end @param {Error} error
   */
  #finishConn(conn, end, error) {
    if (conn.done) return;
    conn.done = true;
    conn.timer?.cancel();
    conn.detach();
    if (this.#attempt === conn) this.#attempt = null;
    if (this.#conn === conn) this.#conn = null;
    const pending = [...conn.pending.values()];
    conn.pending.clear();
    for (const p of pending) {
      p.reject(new ConnectionBroken("the connection was lost before the server acknowledged the publish; it may or may not have been stored"));
    }
    const uptime = conn.openedAt === null ? null : this.#clock.now() - conn.openedAt;
    conn.resolve({ end: { ...end, uptime }, error });
  }

  /**
   * End a connection from our side without waiting for the peer (it is silent or broke protocol).
   * @param {Connection} conn @param {AttemptEnd} end @param {Error} error @param {number} code @param {string} reason
   */
  #abandon(conn, end, error, code, reason) {
    this.#finishConn(conn, end, error);
    try {
      conn.ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  /** @param {Connection} conn @param {CloseEvent} event */
  #onClose(conn, event) {
    const reason = redact(String(event.reason ?? ""), conn.token);
    const code = Number(event.code);
    if (code === 1006 || code === 1015 || !Number.isInteger(code)) {
      this.#finishConn(conn, { kind: "broken", reason }, new ConnectionBroken(reason || "connection lost"));
    } else {
      this.#finishConn(conn, { kind: "closed", code, reason }, new ConnectionClosed(code, reason));
    }
  }

  /** @param {Connection} conn @param {MessageEvent} event */
  #onMessage(conn, event) {
    if (conn.done) return;
    conn.lastHeard = this.#clock.now();
    let frames;
    try {
      frames = parseServerMessage(event.data);
      if (!conn.open && (frames.length !== 1 || frames[0].type !== "welcome")) {
        throw new ProtocolError("unexpected-frame", "the first frame from the server must be 'welcome'");
      }
    } catch (exc) {
      if (!(exc instanceof ProtocolError)) throw exc;
      exc.message = redact(exc.message, conn.token); // a server may echo the request
      this.#abandon(conn, { kind: "protocol-error", reason: exc.message }, exc, 4002, "protocol error");
      return;
    }
    if (!conn.open) {
      this.#opened(conn, frames[0]);
      return;
    }
    for (const frame of frames) {
      if (conn.done) return; // a listener closed the client, or a frame ended the link
      this.#dispatch(conn, frame);
    }
  }

  /** @param {Connection} conn @param {any} welcome */
  #opened(conn, welcome) {
    conn.open = true;
    conn.openedAt = conn.lastHeard;
    conn.window = (welcome.timeout + welcome.interval) * 1000;
    conn.timer?.cancel();
    conn.timer = new Deadline(this.#clock, conn.lastHeard + conn.window, () => this.#watchdog(conn));
    this.#conn = conn;
    this.#session = welcome.session;
    this.#heartbeat = Object.freeze({ interval: welcome.interval * 1000, timeout: welcome.timeout * 1000 });
    this.#stats.connects += 1;
    if (this.#everOpen) this.#stats.reconnects += 1;
    this.#everOpen = true;
    for (const core of this.#subs.values()) this.#sendSubscribe(conn, core);
    this.#record("open", { reason: `session ${welcome.session.slice(0, SESSION_SHOWN)}` });
    if (conn.done) return;
    this.dispatchEvent(detailEvent("open", { session: welcome.session }));
    for (const waiter of [...this.#linkWaiters]) {
      if (this.#conn !== conn) break;
      waiter.onLink(conn);
    }
  }

  /** The watchdog timer fired: the link is dead if nothing was heard for the whole window. @param {Connection} conn */
  #watchdog(conn) {
    const silent = this.#clock.now() - conn.lastHeard;
    if (silent < conn.window) {
      conn.timer = new Deadline(this.#clock, conn.lastHeard + conn.window, () => this.#watchdog(conn));
      return;
    }
    const hb = /** @type {{interval: number, timeout: number}} */ (this.#heartbeat);
    const error = new ConnectionBroken(`heartbeat: nothing from the server for ${Math.round(silent)} ms (its timeout ${hb.timeout} ms + one ping interval ${hb.interval} ms)`);
    this.#abandon(conn, { kind: "timeout", reason: error.reason }, error, 4000, "heartbeat timeout");
  }

  /** @param {Connection} conn @param {any} frame */
  #dispatch(conn, frame) {
    switch (frame.type) {
      case "event": {
        this.#stats.eventsReceived += 1;
        const core = this.#subs.get(frame.topic);
        if (core !== undefined && conn.answered.has(core)) {
          const item = core.onEvent(frame);
          if (item !== null) core.deliver(item);
        }
        return;
      }
      case "ping":
        // Answered here, in the message handler: timers in a background tab may be throttled.
        if (this.#send(conn, `{"type":"pong","id":${frame.id}}`)) {
          this.#stats.pingsAnswered += 1;
          if (frame.rtt !== null) this.#stats.lastRtt = frame.rtt * 1000;
        }
        return;
      case "subscribed":
      case "reset": {
        const core = this.#subs.get(frame.topic);
        if (core === undefined || !core.matches(frame.ref)) return;
        conn.answered.add(core);
        if (frame.type === "reset") this.#stats.resets += 1;
        for (const item of core.onAnswer(frame)) {
          if (core.finished) break;
          core.deliver(item);
        }
        return;
      }
      case "end": {
        const core = this.#subs.get(frame.topic);
        if (core !== undefined && conn.answered.has(core)) {
          this.#subs.delete(frame.topic);
          core.finish(null, { end: frame.offset });
        }
        return;
      }
      case "published": {
        const pending = typeof frame.ref === "number" ? conn.pending.get(frame.ref) : undefined;
        pending?.resolve(frame.offset);
        return;
      }
      case "error":
        this.#onError(conn, frame);
        return;
      case "welcome": {
        const exc = new ProtocolError("unexpected-frame", "a second 'welcome' on the same connection");
        this.#abandon(conn, { kind: "protocol-error", reason: exc.message }, exc, 4002, "protocol error");
        return;
      }
      default: // unsubscribed: nothing to do
    }
  }

  /** @param {Connection} conn @param {any} frame */
  #onError(conn, frame) {
    const error = new ServerError(frame.code, frame.message, frame.ref, frame.topic);
    const pending = typeof frame.ref === "number" ? conn.pending.get(frame.ref) : undefined;
    if (pending !== undefined) {
      pending.reject(error);
      return;
    }
    if (frame.ref === null) return; // answers nothing we can name
    for (const [topic, core] of this.#subs) {
      if (core.ref === frame.ref) {
        this.#subs.delete(topic);
        core.finish(error);
        return;
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
      const now = this.#clock.now();
      const wait = {
        deadline: now + delay, wallAt: this.#clock.wall() + delay, nowAt: null, timer: /** @type {Deadline | null} */ (null),
        state: /** @type {ClientStateName} */ (this.#everOpen ? "reconnecting" : "connecting"), ...cause,
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
    if (wait.nowAt !== null) return wait.nowAt;
    return this.#paused ? null : wait.wallAt;
  }

  /** Record the current wait (or, outside a wait, the current state with the new `paused`). */
  #showWait() {
    const wait = this.#wait;
    if (wait === null) {
      const { code, reason, error } = this.#detail;
      this.#record(this.#state, { code, reason, error });
    } else {
      this.#record(wait.state, { code: wait.code, reason: wait.reason, error: wait.error, nextAttemptAt: this.#nextAttemptAt() });
    }
  }

  /**
   * @param {ClientStateName} state
   * @param {{code?: number | null, reason?: string, error?: unknown, nextAttemptAt?: number | null}} fields
   * @returns {StateChange}
   */
  #change(state, { code = null, reason = "", error = null, nextAttemptAt = null }) {
    return Object.freeze({ state, code, reason, error, nextAttemptAt, paused: this.#paused, time: this.#clock.wall() });
  }

  /** Enter `state` and fire `statechange`; nothing once closed. @param {ClientStateName} state @param {object} fields */
  #record(state, fields) {
    if (this.#state === "closed") return false;
    this.#state = state;
    this.#detail = this.#change(state, fields);
    this.dispatchEvent(detailEvent("statechange", this.#detail));
    return true;
  }

  /**
   * The client is over: record "closed", end the subscriptions and the waiting publishes.
   * @param {"closed"} state @param {{code: number | null, reason: string, error: unknown}} fields
   * @param {ReconnectFailed | null} failure
   */
  #end(state, fields, failure) {
    if (!this.#record(state, fields)) return;
    this.#closing = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    const wait = this.#wait;
    this.#wait = null;
    wait?.timer?.cancel();
    const closedError = this.#closedError();
    const subs = [...this.#subs.values()];
    this.#subs.clear();
    for (const core of subs) core.finish(failure, { readyError: closedError });
    const waiters = [...this.#linkWaiters];
    this.#linkWaiters.clear();
    for (const waiter of waiters) waiter.onClosed(closedError);
    this.dispatchEvent(detailEvent("close", { code: fields.code, reason: fields.reason, error: failure }));
  }

  #closedError() {
    if (this.#fatal !== null) return this.#fatal;
    return new ConnectionClosed(this.#detail.code ?? 1000, this.#detail.reason);
  }
}

/**
 * Create a `Client` and wait for its first `welcome`.
 * @param {string | URL} url
 * @param {ConstructorParameters<typeof Client>[1] & {timeout?: number}} [options]
 *   timeout: ms for the whole connect; the client is closed if it passes (RequestTimeout)
 * @returns {Promise<Client>}
 */
export function connect(url, options = {}) {
  let client, timeout;
  try {
    checkOptions(options, "connect", [...CLIENT_OPTIONS, "timeout"]);
    const { timeout: given, ...rest } = options;
    timeout = given ?? Infinity;
    if (timeout !== Infinity) checkNumber("timeout", timeout);
    client = new Client(url, rest);
  } catch (exc) {
    return Promise.reject(exc);
  }
  const signal = options.signal ?? null;
  const clock = checkClock(options.clock);
  return new Promise((resolve, reject) => {
    /** @type {Deadline | null} */
    let timer = null;
    const onOpen = () => settle(() => resolve(client));
    const onClose = (/** @type {Event} */ event) => {
      const { error, code, reason } = /** @type {CustomEvent} */ (event).detail;
      settle(() => reject(error ?? (signal?.aborted ? abortReason(signal) : new ConnectionClosed(code ?? 1000, reason))));
    };
    /** @param {() => void} fn */
    const settle = (fn) => {
      timer?.cancel();
      client.removeEventListener("open", onOpen);
      client.removeEventListener("close", onClose);
      fn();
    };
    if (client.state === "closed") {
      reject(signal?.aborted ? abortReason(signal) : new ConnectionClosed(1000, "closed"));
      return;
    }
    client.addEventListener("open", onOpen);
    client.addEventListener("close", onClose);
    if (timeout !== Infinity) {
      timer = new Deadline(clock, clock.now() + timeout, () => {
        settle(() => reject(new RequestTimeout(`no connection within timeout (${timeout} ms)`)));
        void client.close();
      });
    }
  });
}
