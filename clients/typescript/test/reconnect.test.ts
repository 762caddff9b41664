// The reconnect policy and the page's life, with a fake EventSource driven by the test:
// jittered exponential backoff between `retryMinMs` and `retryMaxMs`; `offline`/`online`,
// `pagehide`/`pageshow` and `visibilitychange` (with `releaseHiddenAfterMs`). The window and
// the document are EventTargets stubbed in before the first `connect` (which installs the
// listeners); `share: false` keeps these to one page.
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

import { connect, type EventSourceConstructor, type Subscription } from '../src/core.js';
import { waitFor } from './helpers.js';

const win = new EventTarget();
const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
beforeAll(() => {
  vi.stubGlobal('addEventListener', win.addEventListener.bind(win));
  vi.stubGlobal('document', doc);
});

const subs: Subscription[] = [];
afterEach(() => {
  for (const s of subs.splice(0)) s.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fake EventSource: the test opens it, fails it and sends it events. */
function fakes() {
  const made: Fake[] = [];
  class Fake {
    readyState = 0;
    onopen: ((ev: unknown) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;
    readonly at = Date.now();
    private readonly listeners = new Map<string, (ev: unknown) => void>();
    constructor(readonly url: string) {
      made.push(this);
    }
    addEventListener(type: string, fn: (ev: unknown) => void) {
      this.listeners.set(type, fn);
    }
    removeEventListener(type: string) {
      this.listeners.delete(type);
    }
    close() {
      this.readyState = 2;
    }
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    fail() {
      this.readyState = 0;
      this.onerror?.({});
    }
    send(id: string, data: unknown) {
      this.listeners.get('message')?.({ data: JSON.stringify(data), lastEventId: id });
    }
  }
  return { Ctor: Fake as unknown as EventSourceConstructor, made, last: () => made[made.length - 1]! };
}

describe('reconnects', () => {
  it('wait a random delay between the minimum and a doubling ceiling, and resume from the last id', async () => {
    const { Ctor, made, last } = fakes();
    subs.push(connect('/sse', { EventSource: Ctor, share: false, retryMinMs: 50, retryMaxMs: 150, onEvent: () => {} }));
    last().open();
    last().send('7', {});
    const gaps: number[] = [];
    for (let i = 0; i < 6; i++) {
      const failed = Date.now();
      const n = made.length;
      last().fail();
      expect(last().readyState).toBe(2); // closed: the EventSource never retries by itself
      await waitFor(() => made.length === n + 1, 2_000, `re-open ${i}`);
      gaps.push(last().at - failed);
      expect(last().url).toBe('/sse?lastEventId=7');
    }
    // 1st: between 50 and 100 ms; then between 50 and the ceiling, 150 (timers may run late).
    expect(gaps[0]).toBeGreaterThanOrEqual(45);
    expect(gaps[0]).toBeLessThan(100 + 60);
    for (const g of gaps.slice(1)) {
      expect(g).toBeGreaterThanOrEqual(45);
      expect(g).toBeLessThan(150 + 60);
    }
  });
});

describe("the page's life", () => {
  it('offline closes the stream; online re-opens it at once from the last id', async () => {
    const { Ctor, made, last } = fakes();
    const states: boolean[] = [];
    subs.push(
      connect('/sse', {
        EventSource: Ctor,
        share: false,
        retryMinMs: 10_000,
        onEvent: () => {},
        onConnectionChange: (c) => states.push(c),
      }),
    );
    last().open();
    last().send('3', {});
    win.dispatchEvent(new Event('offline'));
    expect(last().readyState).toBe(2);
    expect(states).toEqual([true, false]);
    await sleep(50);
    expect(made).toHaveLength(1);
    win.dispatchEvent(new Event('online'));
    expect(made).toHaveLength(2); // at once, not after the 10 s backoff
    expect(last().url).toBe('/sse?lastEventId=3');
    last().open();
    expect(states).toEqual([true, false, true]);
  });

  it('a page going away closes the stream, and re-opens it when it is shown again', async () => {
    const { Ctor, made, last } = fakes();
    subs.push(connect('/sse', { EventSource: Ctor, share: false, onEvent: () => {} }));
    last().open();
    last().send('5', {});
    win.dispatchEvent(new Event('pagehide'));
    expect(last().readyState).toBe(2);
    win.dispatchEvent(new Event('pageshow'));
    expect(made).toHaveLength(2);
    expect(last().url).toBe('/sse?lastEventId=5');
  });

  it('releases the stream after the page was hidden releaseHiddenAfterMs, and reconnects when visible', async () => {
    const { Ctor, made, last } = fakes();
    subs.push(connect('/sse', { EventSource: Ctor, share: false, releaseHiddenAfterMs: 50, onEvent: () => {} }));
    last().open();
    last().send('9', {});
    doc.visibilityState = 'hidden';
    doc.dispatchEvent(new Event('visibilitychange'));
    await sleep(20);
    expect(last().readyState).toBe(1); // not yet
    await waitFor(() => last().readyState === 2, 2_000, 'the release');
    doc.visibilityState = 'visible';
    doc.dispatchEvent(new Event('visibilitychange'));
    expect(made).toHaveLength(2);
    expect(last().url).toBe('/sse?lastEventId=9');
  });

  it('reconnects at once when the page becomes visible while waiting to', async () => {
    const { Ctor, made, last } = fakes();
    subs.push(connect('/sse', { EventSource: Ctor, share: false, retryMinMs: 10_000, onEvent: () => {} }));
    last().open();
    last().fail();
    expect(made).toHaveLength(1);
    doc.dispatchEvent(new Event('visibilitychange'));
    expect(made).toHaveLength(2);
  });
});
