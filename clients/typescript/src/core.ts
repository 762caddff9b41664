/**
 * Framework-free core: typed events from an ssehub endpoint over the native `EventSource`.
 *
 * Every `connect()` to the same endpoint shares ONE `EventSource` (browsers allow six
 * HTTP/1.1 connections per origin); it is closed when the last subscriber closes. On a
 * multiplexing endpoint, subscribers name their `channel` and one `EventSource` carries them
 * all: `connect('/api/sse', { channel: 'votes/123', onEvent })`.
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
  /** The one channel that must refetch, when the reset names one (multiplexed streams). */
  channel?: string;
}

/** What came with an event besides its data. */
export interface EventMeta {
  /** The SSE event name (`message` for unnamed events); on a channel, the name within it. */
  type: string;
  /** The channel the event came from ({@link ConnectOptions.channel}), if any. */
  channel?: string;
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
  /**
   * A channel of a multiplexing endpoint (`endpoint` is then e.g. `/api/sse`, and `channel`
   * `comments/123`). Every channel of one endpoint shares ONE `EventSource`
   * (`/api/sse?channel=…&channel=…`); adding or removing a channel re-opens it with the
   * current position of every channel, so nothing is lost. Events and resets are routed to
   * the subscribers of their own channel.
   */
  channel?: string;
  /** The `EventSource` to use (default: `globalThis.EventSource`); inject one in Node. */
  EventSource?: EventSourceConstructor;
  /** Send cookies on cross-origin requests. */
  withCredentials?: boolean;
  /** Parse an event's data (default: `JSON.parse`). */
  parse?: (data: string) => TEvent;
  /**
   * The token of the stream (e.g. a short-lived JWT from your backend), fetched before every
   * open: the first and each reconnect. It goes in the query (`?token=`), as a native
   * `EventSource` cannot send headers. With it, a stream that ends (the hub ends it when the
   * token expires) or fails is closed and re-opened with a fresh token and the last event id,
   * instead of letting the `EventSource` retry its stale URL. A rejection is reported to
   * `onError` and retried with backoff. Every subscriber of one endpoint shares one connection,
   * so they share one token source: the first subscriber's `getToken` (the others' are ignored).
   */
  getToken?: () => string | Promise<string>;
  /** The query parameter carrying the token (default `'token'`). */
  tokenParam?: string;
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
/**
 * With `getToken`: the first re-open after a healthy stream (open at least `HEALTHY_MS`; e.g.
 * its token expired). A stream that ends at once (a token already at its `exp`) backs off.
 */
const REOPEN_FAST_MS = 250;
const HEALTHY_MS = 500;
const CLOSED = 2;

interface Subscriber {
  options: ConnectOptions<any>;
  /** The SSE event names this subscriber receives (`channel`, `channel:name` on a channel). */
  types: Set<string>;
  channel?: string;
}

const MARK = '~';

/**
 * The per-channel entries of a multiplexed id (`~` then one entry per channel, separated by
 * `.`; `-n` stands for the previous entry's epoch), each written out in full so it can be put
 * in another order. `null` when `id` is not a multiplexed id.
 */
export function decodePositions(id: string, channels: number): string[] | null {
  if (!id.startsWith(MARK)) return null;
  const entries = id.slice(1).split('.');
  if (entries.length > channels) return null;
  let epoch: string | null = null;
  const out: string[] = [];
  for (const entry of entries) {
    if (entry === '' || entry.startsWith('_')) {
      out.push(entry);
    } else if (entry.startsWith('-')) {
      if (epoch === null) return null;
      out.push(epoch + entry);
    } else {
      epoch = entry.split('-')[0] ?? null;
      out.push(entry);
    }
  }
  while (out.length < channels) out.push('');
  return out;
}

/** The multiplexed id of these entries (as {@link decodePositions} gives them), in order. */
export function encodePositions(entries: readonly string[]): string {
  return MARK + entries.join('.');
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
  /** Waiting for `getToken` (the open that asked for it is number `opens`). */
  private pending = false;
  private opens = 0;
  /** When the connection last opened (`Date.now()`). */
  private openedAt = 0;
  /** On a multiplexing endpoint: each channel and how many subscribers want it. */
  private readonly channels = new Map<string, number>();
  /** The channels of the open `EventSource`, in its URL's order (its ids' entry order). */
  private openChannels: string[] = [];
  private channelsChanged = false;

  constructor(
    private readonly url: string,
    private readonly Ctor: EventSourceConstructor,
    private readonly withCredentials: boolean,
    private readonly onEmpty: () => void,
    /** The first subscriber's token source: every subscriber of this endpoint shares it. */
    private readonly getToken?: () => string | Promise<string>,
    private readonly tokenParam = 'token',
  ) {}

  add(sub: Subscriber): void {
    this.subscribers.add(sub);
    if (sub.channel !== undefined) {
      const n = this.channels.get(sub.channel) ?? 0;
      this.channels.set(sub.channel, n + 1);
      if (n === 0) this.changeChannels();
    }
    if (!this.es && !this.reopenTimer && !this.pending && !this.channelsChanged) this.open();
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
    if (sub.channel !== undefined) {
      const n = (this.channels.get(sub.channel) ?? 1) - 1;
      if (n > 0) {
        this.channels.set(sub.channel, n);
      } else {
        this.channels.delete(sub.channel);
        if (this.subscribers.size > 0) this.changeChannels();
      }
    }
    if (this.subscribers.size === 0) {
      this.shutdown();
      this.onEmpty();
    }
  }

  /**
   * The set of channels changed: re-open once, after every change made in this tick (hooks
   * mounting together), with each channel's position carried over to the new order.
   */
  private changeChannels(): void {
    if (this.channelsChanged) return;
    this.channelsChanged = true;
    queueMicrotask(() => {
      this.channelsChanged = false;
      if (this.subscribers.size === 0) return;
      const next = [...this.channels.keys()];
      if (this.es && sameList(next, this.openChannels)) return;
      if (this.lastEventId) {
        const entries = decodePositions(this.lastEventId, this.openChannels.length);
        if (entries) {
          const at = new Map(this.openChannels.map((c, i) => [c, entries[i] ?? '']));
          this.lastEventId = encodePositions(next.map((c) => at.get(c) ?? ''));
        }
      }
      // `lastEventId` is now in the order of `next`, the channels of the next open.
      this.openChannels = next;
      if (this.es) this.closeSource();
      if (this.reopenTimer) clearTimeout(this.reopenTimer);
      this.reopenTimer = null;
      // An open waiting for its token builds its URL when the token comes: it takes `next`.
      if (!this.pending) this.open();
    });
  }

  /** Open the connection: at once, or once `getToken` has given a token. */
  private open(): void {
    const getToken = this.getToken;
    if (!getToken) return this.create();
    this.pending = true;
    const n = ++this.opens;
    new Promise<string>((resolve) => resolve(getToken())).then(
      (token) => {
        if (n !== this.opens) return;
        this.pending = false;
        if (this.subscribers.size > 0) this.create(token);
      },
      (error: unknown) => {
        if (n !== this.opens) return;
        this.pending = false;
        this.each((s) => s.options.onError?.(error));
        if (this.subscribers.size > 0) this.reopenLater();
      },
    );
  }

  /** Create the `EventSource`: the channels, the id to resume from, the token in the query. */
  private create(token?: string): void {
    const params: [string, string][] = [];
    // A new EventSource cannot send Last-Event-ID; ssehub reads it from the query too.
    if (this.lastEventId) params.push(['lastEventId', this.lastEventId]);
    if (token !== undefined) params.push([this.tokenParam, token]);
    let url = this.url;
    if (this.channels.size > 0 || params.length > 0) {
      const u = new URL(url, baseUrl());
      if (this.channels.size > 0) {
        u.searchParams.delete('channel');
        for (const c of this.openChannels) u.searchParams.append('channel', c);
      }
      for (const [k, v] of params) u.searchParams.set(k, v);
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
    this.openedAt = Date.now();
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
    const healthy = this.connected && Date.now() - this.openedAt >= HEALTHY_MS;
    this.reconnecting = true;
    if (this.connected) {
      this.connected = false;
      this.each((s) => s.options.onConnectionChange?.(false));
    }
    this.each((s) => s.options.onError?.(ev));
    const es = this.es;
    // The EventSource gave up for good (e.g. a non-200 answer), or it would retry a URL whose
    // token may have expired (the hub ends a stream at its token's expiry): recreate it with
    // backoff, resuming from the last id through the `lastEventId` query parameter.
    if (es && this.subscribers.size > 0 && (this.getToken || es.readyState === CLOSED)) {
      this.closeSource();
      this.reopenLater(this.getToken && healthy ? REOPEN_FAST_MS : undefined);
    }
  }

  /** Open again after `first` ms, else after the backoff delay (1 s, doubling up to 30 s). */
  private reopenLater(first?: number): void {
    let delay = first;
    if (delay === undefined) {
      delay = this.reopenDelay;
      this.reopenDelay = Math.min(delay * 2, REOPEN_MAX_MS);
    }
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.subscribers.size > 0) this.open();
    }, delay);
  }

  private handleEvent(type: string, ev: MessageEvent): void {
    const data = typeof ev.data === 'string' ? ev.data : String(ev.data);
    if (ev.lastEventId) this.lastEventId = ev.lastEventId;
    if (type === RESET_EVENT) {
      let reset: ResetInfo = { reason: 'unknown' };
      try {
        const parsed = JSON.parse(data) as (Partial<ResetPayload> & { channel?: unknown }) | null;
        if (parsed && typeof parsed.reason === 'string') reset = { reason: parsed.reason };
        if (parsed && typeof parsed.channel === 'string') reset.channel = parsed.channel;
      } catch {
        // A reset without a readable reason is still a reset.
      }
      // A channel's own reset goes to that channel's subscribers only.
      this.each((s) => {
        if (reset.channel === undefined || s.channel === reset.channel) s.options.onReset?.(reset);
      });
      return;
    }
    this.each((s) => {
      if (!s.types.has(type)) return;
      const meta: EventMeta = { type, lastEventId: ev.lastEventId ?? '' };
      if (s.channel !== undefined) {
        // `channel` or `channel:name`: the name within the channel.
        meta.channel = s.channel;
        meta.type = type === s.channel ? 'message' : type.slice(s.channel.length + 1);
      }
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

  private closeSource(): void {
    if (this.es) {
      this.es.onopen = null;
      this.es.onerror = null;
      for (const [type, fn] of this.listening) this.es.removeEventListener(type, fn);
      this.es.close();
    }
    this.es = null;
  }

  private shutdown(): void {
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    this.opens++;
    this.pending = false;
    this.closeSource();
    this.connected = false;
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
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
 * Subscribe to an SSE endpoint, or to one channel of a multiplexing endpoint
 * ({@link ConnectOptions.channel}). Connections to the same endpoint (and `EventSource`
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
    const created: SharedSource = new SharedSource(
      endpoint,
      Ctor,
      withCredentials,
      () => {
        if (p.get(key) === created) p.delete(key);
      },
      options.getToken,
      options.tokenParam,
    );
    shared = created;
    pool.set(key, shared);
  }
  const names = ['message', ...(options.eventTypes ?? [])].filter((t) => t !== RESET_EVENT);
  const channel = options.channel;
  const sub: Subscriber = {
    options: options as ConnectOptions<any>,
    // On a channel, `message` arrives as `channel` and a named event as `channel:name`.
    types: new Set(
      channel === undefined
        ? names
        : names.map((t) => (t === 'message' ? channel : `${channel}:${t}`)),
    ),
    ...(channel === undefined ? {} : { channel }),
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
