/**
 * Framework-free core: typed events from an ssehub endpoint over the native `EventSource`.
 *
 * Every `connect()` to the same endpoint shares ONE `EventSource` (browsers allow six
 * HTTP/1.1 connections per origin); it is closed when the last subscriber closes.
 *
 * @example
 * ```ts
 * const sub = connect<CommentEvent>(`/api/sse/comments/${id}`, {
 *   onEvent: (e) => render(e.commentCount),
 *   onReset: () => refetchEverything(),
 * });
 * // later
 * sub.close();
 * ```
 */

import type { ResetPayload } from './generated/ResetPayload.js';
import type { ResetReason } from './generated/ResetReason.js';

// The server's wire types, generated from ssehub's Rust definitions.
export type { ResetPayload, ResetReason };

/** The name of the event ssehub sends when it could not replay what a client missed. */
export const RESET_EVENT = 'reset';

/**
 * Why the client's view may be stale and must be refetched:
 *
 * - a {@link ResetReason} the server sent in a `reset` event;
 * - `'not-resumed'`: the client reconnected after an error with no event id to resume from, so
 *   whatever was published during the outage may be lost (detected here, not sent by the
 *   server);
 * - `'unknown'`: a `reset` event whose data could not be read;
 * - any other string: a reason added by a newer server.
 */
export type ResetCause = ResetReason | 'not-resumed' | 'unknown' | (string & {});

/** What {@link ConnectOptions.onReset} receives. */
export interface ResetInfo {
  reason: ResetCause;
}

/** What came with an event besides its data. */
export interface EventMeta {
  /** The SSE event name (`message` for unnamed events). */
  type: string;
  /** The stream's last event id (empty for the initial event of a fresh stream). */
  lastEventId: string;
}

/** The subset of the WHATWG `EventSource` this library uses. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  addEventListener(type: string, listener: (ev: any) => void): void;
  removeEventListener(type: string, listener: (ev: any) => void): void;
  close(): void;
}

/** A constructor compatible with `EventSource` (the browser's, or the npm `eventsource`). */
export type EventSourceConstructor = new (
  url: string,
  init?: { withCredentials?: boolean },
) => EventSourceLike;

/** Options of {@link connect}. */
export interface ConnectOptions<TEvent> {
  /** Called with each parsed event (unnamed `message` events and the listed `eventTypes`). */
  onEvent?: (event: TEvent, meta: EventMeta) => void;
  /** Called when the connection opens (`true`) or drops (`false`). */
  onConnectionChange?: (connected: boolean) => void;
  /** Called on connection errors and on event data that is not JSON. */
  onError?: (error: unknown) => void;
  /**
   * Called when the client's view may be stale: the server sent `reset`, or a reconnect could
   * not resume (see {@link ResetCause}). Refetch everything derived from the stream.
   */
  onReset?: (reset: ResetInfo) => void;
  /** Named SSE events to listen to besides `message` (e.g. `['vote-changed']`). */
  eventTypes?: readonly string[];
  /** The `EventSource` to use (default: `globalThis.EventSource`); inject one in Node. */
  EventSource?: EventSourceConstructor;
  /** Send cookies on cross-origin requests. */
  withCredentials?: boolean;
  /** Parse an event's data (default: `JSON.parse`). */
  parse?: (data: string) => TEvent;
}

/** A live subscription. */
export interface Subscription {
  /** Stop receiving events; the shared connection closes with its last subscriber. */
  close(): void;
  /** Whether the shared connection is currently open. */
  readonly connected: boolean;
}

/** How long to wait before recreating an `EventSource` that gave up (`readyState` CLOSED). */
const REOPEN_MIN_MS = 1_000;
const REOPEN_MAX_MS = 30_000;
const CLOSED = 2;

interface Subscriber {
  options: ConnectOptions<any>;
  types: Set<string>;
}

/** One `EventSource` per endpoint, shared by every subscriber. */
class SharedSource {
  private es: EventSourceLike | null = null;
  private readonly subscribers = new Set<Subscriber>();
  private readonly listening = new Map<string, (ev: MessageEvent) => void>();
  connected = false;
  /** The last event id seen, used to resume when the `EventSource` has to be recreated. */
  private lastEventId = '';
  /** An error happened since the last open: the next open is a reconnect. */
  private reconnecting = false;
  private reopenTimer: ReturnType<typeof setTimeout> | null = null;
  private reopenDelay = REOPEN_MIN_MS;

  constructor(
    private readonly url: string,
    private readonly Ctor: EventSourceConstructor,
    private readonly withCredentials: boolean,
    private readonly onEmpty: () => void,
  ) {}

  add(sub: Subscriber): void {
    this.subscribers.add(sub);
    if (!this.es && !this.reopenTimer) this.open();
    this.listen(RESET_EVENT);
    for (const t of sub.types) this.listen(t);
    if (this.connected) {
      // Tell a late subscriber the state it joined in, after connect() returned.
      queueMicrotask(() => {
        if (this.subscribers.has(sub) && this.connected) {
          sub.options.onConnectionChange?.(true);
        }
      });
    }
  }

  remove(sub: Subscriber): void {
    if (!this.subscribers.delete(sub)) return;
    if (this.subscribers.size === 0) {
      this.shutdown();
      this.onEmpty();
    }
  }

  private open(): void {
    let url = this.url;
    if (this.lastEventId) {
      // A new EventSource cannot send Last-Event-ID; ssehub reads it from the query too.
      const u = new URL(url, baseUrl());
      u.searchParams.set('lastEventId', this.lastEventId);
      url = isAbsolute(this.url) ? u.toString() : u.pathname + u.search;
    }
    const es = new this.Ctor(url, this.withCredentials ? { withCredentials: true } : undefined);
    this.es = es;
    es.onopen = () => this.handleOpen();
    es.onerror = (ev: unknown) => this.handleError(ev);
    for (const [type, fn] of this.listening) es.addEventListener(type, fn);
  }

  private listen(type: string): void {
    if (this.listening.has(type)) return;
    const fn = (ev: MessageEvent) => this.handleEvent(type, ev);
    this.listening.set(type, fn);
    this.es?.addEventListener(type, fn);
  }

  private handleOpen(): void {
    this.reopenDelay = REOPEN_MIN_MS;
    const wasReconnect = this.reconnecting;
    this.reconnecting = false;
    if (!this.connected) {
      this.connected = true;
      this.each((s) => s.options.onConnectionChange?.(true));
    }
    // Without an id to resume from, the server starts a fresh stream: anything published
    // while we were away is gone, and the server cannot know to send `reset`.
    if (wasReconnect && !this.lastEventId) {
      this.each((s) => s.options.onReset?.({ reason: 'not-resumed' }));
    }
  }

  private handleError(ev: unknown): void {
    this.reconnecting = true;
    if (this.connected) {
      this.connected = false;
      this.each((s) => s.options.onConnectionChange?.(false));
    }
    this.each((s) => s.options.onError?.(ev));
    const es = this.es;
    if (es && es.readyState === CLOSED && this.subscribers.size > 0) {
      // The EventSource gave up for good (e.g. a non-200 answer): recreate it with backoff,
      // resuming from the last id through the `lastEventId` query parameter.
      es.close();
      this.es = null;
      const delay = this.reopenDelay;
      this.reopenDelay = Math.min(this.reopenDelay * 2, REOPEN_MAX_MS);
      this.reopenTimer = setTimeout(() => {
        this.reopenTimer = null;
        if (this.subscribers.size > 0) this.open();
      }, delay);
    }
  }

  private handleEvent(type: string, ev: MessageEvent): void {
    const data = typeof ev.data === 'string' ? ev.data : String(ev.data);
    if (ev.lastEventId) this.lastEventId = ev.lastEventId;
    if (type === RESET_EVENT) {
      let reset: ResetInfo = { reason: 'unknown' };
      try {
        const parsed = JSON.parse(data) as Partial<ResetPayload> | null;
        if (parsed && typeof parsed.reason === 'string') reset = { reason: parsed.reason };
      } catch {
        // A reset without a readable reason is still a reset.
      }
      this.each((s) => s.options.onReset?.(reset));
      return;
    }
    const meta: EventMeta = { type, lastEventId: ev.lastEventId ?? '' };
    this.each((s) => {
      if (!s.types.has(type)) return;
      let event: unknown;
      try {
        event = s.options.parse ? s.options.parse(data) : JSON.parse(data);
      } catch (e) {
        s.options.onError?.(e);
        return;
      }
      s.options.onEvent?.(event, meta);
    });
  }

  private each(f: (s: Subscriber) => void): void {
    // A callback may close its own or another subscription: iterate over a snapshot.
    for (const s of [...this.subscribers]) {
      if (!this.subscribers.has(s)) continue;
      try {
        f(s);
      } catch (e) {
        // One subscriber's bug must not starve the others.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  private shutdown(): void {
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    if (this.es) {
      this.es.onopen = null;
      this.es.onerror = null;
      for (const [type, fn] of this.listening) this.es.removeEventListener(type, fn);
      this.es.close();
    }
    this.es = null;
    this.connected = false;
  }
}

function baseUrl(): string {
  const loc = (globalThis as { location?: { href?: string } }).location;
  return loc?.href ?? 'http://localhost/';
}

function isAbsolute(url: string): boolean {
  return /^[a-z][a-z0-9+.-]*:/i.test(url);
}

const pools = new WeakMap<EventSourceConstructor, Map<string, SharedSource>>();

function defaultEventSource(): EventSourceConstructor {
  const ES = (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
  if (!ES) {
    throw new Error(
      'no EventSource in this environment: pass one with the `EventSource` option (e.g. the npm `eventsource` package)',
    );
  }
  return ES;
}

/**
 * Subscribe to an SSE endpoint. Connections to the same endpoint (and `EventSource`
 * constructor and credentials mode) share one `EventSource`.
 */
export function connect<TEvent = unknown>(
  endpoint: string,
  options: ConnectOptions<TEvent> = {},
): Subscription {
  const Ctor = options.EventSource ?? defaultEventSource();
  const withCredentials = options.withCredentials ?? false;
  const key = `${withCredentials ? 'cred' : 'anon'} ${endpoint}`;
  let pool = pools.get(Ctor);
  if (!pool) {
    pool = new Map();
    pools.set(Ctor, pool);
  }
  let shared = pool.get(key);
  if (!shared) {
    const p = pool;
    const created: SharedSource = new SharedSource(endpoint, Ctor, withCredentials, () => {
      if (p.get(key) === created) p.delete(key);
    });
    shared = created;
    pool.set(key, shared);
  }
  const sub: Subscriber = {
    options: options as ConnectOptions<any>,
    types: new Set(['message', ...(options.eventTypes ?? [])].filter((t) => t !== RESET_EVENT)),
  };
  const source = shared;
  source.add(sub);
  let closed = false;
  return {
    close() {
      if (closed) return;
      closed = true;
      source.remove(sub);
    },
    get connected() {
      return !closed && source.connected;
    },
  };
}

/** How many shared connections are open for this constructor (for tests and diagnostics). */
export function openConnectionCount(Ctor?: EventSourceConstructor): number {
  const c = Ctor ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
  return c ? (pools.get(c)?.size ?? 0) : 0;
}
