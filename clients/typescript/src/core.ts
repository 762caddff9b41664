/**
 * Framework-free core: typed events from an ssehub endpoint over the native `EventSource` (or
 * `fetch` streaming, for a token sent in a header: {@link ConnectOptions.getToken}).
 *
 * Every `connect()` to the same endpoint shares ONE `EventSource` (browsers allow six
 * HTTP/1.1 connections per origin); it is closed when the last subscriber closes. On a
 * multiplexing endpoint, subscribers name their `channel` and one `EventSource` carries them
 * all: `connect('/api/sse', { channel: 'votes/123', onEvent })`. Where the browser has
 * `navigator.locks` and `BroadcastChannel`, the tabs of one browser profile share one stream per
 * endpoint too: the tab holding the endpoint's Web Lock has it, with every tab's channels, and
 * relays its events to the others ({@link ConnectOptions.share}).
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

import type { FetchEventSource } from './fetchsource.js';
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
  /** The HTTP status of a failed open, where the source tells it (the fetch source does). */
  readonly status?: number;
  /** The server's last `retry` (ms), where the source tells it (the fetch source does). */
  readonly retry?: number | undefined;
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
  /**
   * The `EventSource` to use (default: `globalThis.EventSource`); inject one in Node. Not used
   * with {@link getToken} in a header (no {@link tokenParam}): that stream is read with `fetch`.
   */
  EventSource?: EventSourceConstructor;
  /** Send cookies on cross-origin requests. */
  withCredentials?: boolean;
  /** Parse an event's data (default: `JSON.parse`). */
  parse?: (data: string) => TEvent;
  /**
   * The token of the stream (e.g. a short-lived JWT from your backend), fetched before every
   * open: the first and each reconnect. It is sent as `Authorization: Bearer …`: the stream is
   * then read with `fetch` streaming (a native `EventSource` cannot send headers; its code is
   * loaded with the first such stream), with the same events, `Last-Event-ID` and `retry`; or it
   * goes in the query with {@link tokenParam}. A stream that ends (the hub ends it when the
   * token expires) or fails is closed and re-opened with a fresh token and the last event id.
   * A `401` asks for a new token and re-opens at once, once; a second one in a row backs off
   * like any failure. A rejection is reported to `onError` and retried with backoff. Every
   * subscriber of one endpoint shares one connection, so they share one token source: the first
   * subscriber's `getToken` (the others' are ignored); shared across tabs, the token source of
   * the tab holding the stream.
   */
  getToken?: () => string | Promise<string>;
  /**
   * Put the token in this query parameter (e.g. `'token'`, which the hub reads) and use the
   * `EventSource`, instead of the `Authorization` header over `fetch`: for a cross-origin hub
   * whose CORS preflight does not allow `Authorization`, or an `EventSource` you inject. A URL
   * may be logged by proxies: keep such tokens short-lived.
   */
  tokenParam?: string;
  /** The `fetch` reading a stream whose token is in a header (default: the global one). */
  fetch?: typeof fetch;
  /**
   * Share one stream with the page's other tabs (default `true`, where the browser has
   * `navigator.locks` and `BroadcastChannel`): the tab holding the endpoint's Web Lock has the
   * `EventSource`, with every tab's channels, and relays its events to the others. `false`: one
   * stream for this page alone.
   */
  share?: boolean;
  /**
   * The shortest delay before a reconnect (default: the server's `retry` over `fetch`, else
   * 1000 ms; set it to your server's `retry`, which a native `EventSource` does not expose).
   * Reconnects wait a random delay between it and a ceiling that doubles with each failure up
   * to {@link retryMaxMs}.
   */
  retryMinMs?: number;
  /** The longest delay before a reconnect (default 30 000 ms). */
  retryMaxMs?: number;
  /** Release the stream once the page has been hidden this long (default: never). */
  releaseHiddenAfterMs?: number;
}

/** A live subscription. */
export interface Subscription {
  /** Stop receiving events; the shared connection closes with its last subscriber. */
  close(): void;
  /** Whether the shared connection is currently open. */
  readonly connected: boolean;
}

/**
 * Reconnect delays: full jitter between `retryMinMs` and an exponential ceiling capped by
 * `retryMaxMs`; the backoff restarts after a stream stayed open `HEALTHY_RESET_MS`.
 */
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;
const HEALTHY_RESET_MS = 5_000;
/**
 * With `getToken`: the first re-open after a healthy stream (open at least `HEALTHY_MS`; e.g.
 * its token expired). A stream that ends at once (a token already at its `exp`) backs off.
 */
const REOPEN_FAST_MS = 250;
const HEALTHY_MS = 500;

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

/**
 * The messages tabs exchange over their `BroadcastChannel` (one per endpoint):
 * - `s`: tab `f` wants channels `c` and event types `y` (both empty: it left);
 * - `h`: a tab joined: every tab answers `s`, the leader `p`;
 * - `p`: the leader's position (`i`: the stream's last id, `o`: its channels in the id's order)
 *   and connection state `n`;
 * - `e`: an event from the leader's stream (`y` its SSE name, `d` data, `i` the stream's last id,
 *   `o` its channels); with `t`, the last event of a type, replayed to tab `t` that just joined;
 * - `c`: the leader's connection state `n`; `r`: a reset `r` the leader detected; `x`: an error.
 */
type Msg = {
  k: 's' | 'h' | 'p' | 'e' | 'c' | 'r' | 'x';
  f?: string;
  c?: string[];
  y?: any;
  i?: string;
  o?: string[];
  n?: boolean;
  d?: string;
  t?: string;
  r?: ResetInfo;
};

/** Every live source, for the page's lifecycle events. */
const live = new Set<SharedSource>();
/** What the browser says about the network (`online`/`offline` events). */
let online = true;
let watching = false;

function watch(): void {
  const g = globalThis as any;
  if (watching || typeof g.addEventListener !== 'function') return;
  watching = true;
  const all = (f: (s: SharedSource, e: any) => void) => (e: any) => live.forEach((s) => f(s, e));
  const doc = g.document;
  const hidden = () => doc?.visibilityState === 'hidden';
  g.addEventListener('offline', all((s) => ((online = false), s.offline())));
  g.addEventListener('online', all((s) => ((online = true), s.kick())));
  // Leaving the page or entering the back/forward cache; frozen: let another tab hold it.
  g.addEventListener('pagehide', all((s) => s.pause(1)));
  g.addEventListener('pageshow', all((s) => s.resume(1)));
  doc?.addEventListener('freeze', all((s) => s.pause(1)));
  doc?.addEventListener('resume', all((s) => s.resume(1)));
  doc?.addEventListener('visibilitychange', all((s) => s.visibility(hidden())));
}

/**
 * One stream per endpoint, shared by every subscriber of the page and, with sharing, by every
 * tab: the tab holding the endpoint's Web Lock (the leader) has the `EventSource` and relays its
 * events to the other tabs over a `BroadcastChannel`.
 */
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
  private tries = 0;
  /** The last open was refused with a `401`, and re-opened at once with a new token. */
  private denied = false;
  /** The server's last `retry` (ms), when a source told it: the backoff's minimum. */
  private retry: number | undefined;
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
  /** Why the stream is released: 1 the page is hidden away or frozen, 2 hidden too long. */
  private away = 0;
  private hideTimer: ReturnType<typeof setTimeout> | null = null;
  // --- sharing across tabs ---
  private bc: BroadcastChannel | null = null;
  /** This tab holds the endpoint's lock and the stream. */
  private leader = false;
  private unlock: (() => void) | null = null;
  private abort: AbortController | null = null;
  private readonly tab = Math.random().toString(36).slice(2);
  /** The other tabs' channels and event types. */
  private readonly peers = new Map<string, Msg>();
  /** The last event of each type (its data and id), replayed to a tab that joins. */
  private readonly last = new Map<string, [string, string]>();
  /** Back from a release: the first position the leader tells may be past ours. */
  private stale = false;

  constructor(
    private readonly url: string,
    /** Absent when only `fetch` streams are opened (a token in a header). */
    private readonly Ctor: EventSourceConstructor | undefined,
    private readonly withCredentials: boolean,
    private readonly onEmpty: () => void,
    /** The first subscriber's options: its token source, reconnect policy, sharing. */
    private readonly o: ConnectOptions<any>,
    /** The lock and `BroadcastChannel` name when shared across tabs, else `''`. */
    private readonly name: string,
  ) {
    live.add(this);
    watch();
  }

  /** Whether this tab has the stream: always without sharing, else when it leads. */
  private get holds(): boolean {
    return !this.name || this.leader;
  }

  add(sub: Subscriber): void {
    this.subscribers.add(sub);
    if (sub.channel !== undefined) {
      const n = this.channels.get(sub.channel) ?? 0;
      this.channels.set(sub.channel, n + 1);
      if (n === 0) this.changeChannels();
    }
    this.listen(RESET_EVENT);
    for (const t of sub.types) this.listen(t);
    if (this.name) {
      if (!this.bc && !this.away) this.join();
      this.changeChannels();
    } else if (!this.es && !this.reopenTimer && !this.pending && !this.channelsChanged) {
      this.open();
    }
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
      this.leave();
      this.stop();
      this.connected = false;
      if (this.hideTimer) clearTimeout(this.hideTimer);
      live.delete(this);
      this.onEmpty();
    }
  }

  // --- sharing ---------------------------------------------------------------------------

  private post(m: Msg): void {
    this.bc?.postMessage(m);
  }

  /** Join the endpoint's tabs: ask them who wants what, and queue for the lock. */
  private join(): void {
    const bc = (this.bc = new BroadcastChannel(this.name));
    bc.onmessage = (e: MessageEvent) => this.receive(e.data as Msg);
    this.post({ k: 'h' });
    const abort = (this.abort = new AbortController());
    (globalThis as any).navigator.locks
      .request(this.name, { signal: abort.signal }, () => {
        if (this.bc !== bc) return undefined;
        // Held until this tab leaves (or is closed, or crashes: the browser releases it).
        return new Promise<void>((resolve) => {
          this.unlock = resolve;
          this.leader = true;
          this.stale = false;
          this.reconnecting = false;
          this.tries = 0;
          // Resume from the last id the tabs saw, with the channels every tab wants.
          this.reopenNow();
        });
      })
      .catch(() => {});
  }

  /** Leave the endpoint's tabs: withdraw this tab's channels, release (or stop awaiting) the lock. */
  private leave(): void {
    if (!this.bc) return;
    this.post({ k: 's', f: this.tab, c: [], y: [] });
    this.bc.close();
    this.bc = null;
    this.abort?.abort();
    this.unlock?.();
    this.unlock = null;
    this.leader = false;
    this.peers.clear();
    this.stop();
  }

  /** This tab's channels and event types, for the leader. */
  private announce(): void {
    const y = new Set<string>();
    for (const s of this.subscribers) s.types.forEach((t) => y.add(t));
    this.post({ k: 's', f: this.tab, c: [...this.channels.keys()], y: [...y] });
  }

  private receive(m: Msg): void {
    const { k } = m;
    if (k === 'h') {
      this.announce();
      if (this.leader) this.post({ k: 'p', i: this.lastEventId, o: this.openChannels, n: this.connected });
    } else if (k === 's') {
      const f = m.f as string;
      const old = this.peers.get(f);
      if (m.c!.length + m.y.length > 0) this.peers.set(f, m);
      else this.peers.delete(f);
      for (const t of m.y) this.listen(t);
      if (this.leader) {
        // A tab that joins gets the last event of each of its types, as it would have got
        // the initial event of a stream of its own.
        for (const t of m.y) {
          const e = this.last.get(t);
          if (e && !old?.y.includes(t)) {
            this.post({ k: 'e', y: t, d: e[0], i: e[1], o: this.openChannels, t: f });
          }
        }
        this.changeChannels();
      }
    } else if (!this.leader && (!m.t || m.t === this.tab)) {
      // From the leader.
      if (this.stale && !m.t && (k === 'p' || k === 'e')) {
        this.stale = false;
        if (m.i !== this.lastEventId) this.reset({ reason: 'not-resumed' });
      }
      if (m.o && !m.t) this.openChannels = m.o;
      if (k === 'p') this.lastEventId = m.i as string;
      if (k === 'e') this.handleEvent(m.y, { data: m.d, lastEventId: m.i }, !!m.t);
      if (k === 'r') this.reset(m.r as ResetInfo);
      if (k === 'x') this.each((s) => s.options.onError?.(new Error('the shared stream failed')));
      if (k === 'p' || k === 'c') this.setConnected(m.n as boolean);
    }
  }

  // --- the page's life -------------------------------------------------------------------

  /** Release the stream (and the lock) while the page is hidden away, frozen or hidden long. */
  pause(why: number): void {
    const was = this.away;
    this.away |= why;
    if (was || !this.away) return;
    this.leave();
    this.stop();
    if (this.lastEventId) this.stale = true;
    this.setConnected(false);
  }

  /** The page is back: take part again, and reconnect at once. */
  resume(why: number): void {
    if (!(this.away & why)) return;
    this.away &= ~why;
    if (this.away) return;
    // A 401 before the pause does not count against the token asked for now.
    this.denied = false;
    if (this.name) {
      this.join();
      this.changeChannels();
    } else {
      this.stale = false;
      this.reopenNow();
    }
  }

  visibility(hidden: boolean): void {
    if (this.hideTimer) clearTimeout(this.hideTimer);
    this.hideTimer = null;
    const ms = this.o.releaseHiddenAfterMs;
    if (hidden) {
      if (ms !== undefined) this.hideTimer = setTimeout(() => this.pause(2), ms);
    } else {
      this.resume(2);
      this.kick();
    }
  }

  /** The network is gone: close the stream now, and open it when it is back. */
  offline(): void {
    if (!this.holds || this.away) return;
    this.stop();
    this.reconnecting = true;
    this.setConnected(false);
  }

  /** Reconnect at once if waiting to (online again, the page visible again). */
  kick(): void {
    if (this.holds && !this.away && !this.es && !this.pending && this.subscribers.size > 0) {
      this.tries = 0;
      this.reopenNow();
    }
  }

  // --- the stream ------------------------------------------------------------------------

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
      this.announce();
      if (!this.holds || this.away) return;
      const next = this.order();
      if ((this.es || this.pending || this.reopenTimer) && sameList(next, this.openChannels)) return;
      this.reopenNow();
    });
  }

  /** The channels of the stream: every tab's, the open ones first in their order. */
  private order(): string[] {
    const want = new Set(this.channels.keys());
    for (const p of this.peers.values()) p.c!.forEach((c) => want.add(c));
    const next = this.openChannels.filter((c) => want.has(c));
    want.forEach((c) => next.includes(c) || next.push(c));
    return next;
  }

  /** (Re-)open now with the channels of {@link order}, from the last position. */
  private reopenNow(): void {
    const next = this.order();
    if (this.lastEventId) {
      const entries = decodePositions(this.lastEventId, this.openChannels.length);
      if (entries) {
        const at = new Map(this.openChannels.map((c, i) => [c, entries[i] ?? '']));
        this.lastEventId = encodePositions(next.map((c) => at.get(c) ?? ''));
      }
    }
    // `lastEventId` is now in the order of `next`, the channels of the next open.
    this.openChannels = next;
    if (next.length) {
      for (const t of this.last.keys()) {
        if (!next.some((c) => t === c || t.startsWith(`${c}:`))) this.last.delete(t);
      }
    }
    this.closeSource();
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    // An open waiting for its token builds its URL when the token comes: it takes `next`.
    if (!this.pending) this.open();
  }

  /**
   * Open the connection: at once, or once `getToken` has given a token (and, for a token in a
   * header, the fetch source is loaded).
   */
  private open(): void {
    if (!online || this.away || !this.holds) return;
    const { getToken, tokenParam } = this.o;
    if (!getToken) return this.create();
    this.pending = true;
    const n = ++this.opens;
    Promise.all([
      new Promise<string>((resolve) => resolve(getToken())),
      // (Its file name is lowercase letters only: server/tests/browser.rs serves no other.)
      tokenParam === undefined && import('./fetchsource.js'),
    ]).then(
      ([token, m]) => {
        if (n !== this.opens) return;
        this.pending = false;
        if (this.subscribers.size > 0) this.create(token, m && m.FetchEventSource);
      },
      (error: unknown) => {
        if (n !== this.opens) return;
        this.pending = false;
        this.each((s) => s.options.onError?.(error));
        if (this.subscribers.size > 0) this.reopenLater();
      },
    );
  }

  /**
   * Create the `EventSource`: the channels, the id to resume from, the token in the query; or,
   * given the fetch source `F`, the token in the `Authorization` header.
   */
  private create(token?: string, F?: typeof FetchEventSource | false): void {
    const params: [string, string][] = [];
    // A new EventSource cannot send Last-Event-ID; ssehub reads it from the query too.
    if (this.lastEventId) params.push(['lastEventId', this.lastEventId]);
    if (token !== undefined && !F) params.push([this.o.tokenParam as string, token]);
    let url = this.url;
    if (this.openChannels.length > 0 || params.length > 0) {
      const u = new URL(url, baseUrl());
      if (this.openChannels.length > 0) {
        u.searchParams.delete('channel');
        for (const c of this.openChannels) u.searchParams.append('channel', c);
      }
      for (const [k, v] of params) u.searchParams.set(k, v);
      url = isAbsolute(this.url) ? u.toString() : u.pathname + u.search;
    }
    const es: EventSourceLike = F
      ? new F(url, {
          withCredentials: this.withCredentials,
          headers: { Authorization: `Bearer ${token}` },
          lastEventId: this.lastEventId,
          ...(this.o.fetch && { fetch: this.o.fetch }),
        })
      : new this.Ctor!(url, this.withCredentials ? { withCredentials: true } : undefined);
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

  private setConnected(c: boolean): void {
    if (this.leader) this.post({ k: 'c', n: c });
    if (this.connected === c) return;
    this.connected = c;
    this.each((s) => s.options.onConnectionChange?.(c));
  }

  private handleOpen(): void {
    this.openedAt = Date.now();
    this.denied = false;
    const wasReconnect = this.reconnecting;
    this.reconnecting = false;
    this.setConnected(true);
    // Without an id to resume from, the server starts a fresh stream: anything published
    // while we were away is gone, and the server cannot know to send `reset`.
    if (wasReconnect && !this.lastEventId) {
      const r = { reason: 'not-resumed' };
      this.post({ k: 'r', r });
      this.reset(r);
    }
  }

  private handleError(ev: unknown): void {
    // Refused (a token that expired on its way, a clock skew): a new token at once, once.
    if (this.es?.status === 401 && !this.denied && this.subscribers.size > 0) {
      this.denied = true;
      this.closeSource();
      return this.open();
    }
    const up = this.connected ? Date.now() - this.openedAt : 0;
    if (up >= HEALTHY_RESET_MS) this.tries = 0;
    this.reconnecting = true;
    this.setConnected(false);
    this.post({ k: 'x' });
    this.each((s) => s.options.onError?.(ev));
    // Never let the EventSource retry by itself (all at once after a server restart, with a
    // token that may have expired): recreate it with jittered backoff, resuming from the last
    // id through the `lastEventId` query parameter.
    if (this.es && this.subscribers.size > 0) {
      this.closeSource();
      this.reopenLater(this.o.getToken && up >= HEALTHY_MS ? REOPEN_FAST_MS : undefined);
    }
  }

  /** Open again after `first` ms, else after a random delay of the backoff. */
  private reopenLater(first?: number): void {
    const min = this.o.retryMinMs ?? this.retry ?? RETRY_MIN_MS;
    const cap = Math.max(min, Math.min(this.o.retryMaxMs ?? RETRY_MAX_MS, min * 2 ** ++this.tries));
    this.reopenTimer = setTimeout(
      () => {
        this.reopenTimer = null;
        if (this.subscribers.size > 0) this.open();
      },
      first ?? min + Math.random() * (cap - min),
    );
  }

  private reset(reset: ResetInfo): void {
    // A channel's own reset goes to that channel's subscribers only.
    this.each((s) => {
      if (reset.channel === undefined || s.channel === reset.channel) s.options.onReset?.(reset);
    });
  }

  private handleEvent(
    type: string,
    ev: { data?: unknown; lastEventId?: string | undefined },
    replay = false,
  ): void {
    const data = typeof ev.data === 'string' ? ev.data : String(ev.data);
    const id = ev.lastEventId ?? '';
    if (!replay) {
      if (id) this.lastEventId = id;
      if (type !== RESET_EVENT) this.last.set(type, [data, id]);
      if (this.leader) this.post({ k: 'e', y: type, d: data, i: id, o: this.openChannels });
    }
    if (type === RESET_EVENT) {
      let reset: ResetInfo = { reason: 'unknown' };
      try {
        const parsed = JSON.parse(data) as (Partial<ResetPayload> & { channel?: unknown }) | null;
        if (parsed && typeof parsed.reason === 'string') reset = { reason: parsed.reason };
        if (parsed && typeof parsed.channel === 'string') reset.channel = parsed.channel;
      } catch {
        // A reset without a readable reason is still a reset.
      }
      return this.reset(reset);
    }
    this.each((s) => {
      if (!s.types.has(type)) return;
      const meta: EventMeta = { type, lastEventId: id };
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
      this.retry = this.es.retry ?? this.retry;
      this.es.onopen = null;
      this.es.onerror = null;
      for (const [type, fn] of this.listening) this.es.removeEventListener(type, fn);
      this.es.close();
    }
    this.es = null;
  }

  /** Close the stream and forget any open on its way. */
  private stop(): void {
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    this.opens++;
    this.pending = false;
    this.closeSource();
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

/** The shared sources of each `EventSource` constructor; of none (`fetch` only) under `pools`. */
const pools = new WeakMap<object, Map<string, SharedSource>>();

const globalEventSource = () => (globalThis as { EventSource?: EventSourceConstructor }).EventSource;

/**
 * Subscribe to an SSE endpoint, or to one channel of a multiplexing endpoint
 * ({@link ConnectOptions.channel}). Connections to the same endpoint (and `EventSource`
 * constructor, credentials mode and {@link ConnectOptions.share}) share one `EventSource`;
 * with sharing, one for every tab of the browser.
 */
export function connect<TEvent = unknown>(
  endpoint: string,
  options: ConnectOptions<TEvent> = {},
): Subscription {
  const Ctor = options.EventSource ?? globalEventSource();
  // A token in a header needs no EventSource: the stream is read with fetch.
  if (!Ctor && !(options.getToken && options.tokenParam === undefined)) {
    throw new Error(
      'no EventSource in this environment: pass one with the `EventSource` option (e.g. the npm `eventsource` package)',
    );
  }
  const withCredentials = options.withCredentials ?? false;
  const g = globalThis as any;
  const share =
    options.share !== false && !!g.document && !!g.navigator?.locks && typeof BroadcastChannel === 'function';
  const key = `${withCredentials ? 'cred' : 'anon'}${share ? '' : ' local'} ${endpoint}`;
  let pool = pools.get(Ctor ?? pools);
  if (!pool) {
    pool = new Map();
    pools.set(Ctor ?? pools, pool);
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
      options as ConnectOptions<any>,
      share ? `ssehub ${key}` : '',
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

/**
 * How many shared connections this page has for this constructor (for tests and diagnostics);
 * one shared with other tabs counts here even when another tab holds its `EventSource`. Without
 * a constructor, given or global: the connections made with `fetch` alone (a token in a header).
 */
export function openConnectionCount(Ctor?: EventSourceConstructor): number {
  return pools.get(Ctor ?? globalEventSource() ?? pools)?.size ?? 0;
}
