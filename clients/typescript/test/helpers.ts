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
