// One stream per browser: tabs elect the one that holds the stream with the Web Locks API and
// share its events over BroadcastChannel. Node has BroadcastChannel (delivered between instances
// in one process, as between tabs); `navigator.locks` is a faithful in-process fake below, and
// `document` a stub, so `connect` shares. Each "tab" is its own `EventSource` class: `connect`
// pools sources per constructor, so two classes are two pages that only meet over the
// BroadcastChannel and the lock. Against the real comments example.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

import { connect, type ResetInfo, type Subscription } from '../src/core.js';
import type { CommentEvent } from '../demo/generated/CommentEvent.js';
import { addComment, base, countingEventSource, uniqueId, waitFor } from './helpers.js';

type Waiter = { cb: (lock: unknown) => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void };

/** `navigator.locks.request(name, { signal }, cb)`: exclusive, granted in request order. */
function fakeLocks() {
  const queues = new Map<string, Waiter[]>();
  const held = new Set<string>();
  const pump = (name: string) => {
    if (held.has(name)) return;
    const next = queues.get(name)?.shift();
    if (!next) return;
    held.add(name);
    void Promise.resolve()
      .then(() => next.cb({ name, mode: 'exclusive' }))
      .then(next.resolve, next.reject)
      .finally(() => {
        held.delete(name);
        pump(name);
      });
  };
  return {
    held,
    request(name: string, opts: { signal?: AbortSignal }, cb: (lock: unknown) => unknown) {
      return new Promise((resolve, reject) => {
        const w: Waiter = { cb, resolve, reject };
        const q = queues.get(name) ?? [];
        queues.set(name, q);
        opts.signal?.addEventListener('abort', () => {
          const i = q.indexOf(w);
          if (i >= 0) {
            q.splice(i, 1);
            reject(new Error('AbortError'));
          }
        });
        q.push(w);
        pump(name);
      });
    },
  };
}

let locks: ReturnType<typeof fakeLocks>;
beforeAll(() => {
  locks = fakeLocks();
  vi.stubGlobal('navigator', { locks });
  vi.stubGlobal('document', new EventTarget());
});
afterAll(() => {
  vi.unstubAllGlobals();
});

const subs: Subscription[] = [];
afterEach(() => {
  for (const s of subs.splice(0)) s.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A tab: its own EventSource class, its subscriptions, what each of them received. */
function tab(name: string) {
  const { Ctor, created } = countingEventSource();
  const own: Subscription[] = [];
  const got: { channel: string; n: number; id: string }[] = [];
  const resets: ResetInfo[] = [];
  return {
    name,
    got,
    resets,
    created,
    /** Its open EventSources (the holder has one; the others none). */
    open: () => created().filter((es) => es.readyState !== 2),
    /** The comment counts of published events (with an id) this tab received. */
    counts: () => got.filter((g) => g.id !== '' && g.channel.startsWith('comments/')).map((g) => g.n),
    sub(endpoint: string, channel: string) {
      const s = connect<CommentEvent & { up?: number }>(endpoint, {
        EventSource: Ctor,
        channel,
        onEvent: (e, meta) => got.push({ channel: meta.channel ?? '', n: e.commentCount ?? e.up ?? -1, id: meta.lastEventId }),
        onReset: (r) => resets.push(r),
      });
      own.push(s);
      subs.push(s);
      return s;
    },
    close() {
      for (const s of own.splice(0)) s.close();
    },
  };
}

async function until(cond: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function sessions(id: string): Promise<number> {
  const res = await fetch(`${base()}/api/sessions/${encodeURIComponent(id)}`);
  return ((await res.json()) as { sessions: number }).sessions;
}

describe('one stream shared by every tab', () => {
  it('elects one holder; on its close another resumes from the last id: no gap, no duplicate', async () => {
    const id = uniqueId('tabs');
    const endpoint = `${base()}/api/sse`;
    const tabs = [tab('a'), tab('b'), tab('c'), tab('d')];
    for (const t of tabs) t.sub(endpoint, `comments/${id}`);
    const all = () => tabs.filter((t) => !t.name.endsWith('-closed'));
    // Every tab gets the channel's initial state: the holder from its stream, the others
    // relayed, or replayed when they join after it came.
    await waitFor(() => all().every((t) => t.got.length >= 1), 10_000, 'initial events in every tab');
    expect(tabs.flatMap((t) => t.open())).toHaveLength(1);
    expect(tabs[0]!.open()).toHaveLength(1); // the first to ask holds it
    expect(tabs.map((t) => t.created().length)).toEqual([1, 0, 0, 0]);
    expect(await sessions(id)).toBe(1);

    await addComment(id);
    await addComment(id);
    await waitFor(() => all().every((t) => t.counts().length === 2), 10_000, 'two comments in every tab');

    // The holder closes: the next in line takes over, resuming from the last id it saw.
    const holder = tabs[0]!;
    holder.close();
    holder.name += '-closed';
    const published = addComment(id); // while the stream changes hands
    await waitFor(() => tabs[1]!.open().length === 1, 5_000, 'tab b takes over');
    await published;
    await addComment(id);
    await waitFor(() => all().every((t) => t.counts().length === 4), 10_000, 'four comments in every tab');
    await sleep(300); // nothing repeated on its way
    for (const t of all()) {
      expect(t.counts(), t.name).toEqual([1, 2, 3, 4]);
      expect(t.resets, t.name).toEqual([]);
    }
    const url = new URL(tabs[1]!.created()[0]!.url);
    expect(url.searchParams.get('lastEventId')).toMatch(/^~/);
    expect(tabs.flatMap((t) => t.open())).toHaveLength(1);
    await until(async () => (await sessions(id)) === 1, 'one session');

    // A follower subscribes to another channel: the holder's stream takes it in, resuming the
    // others from their positions (nothing lost, nothing repeated).
    const c = tabs[2]!;
    c.sub(endpoint, `votes/${id}`);
    await waitFor(() => c.got.some((g) => g.channel === `votes/${id}`), 10_000, 'the votes initial event in tab c');
    expect(tabs[1]!.created().length).toBe(2); // re-opened once, for the union
    const reopened = new URL(tabs[1]!.created()[1]!.url);
    expect(reopened.searchParams.getAll('channel').sort()).toEqual([`comments/${id}`, `votes/${id}`]);
    expect(reopened.searchParams.get('lastEventId')).toMatch(/^~/);
    await addComment(id);
    await waitFor(() => all().every((t) => t.counts().length === 5), 10_000, 'the fifth comment everywhere');
    await sleep(300);
    for (const t of all()) expect(t.counts(), t.name).toEqual([1, 2, 3, 4, 5]);
    // Only tab c receives votes.
    for (const t of all()) {
      expect(t.got.some((g) => g.channel.startsWith('votes/')), t.name).toBe(t === c);
    }
    // And when it closes that subscription, the stream drops the channel again.
    expect(tabs.flatMap((t) => t.open())).toHaveLength(1);
    for (const t of all()) t.close();
    await sleep(50);
    expect(tabs.flatMap((t) => t.open())).toHaveLength(0);
    expect(locks.held.size).toBe(0);
  });

  it('hands the stream to a tab that joins after the holder left, from the last id', async () => {
    const id = uniqueId('tabs2');
    const endpoint = `${base()}/api/sse`;
    const a = tab('a');
    const b = tab('b');
    a.sub(endpoint, `comments/${id}`);
    await waitFor(() => a.got.length === 1, 10_000, 'a initial');
    b.sub(endpoint, `comments/${id}`);
    await waitFor(() => b.got.length === 1, 10_000, 'b replayed initial');
    expect(b.created()).toHaveLength(0);
    await addComment(id);
    await waitFor(() => a.counts().length === 1 && b.counts().length === 1, 10_000, 'comment 1');
    a.close();
    await waitFor(() => b.open().length === 1, 5_000, 'b holds');
    await addComment(id);
    await waitFor(() => b.counts().length === 2, 10_000, 'comment 2');
    await sleep(300);
    expect(b.counts()).toEqual([1, 2]);
    // b saw the initial event once (replayed), and no other event without an id.
    expect(b.got.filter((g) => g.id === '')).toHaveLength(1);
    b.close();
  });

  it("relays a channel's reset to the tabs on that channel only", async () => {
    const id = uniqueId('tabs-reset');
    // An id the server cannot place: its first channel (the holder's own) gets a reset.
    const endpoint = `${base()}/api/sse?lastEventId=~zzz-1`;
    const [holder, follower, other] = [tab('holder'), tab('follower'), tab('other')];
    holder.sub(endpoint, `comments/${id}`);
    follower.sub(endpoint, `comments/${id}`);
    other.sub(endpoint, `votes/${id}`);
    await waitFor(() => holder.resets.length === 1 && follower.resets.length === 1, 10_000, 'the resets');
    await waitFor(() => other.got.length === 1, 10_000, 'the votes initial event');
    await sleep(200);
    expect(holder.open()).toHaveLength(1);
    for (const t of [holder, follower]) {
      expect(t.resets, t.name).toEqual([{ reason: 'epoch-changed', channel: `comments/${id}` }]);
    }
    expect(other.resets).toEqual([]);
  });

  it('opts out with share: false (one stream per tab)', async () => {
    const id = uniqueId('noshare');
    const endpoint = `${base()}/api/sse`;
    const made = [countingEventSource(), countingEventSource()];
    const got: number[][] = [[], []];
    made.forEach(({ Ctor }, i) =>
      subs.push(
        connect<CommentEvent>(endpoint, {
          EventSource: Ctor,
          channel: `comments/${id}`,
          share: false,
          onEvent: (e) => got[i]!.push(e.commentCount),
        }),
      ),
    );
    await waitFor(() => got.every((g) => g.length === 1), 10_000, 'both initial');
    expect(made.map((m) => m.created().length)).toEqual([1, 1]);
    await until(async () => (await sessions(id)) === 2, 'two sessions');
  });
});
