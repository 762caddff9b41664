/**
 * An `EventSource` over `fetch` streaming, for what a native one cannot do: send headers
 * (`Authorization: Bearer …`, `Last-Event-ID`). `connect` loads it (a chunk of its own) with
 * the first stream it opens with `getToken` and no `tokenParam`.
 *
 * It makes ONE request and never reconnects by itself: when the response is not a
 * `200 text/event-stream`, the request fails or the stream ends, it closes and calls `onerror`,
 * and its owner opens a new one (core: with a fresh token, from the last id, after `retry`).
 * The stream is read as the WHATWG `EventSource` reads it: UTF-8 (a leading BOM dropped), lines
 * ended by CRLF, LF or CR, `data` lines joined with LF, `event`, `id` (unless it has a NUL),
 * `retry` (digits only), `:` comments; an event without data is not dispatched, nor one the
 * stream ends in the middle of.
 */

import type { EventSourceLike } from './core.js';

/** What a {@link FetchEventSource} is created with. */
export interface FetchEventSourceInit {
  /** Send cookies on cross-origin requests (`credentials: 'include'`). */
  withCredentials?: boolean;
  /** Request headers besides `Accept` and `Last-Event-ID` (e.g. `Authorization`). */
  headers?: Record<string, string>;
  /** The id to resume from: sent as `Last-Event-ID` when not empty. */
  lastEventId?: string;
  /** The `fetch` to use (default: the global one); it must honour `signal`. */
  fetch?: typeof fetch;
}

/**
 * The events are `MessageEvent`s, as an `EventSource`'s; the `error` event (`onerror`) carries
 * `status`, the response's (0 when none came), and `error`, what failed (none when the stream
 * just ended).
 */
export class FetchEventSource extends EventTarget implements EventSourceLike {
  /** 0 connecting, 1 open, 2 closed: for good once it failed, ended or was closed. */
  readyState = 0;
  onopen: ((ev: Event) => any) | null = null;
  onerror: ((ev: Event) => any) | null = null;
  /** The HTTP status of the response (0 until one came, or when none came). */
  status = 0;
  /** The last `retry` the server sent, in ms. */
  retry: number | undefined;
  /** The id of the last event dispatched (or the one it resumed from). */
  lastEventId: string;
  readonly withCredentials: boolean;
  private readonly abort = new AbortController();
  /** The event being read: its data (each line followed by LF), type and id. */
  private data = '';
  private type = '';
  private id: string;
  /** The unfinished line; whether the last text ended with CR (its LF may come next). */
  private line = '';
  private cr = false;

  constructor(
    readonly url: string,
    init: FetchEventSourceInit = {},
  ) {
    super();
    this.withCredentials = !!init.withCredentials;
    this.id = this.lastEventId = init.lastEventId ?? '';
    // The handlers are listeners: what they throw is reported, and does not break the stream.
    this.addEventListener('open', (e) => this.onopen?.(e));
    this.addEventListener('error', (e) => this.onerror?.(e));
    void this.run(init);
  }

  close(): void {
    this.readyState = 2;
    this.abort.abort();
  }

  private async run(init: FetchEventSourceInit): Promise<void> {
    let error: unknown;
    try {
      const headers: Record<string, string> = { Accept: 'text/event-stream', ...init.headers };
      if (this.id) headers['Last-Event-ID'] = this.id;
      const res = await (init.fetch ?? fetch)(this.url, {
        headers,
        cache: 'no-store',
        signal: this.abort.signal,
        ...(this.withCredentials && { credentials: 'include' }),
      });
      this.status = res.status;
      const type = res.headers.get('content-type') ?? '';
      if (res.status !== 200 || !/^\s*text\/event-stream\s*(;|$)/i.test(type) || !res.body) {
        throw new Error(`the stream answered ${res.status} ${type}`);
      }
      if (this.readyState) return;
      this.readyState = 1;
      this.dispatchEvent(new Event('open'));
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (let r; this.readyState < 2 && !(r = await reader.read()).done; ) {
        this.feed(decoder.decode(r.value, { stream: true }));
      }
    } catch (e) {
      error = e;
    }
    if (this.readyState < 2) {
      this.close();
      this.dispatchEvent(Object.assign(new Event('error'), { status: this.status, error }));
    }
  }

  /** Decoded text: its whole lines are read; a CRLF may be split between two texts. */
  private feed(text: string): void {
    if (!text) return;
    if (this.cr && text[0] === '\n') text = text.slice(1);
    this.cr = text.endsWith('\r');
    const lines = (this.line + text).split(/\r\n|\r|\n/);
    this.line = lines.pop() as string;
    for (const line of lines) this.read(line);
  }

  private read(line: string): void {
    if (!line) return this.dispatch();
    const i = line.indexOf(':');
    if (i === 0) return; // a comment
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(line[i + 1] === ' ' ? i + 2 : i + 1);
    if (field === 'data') this.data += `${value}\n`;
    else if (field === 'event') this.type = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.retry = +value;
  }

  /** The blank line that ends an event. */
  private dispatch(): void {
    const { data, type } = this;
    this.lastEventId = this.id;
    this.data = this.type = '';
    if (!data || this.readyState > 1) return;
    this.dispatchEvent(
      new MessageEvent(type || 'message', { data: data.slice(0, -1), lastEventId: this.lastEventId }),
    );
  }
}
