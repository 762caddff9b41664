// `@ssehub/client/server`: the publisher against the real hub (SSEHUB_HUB_BIN), and its retry
// rules against fake `fetch`es.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createPublisher, PublishError, type FetchLike } from '../src/server.js';
import { describeHub, history, jwt, KEY, nowSecs, SECRET, startHub, type Hub } from './hub.js';
import { uniqueId } from './helpers.js';

/** A `fetch` that records each request's URL and `Idempotency-Key`. */
function recording(inner: FetchLike = (u, i) => fetch(u, i)) {
  const calls: { url: string; key: string | null; body: string }[] = [];
  const f: FetchLike = (url, init) => {
    calls.push({
      url,
      key: new Headers(init.headers).get('idempotency-key'),
      body: String(init.body),
    });
    return inner(url, init);
  };
  return { fetch: f, calls };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describeHub('createPublisher against the hub', () => {
  let hub: Hub;
  beforeAll(async () => {
    hub = await startHub(['--publish-key', KEY, '--jwt-secret', SECRET]);
  });
  afterAll(async () => {
    await hub?.stop();
  });

  /** A fresh channel and the id of a first event on it (history's `since`). */
  async function channel(prefix = 'pub'): Promise<{ name: string; since: string }> {
    const name = `${prefix}/${uniqueId('c')}`;
    const { id } = await createPublisher({ url: hub.url, key: KEY }).publish(name, 'marker');
    return { name, since: id };
  }

  it('publishes an event and answers its id', async () => {
    const ch = await channel();
    // The key may come from a function (a JWT renewed as it expires).
    const pub = createPublisher({ url: `${hub.url}/`, key: async () => KEY });
    const { id } = await pub.publish(ch.name, { text: 'hi' }, { event: 'comment-added' });
    expect(id).toMatch(/\S/);
    const h = await history(hub, ch.name, ch.since);
    expect(h.events).toEqual([{ id, event: 'comment-added', data: { text: 'hi' } }]);
  });

  it('publishes a batch and answers the ids in order', async () => {
    const a = await channel();
    const b = await channel();
    const pub = createPublisher({ url: hub.url, key: KEY });
    const { ids } = await pub.publishMany([
      { channel: a.name, data: 1 },
      { channel: a.name, data: 2, event: 'x' },
      { channel: b.name, data: 3 },
    ]);
    expect(ids).toHaveLength(3);
    expect(new Set(ids).size).toBe(3);
    expect((await history(hub, a.name, a.since)).events).toEqual([
      { id: ids[0], data: 1 },
      { id: ids[1], event: 'x', data: 2 },
    ]);
    expect((await history(hub, b.name, b.since)).events).toEqual([{ id: ids[2], data: 3 }]);
  });

  it('stores a repeated idempotency key once and answers the first id', async () => {
    const ch = await channel();
    const pub = createPublisher({ url: hub.url, key: KEY });
    const idempotencyKey = `order-${uniqueId('k')}`;
    const first = await pub.publish(ch.name, { n: 1 }, { idempotencyKey });
    const again = await pub.publish(ch.name, { n: 1 }, { idempotencyKey });
    expect(again.id).toBe(first.id);
    expect((await history(hub, ch.name, ch.since)).events.map((e) => e.id)).toEqual([first.id]);

    const batchKey = `batch-${uniqueId('k')}`;
    const events = [
      { channel: ch.name, data: 'a' },
      { channel: ch.name, data: 'b' },
    ];
    const m1 = await pub.publishMany(events, { idempotencyKey: batchKey });
    const m2 = await pub.publishMany(events, { idempotencyKey: batchKey });
    expect(m2.ids).toEqual(m1.ids);
    expect((await history(hub, ch.name, ch.since)).events.map((e) => e.id)).toEqual([first.id, ...m1.ids]);
  });

  it('retries a lost answer with the generated key: the hub stores the event once', async () => {
    const ch = await channel();
    let dropped = 0;
    // The hub answers, then the answer is lost on the way back (a network error).
    const { fetch: lossy, calls } = recording(async (url, init) => {
      const res = await fetch(url, init);
      if (dropped++ === 0) {
        await res.arrayBuffer();
        throw new TypeError('fetch failed');
      }
      return res;
    });
    const pub = createPublisher({ url: hub.url, key: KEY, fetch: lossy });
    const { id } = await pub.publish(ch.name, { n: 1 });
    expect(calls).toHaveLength(2);
    expect(calls[0]?.key).toMatch(UUID);
    expect(calls[1]?.key).toBe(calls[0]?.key);
    expect((await history(hub, ch.name, ch.since)).events).toEqual([{ id, data: { n: 1 } }]);

    // The same for a batch; and each logical publish has its own key.
    dropped = 0;
    const { ids } = await pub.publishMany([
      { channel: ch.name, data: 2 },
      { channel: ch.name, data: 3 },
    ]);
    expect(calls).toHaveLength(4);
    expect(calls[3]?.key).toBe(calls[2]?.key);
    expect(calls[2]?.key).not.toBe(calls[0]?.key);
    expect((await history(hub, ch.name, ch.since)).events.map((e) => e.id)).toEqual([id, ...ids]);
  });

  it('rejects a wrong key with PublishError 401, without retrying', async () => {
    const { fetch: f, calls } = recording();
    const pub = createPublisher({ url: hub.url, key: 'not-the-key', fetch: f });
    const err = await pub.publish(`pub/${uniqueId('c')}`, 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PublishError);
    expect(err).toMatchObject({ name: 'PublishError', status: 401 });
    expect((err as PublishError).message).toMatch(/credentials/);
    expect(calls).toHaveLength(1);
  });

  it('reports 403 with the channel and 400 with the hub message, without retrying', async () => {
    const { fetch: f, calls } = recording();
    const token = jwt(SECRET, { exp: nowSecs() + 600, 'ssehub.publish': ['mine/*'] });
    const pub = createPublisher({ url: hub.url, key: token, fetch: f });
    expect((await pub.publish(`mine/${uniqueId('c')}`, 1)).id).toMatch(/\S/);
    const other = `theirs/${uniqueId('c')}`;
    await expect(pub.publish(other, 1)).rejects.toMatchObject({ status: 403, channel: other });
    await expect(pub.publish(`mine/${uniqueId('c')}`, 1, { event: 'reset' })).rejects.toMatchObject({
      status: 400,
      message: expect.stringMatching(/event name/),
    });
    expect(calls).toHaveLength(3);
    // A channel name the hub would refuse is refused before any request.
    await expect(pub.publish('a b', 1)).rejects.toMatchObject({ status: 400 });
    await expect(pub.publishMany([{ channel: 'reset', data: 1 }])).rejects.toMatchObject({ status: 400 });
    expect(calls).toHaveLength(3);
  });

  it('refuses a channel with a dot segment, as the hub does', async () => {
    // URL parsing would drop `..` from /v1/publish/dots/.., publishing elsewhere.
    const { fetch: f, calls } = recording();
    const pub = createPublisher({ url: hub.url, key: KEY, fetch: f });
    await expect(pub.publish(`dots/${uniqueId('c')}/..`, 1)).rejects.toMatchObject({ status: 400 });
    expect(calls).toHaveLength(0);
    // And the hub itself refuses it in a batch, whose body names it.
    const res = await fetch(`${hub.url}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ channel: 'dots/..', data: 1 }] }),
    });
    expect(res.status).toBe(400);
  });
});

describe('createPublisher retries (fake fetch)', () => {
  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

  it('retries a 503 after its Retry-After, with the same key', async () => {
    const answers = [
      json(503, { error: 'broker unavailable: down' }, { 'retry-after': '1' }),
      json(200, { id: 'e-1' }),
    ];
    const { fetch: f, calls } = recording(async () => answers.shift() as Response);
    const pub = createPublisher({ url: 'http://hub.invalid', key: 'k', fetch: f });
    const started = Date.now();
    expect(await pub.publish('a/b', 1)).toEqual({ id: 'e-1' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(990);
    expect(calls).toHaveLength(2);
    expect(calls[0]?.url).toBe('http://hub.invalid/v1/publish/a/b');
    expect(calls[0]?.key).toMatch(UUID);
    expect(calls[1]?.key).toBe(calls[0]?.key);
    expect(JSON.parse(calls[0]?.body ?? '')).toEqual({ data: 1 });
  });

  it('gives up after `retries` with the last 503', async () => {
    const { fetch: f, calls } = recording(async () =>
      json(503, { error: 'too many connections on this hub' }, { 'retry-after': '0' }),
    );
    const pub = createPublisher({ url: 'http://hub.invalid', key: 'k', fetch: f, retries: 2 });
    await expect(pub.publishMany([{ channel: 'a', data: 1 }], { idempotencyKey: 'mine' })).rejects.toMatchObject({
      status: 503,
      retryAfter: 0,
      message: 'too many connections on this hub',
    });
    expect(calls.map((c) => c.key)).toEqual(['mine', 'mine', 'mine']);
  });

  it('retries an attempt over timeoutMs, then reports status 0', async () => {
    const { fetch: f, calls } = recording(
      (_url, init) =>
        new Promise<Response>((_resolve, reject) => {
          init.signal?.addEventListener('abort', () => reject(init.signal?.reason));
        }),
    );
    const pub = createPublisher({ url: 'http://hub.invalid', key: 'k', fetch: f, retries: 1, timeoutMs: 50 });
    const err = await pub.publish('a', 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PublishError);
    expect(err).toMatchObject({ status: 0, message: expect.stringMatching(/no answer within 50 ms/) });
    expect(calls).toHaveLength(2);
    expect(calls[1]?.key).toBe(calls[0]?.key);
  });

  it('stops retrying when its signal aborts', async () => {
    const { fetch: f, calls } = recording(async () => json(503, { error: 'down' }, { 'retry-after': '5' }));
    const pub = createPublisher({ url: 'http://hub.invalid', key: 'k', fetch: f });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('user gave up')), 50);
    await expect(pub.publish('a', 1, { signal: ac.signal })).rejects.toThrow('user gave up');
    expect(calls).toHaveLength(1);
  });
});
