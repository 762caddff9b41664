import { EventSource } from 'eventsource';
import { inject } from 'vitest';

import type { EventSourceConstructor } from '../src/core.js';

/** The running comments example. */
export const base = (): string => inject('baseUrl');

/** A discussion id no other test uses. */
let n = 0;
export const uniqueId = (name: string): string =>
  `${name}-${process.pid}-${Date.now().toString(36)}-${n++}`;

export const ES = EventSource as unknown as EventSourceConstructor;

/** An `EventSource` class that counts the instances it creates (a real SSE client still). */
export function countingEventSource(): { Ctor: EventSourceConstructor; created: () => EventSource[] } {
  const made: EventSource[] = [];
  class Counting extends EventSource {
    constructor(url: string | URL, init?: ConstructorParameters<typeof EventSource>[1]) {
      super(url, init);
      made.push(this);
    }
  }
  return { Ctor: Counting as unknown as EventSourceConstructor, created: () => made };
}

export async function addComment(id: string): Promise<number> {
  const res = await fetch(`${base()}/api/comments/${encodeURIComponent(id)}`, { method: 'POST' });
  if (!res.ok) throw new Error(`POST failed: ${res.status}`);
  const body = (await res.json()) as { commentCount: number };
  return body.commentCount;
}

export async function waitFor(cond: () => boolean, limitMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A request a {@link fakeFetch} got; the test writes its body (each write one chunk). */
export interface FakeCall {
  url: string;
  init: RequestInit;
  headers: Record<string, string>;
  /** When it was made (`Date.now()`). */
  at: number;
  write(chunk: string | Uint8Array): void;
  end(): void;
}

/**
 * A `fetch` answering the `i`th request (from 0) with `answer(i)`: a status, or a status and a
 * content type (default `text/event-stream`); the body is written by the test and errored when
 * the request is aborted.
 */
export function fakeFetch(answer: (i: number) => number | [number, string] = () => 200): {
  fetch: typeof fetch;
  calls: FakeCall[];
} {
  const calls: FakeCall[] = [];
  const enc = new TextEncoder();
  const f = async (url: string | URL | Request, init: RequestInit = {}) => {
    const a = answer(calls.length);
    const [status, type] = typeof a === 'number' ? [a, 'text/event-stream'] : a;
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
    init.signal?.addEventListener('abort', () => ctl.error(new DOMException('aborted', 'AbortError')));
    calls.push({
      url: String(url),
      init,
      headers: init.headers as Record<string, string>,
      at: Date.now(),
      write: (chunk) => ctl.enqueue(typeof chunk === 'string' ? enc.encode(chunk) : chunk),
      end: () => ctl.close(),
    });
    return { status, headers: new Headers({ 'content-type': type }), body } as unknown as Response;
  };
  return { fetch: f as typeof fetch, calls };
}
