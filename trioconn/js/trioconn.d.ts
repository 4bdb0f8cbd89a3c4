// Type declarations for trioconn.js, the browser client of trioconn (wire protocol v1).
// Durations are milliseconds; `nextAttemptAt` and `time` are Date.now() values.

export declare const VERSION: string;

/** What the client does after a close code. */
export type CloseActionName = "done" | "fail" | "reauth" | "reconnect";

export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

export interface CloseCodeInfo {
  readonly name: string;
  readonly action: CloseActionName;
  readonly meaning: string;
}

/** The close-code table: the same rows as Python's `trioconn.CLOSE_CODES`. */
export declare const CLOSE_CODES: Readonly<Record<number, CloseCodeInfo>>;

export type CloseCodeOverrides = Readonly<Record<number, CloseActionName>> | ReadonlyMap<number, CloseActionName>;

/** The table's action for `code`; unlisted codes: 1000-2999 fail, the rest reconnect. */
export declare function closeAction(code: number, overrides?: CloseCodeOverrides | null): CloseActionName;

/** How one connection attempt ended (the input of `decide`). */
export interface AttemptEnd {
  kind: "closed" | "protocol-error" | "certificate" | "broken" | "timeout";
  /** The close code; given exactly when `kind` is "closed". */
  code?: number;
  reason?: string;
  /** ms the link was open after `welcome`; null if it never opened. */
  uptime?: number | null;
}

/** What the decision remembers between attempts. A new client starts at {attempts: 1, failures: 0, reauthUsed: false}. */
export interface Tally {
  attempts: number;
  failures: number;
  reauthUsed: boolean;
}

export interface Decision {
  action: CloseActionName;
  /** ms to wait before the next attempt (0 unless "reconnect"). */
  delay: number;
  tally: Tally;
  /** "fail" only because `maxAttempts` attempts in a row failed. */
  exhausted: boolean;
}

/** What the client needs from a reconnect schedule. */
export interface BackoffPolicy {
  /** Failed attempts in a row before giving up; null: never. */
  readonly maxAttempts: number | null;
  /** ms to wait before reconnect attempt `failures` in a row (>= 1). */
  delay(failures: number, random: () => number): number;
}

export interface DecideOptions {
  backoff: BackoffPolicy;
  random?: () => number;
  minUptime: number;
  hasTokenProvider: boolean;
  overrides?: CloseCodeOverrides | null;
}

/** The reconnect decision: the rules of `trioconn/_core/decision.py`. Pure. */
export declare function decide(end: AttemptEnd, tally: Tally, options: DecideOptions): Decision;

export interface BackoffOptions {
  /** The first ceiling, ms (500). */
  base?: number;
  /** Growth of the ceiling per failure (2). */
  factor?: number;
  /** The largest ceiling, ms (30000). */
  cap?: number;
  /** Failed attempts in a row before giving up (null: never). */
  maxAttempts?: number | null;
}

/** Exponential backoff with full jitter: a delay uniform in [0, min(cap, base * factor ** (n - 1))]. */
export declare class Backoff implements BackoffPolicy {
  constructor(options?: BackoffOptions);
  readonly base: number;
  readonly factor: number;
  readonly cap: number;
  readonly maxAttempts: number | null;
  /** The largest delay after `failures` (>= 1) consecutive failures. */
  ceiling(failures: number): number;
  /** A delay uniform in [0, ceiling(failures)]; `random` returns a number in [0, 1] (Math.random). */
  delay(failures: number, random?: () => number): number;
}

// ------------------------------------------------------------------------------------------------
// Errors

/** Root of every error trioconn raises on purpose. */
export declare class TrioconnError extends Error {
  constructor(message: string, options?: { cause?: unknown });
}

/** A close frame ended the connection. */
export declare class ConnectionClosed extends TrioconnError {
  constructor(code: number, reason?: string);
  readonly code: number;
  readonly reason: string;
}

/** No close frame (network failure, dead link, timeout): code 1006. */
export declare class ConnectionBroken extends ConnectionClosed {
  constructor(reason?: string);
}

/** A frame from the server broke protocol v1 ("invalid-json", "invalid-field", "unknown-type", ...). */
export declare class ProtocolError extends TrioconnError {
  constructor(code: string, message: string);
  readonly code: string;
}

/** The client gave up for good; `cause` is the last failure. */
export declare class ReconnectFailed extends TrioconnError {
  constructor(message: string, cause: unknown, exhausted?: boolean);
  readonly cause: unknown;
  /** True if `maxAttempts` attempts in a row failed. */
  readonly exhausted: boolean;
}

/** The server answered a subscribe, a publish or a request with an `error` frame. */
export declare class ServerError extends TrioconnError {
  constructor(code: string, serverMessage: string, ref?: string | number | null, topic?: string | null);
  /** "forbidden", "topic-ended", "wrong-kind", "too-many-topics", "no-handler", "request-failed", ... */
  readonly code: string;
  readonly serverMessage: string;
  readonly ref: string | number | null;
  readonly topic: string | null;
}

/** A publish(), request() or connect() did not finish within its `timeout`. */
export declare class RequestTimeout extends TrioconnError {}

// ------------------------------------------------------------------------------------------------
// Items and subscriptions

export interface EventItem {
  readonly type: "event";
  readonly topic: string;
  readonly epoch: string;
  readonly offset: number;
  readonly data: unknown;
}

/** The current value of a state topic. */
export interface SnapshotItem {
  readonly type: "snapshot";
  readonly topic: string;
  readonly epoch: string;
  readonly offset: number;
  /** The value, under the same name as `EventItem.data`. */
  readonly data: unknown;
  /** The older name of `data`. */
  readonly value: unknown;
}

/** The resume point was lost: the events between it and `offset` are not available. */
export interface ResetItem {
  readonly type: "reset";
  readonly topic: string;
  readonly epoch: string;
  readonly offset: number;
  readonly previousEpoch: string | null;
  readonly previousOffset: number | null;
  readonly kind: "stream" | "state" | null;
  readonly snapshot: unknown;
  readonly hasSnapshot: boolean;
}

/** Presence (`subscribe(topic, {presence: true})`): someone subscribed to the topic. */
export interface JoinItem {
  readonly type: "join";
  readonly topic: string;
  /** What the server shows of that subscriber (null: anonymous). */
  readonly identity: unknown;
  /** Its connection's session id: one member per connection and topic. */
  readonly session: string;
  /** When it subscribed, Unix time in seconds. */
  readonly since: number;
}

/** Presence: that subscription ended. */
export interface LeaveItem {
  readonly type: "leave";
  readonly topic: string;
  readonly identity: unknown;
  readonly session: string;
}

export type Item = EventItem | SnapshotItem | ResetItem | JoinItem | LeaveItem;

/** Where a subscription starts: the server's first answer (or the shared position, for a later one). */
export interface Subscribed {
  readonly topic: string;
  readonly epoch: string;
  readonly offset: number;
  readonly kind: "stream" | "state" | null;
}

export interface SubscriptionEventMap {
  item: CustomEvent<Item>;
  event: CustomEvent<EventItem>;
  snapshot: CustomEvent<SnapshotItem>;
  reset: CustomEvent<ResetItem>;
  join: CustomEvent<JoinItem>;
  leave: CustomEvent<LeaveItem>;
  end: CustomEvent<{ offset: number }>;
  error: CustomEvent<ServerError | ReconnectFailed>;
}

export interface SubscribeOptions {
  /** Replay up to this many recent events when the subscription starts (a later subscription to a
   * topic this client follows already: from the client's cache). */
  last?: number | null;
  /** Aborting it unsubscribes. */
  signal?: AbortSignal;
  /** Items kept for the async iterator (1000); on overflow the oldest go and the iterator throws. */
  bufferSize?: number;
  /** Also deliver `join`/`leave` items when the server sends presence for this topic (false). */
  presence?: boolean;
}

/** A live subscription to one topic, from `client.subscribe(topic)`. Several subscriptions to one
 * topic on a client share one subscription on the wire, each with its own buffer. */
export declare class Subscription extends EventTarget implements AsyncIterable<Item> {
  private constructor();
  readonly topic: string;
  readonly epoch: string | null;
  readonly offset: number | null;
  readonly kind: "stream" | "state" | null;
  readonly ended: boolean;
  /** The server's first answer; rejects with ServerError if refused. */
  readonly ready: Promise<Subscribed>;
  /** The topic's members (presence), in the order they joined; empty unless the server sends presence. */
  readonly members: readonly JoinItem[];
  /** Unsubscribe and end iteration; idempotent. */
  close(): void;
  unsubscribe(): void;
  [Symbol.asyncIterator](): AsyncIterableIterator<Item>;
  addEventListener<K extends keyof SubscriptionEventMap>(
    type: K,
    listener: (this: Subscription, event: SubscriptionEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof SubscriptionEventMap>(
    type: K,
    listener: (this: Subscription, event: SubscriptionEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

// ------------------------------------------------------------------------------------------------
// The client

export interface StateChange {
  readonly state: ClientState;
  /** The close code that caused it, if any. */
  readonly code: number | null;
  readonly reason: string;
  /** The error that caused it, if any. */
  readonly error: unknown;
  /** When the next attempt starts (Date.now() ms); null when none is scheduled. */
  readonly nextAttemptAt: number | null;
  readonly paused: boolean;
  /** When the change happened (Date.now() ms). */
  readonly time: number;
}

export interface ClientStatistics {
  state: ClientState;
  attempts: number;
  connects: number;
  reconnects: number;
  pingsAnswered: number;
  /** The last round trip the server measured, ms. */
  lastRtt: number | null;
  eventsReceived: number;
  resets: number;
  subscriptions: number;
  nextAttemptAt: number | null;
  paused: boolean;
}

/** Stands in for performance.now, Date.now and the timer functions (unit tests with fake time). */
export interface Clock {
  now(): number;
  wall(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface ClientOptions {
  /** Called before every attempt; the token is sent as the `token` query parameter. */
  token?: () => string | Promise<string>;
  /** ms for the WebSocket to open and `welcome` to come (10000). */
  connectTimeout?: number;
  /** A Backoff (or any BackoffPolicy), or Backoff options. */
  backoff?: BackoffPolicy | BackoffOptions;
  /** The jitter's random source (Math.random). */
  random?: () => number;
  /** ms a link must last to count as healthy (10000). */
  minUptime?: number;
  /** Overrides of the close-code table, e.g. {4403: "reconnect"}. */
  closeCodes?: CloseCodeOverrides;
  /** Aborting it closes the client (1000). */
  signal?: AbortSignal;
  /** The WebSocket constructor (globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocket;
  /** For tests only: fake time. */
  clock?: Clock;
}

export interface ConnectOptions extends ClientOptions {
  /** ms for the whole connect; then the promise rejects with RequestTimeout and the client closes. */
  timeout?: number;
}

export interface PublishOptions {
  /** ms to wait for a link and the server's answer (10000; Infinity: no limit). */
  timeout?: number;
  signal?: AbortSignal;
}

export interface RequestOptions {
  /** ms to wait for a link and the answer (10000; Infinity: no limit). */
  timeout?: number;
  signal?: AbortSignal;
}

export interface ClientEventMap {
  statechange: CustomEvent<StateChange>;
  open: CustomEvent<{ session: string }>;
  close: CustomEvent<{ code: number | null; reason: string; error: ReconnectFailed | null }>;
}

/** A connection to a trioconn Hub that reconnects by itself; starts connecting when created. */
export declare class Client extends EventTarget {
  constructor(url: string | URL, options?: ClientOptions);
  readonly state: ClientState;
  readonly paused: boolean;
  /** The session id from the last `welcome`, or null. */
  readonly session: string | null;
  /** `{interval, timeout}` in ms from the last `welcome`, or null. */
  readonly heartbeat: Readonly<{ interval: number; timeout: number }> | null;
  /** Resolves when the client closed normally; rejects with ReconnectFailed if it failed. */
  readonly closed: Promise<void>;
  statistics(): ClientStatistics;
  /** The state changes, starting with the current one; ends after "closed". */
  stateChanges(): AsyncIterableIterator<StateChange>;
  /** Subscribe to `topic`; several subscriptions to one topic share one on the wire. */
  subscribe(topic: string, options?: SubscribeOptions): Subscription;
  /** Publish; resolves with the offset the server stored it at. Never re-sent. */
  publish(topic: string, data: unknown, options?: PublishOptions): Promise<number>;
  /** Ask the server's request handler for `topic`; resolves with its answer. Never re-sent. */
  request(topic: string, data: unknown, options?: RequestOptions): Promise<unknown>;
  /** Skip the rest of the backoff delay; false if the client was not waiting. */
  reconnectNow(): boolean;
  pause(): void;
  resume(): void;
  /** Close with 1000; never reconnects. Resolves after the closing handshake (at most 5 s). */
  close(): Promise<void>;
  addEventListener<K extends keyof ClientEventMap>(
    type: K,
    listener: (this: Client, event: ClientEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof ClientEventMap>(
    type: K,
    listener: (this: Client, event: ClientEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** A Client that has received its first `welcome`. */
export declare function connect(url: string | URL, options?: ConnectOptions): Promise<Client>;
