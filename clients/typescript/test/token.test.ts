// `connect({ getToken })`: a token in the query, fetched for every open; streams that end when
// their token expires are re-opened with a fresh one and the last id. Against the real hub
// (SSEHUB_HUB_BIN) started with --jwt-secret, with the npm `eventsource` package.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { EventSource } from 'eventsource';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { connect, type EventSourceConstructor, type ResetInfo, type Subscription } from '../src/core.js';
import { createPublisher, type Publisher } from '../src/server.js';
import { countingEventSource, ES, uniqueId, waitFor } from './helpers.js';
import { describeHub, jwt, KEY, nowSecs, SECRET, startHub, type Hub } from './hub.js';

const subs: Subscription[] = [];
afterEach(() => {
  for (const s of subs.splice(0)) s.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An `EventSource` (npm `eventsource`) recording each HTTP request it makes, its own
 * reconnects included, with the answer's status.
 */
function recordingEventSource() {
  const made: EventSource[] = [];
  const requests: { url: URL; status: number }[] = [];
  class Recording extends EventSource {
    constructor(url: string | URL, init?: { withCredentials?: boolean }) {
      super(url, {
        ...init,
        fetch: async (u, i) => {
          const res = await fetch(u, i);
          requests.push({ url: new URL(String(u)), status: res.status });
          return res;
        },
      });
      made.push(this);
    }
  }
  return { Ctor: Recording as unknown as EventSourceConstructor, created: () => made, requests };
}

describeHub('connect with getToken against the hub', () => {
  let hub: Hub;
  let pub: Publisher;
  beforeAll(async () => {
    hub = await startHub(['--publish-key', KEY, '--jwt-secret', SECRET]);
    pub = createPublisher({ url: hub.url, key: KEY });
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('re-opens with a fresh token and the last id when the token expires: every event once', async () => {
    const channel = `tok/${uniqueId('c')}`;
    const { Ctor, created, requests } = recordingEventSource();
    let calls = 0;
    const getToken = async () => {
      calls++;
      // Expires in about 2 s: the hub ends the stream then.
      return jwt(SECRET, { sub: 'alice', exp: nowSecs() + 2, jti: String(calls), 'ssehub.subscribe': ['tok/*'] });
    };
    const got: { n: number; id: string }[] = [];
    const resets: ResetInfo[] = [];
    const states: boolean[] = [];
    let gap: Promise<unknown> | null = null;
    const sub = connect<{ n: number }>(`${hub.url}/v1/sse`, {
      channel,
      getToken,
      EventSource: Ctor,
      onEvent: (e, meta) => got.push({ n: e.n, id: meta.lastEventId }),
      onReset: (r) => resets.push(r),
      onConnectionChange: (c) => {
        states.push(c);
        // Published while no stream is open: the re-open must replay it.
        if (!c && !gap) gap = pub.publish(channel, { n: 2 });
      },
    });
    subs.push(sub);
    await waitFor(() => sub.connected, 10_000, 'connected');
    await pub.publish(channel, { n: 0 });
    await pub.publish(channel, { n: 1 });
    await waitFor(() => got.length === 2, 10_000, 'the events before expiry');
    const beforeExpiry = got[1]?.id;

    await waitFor(() => states.includes(false) && sub.connected, 10_000, 'the stream ended at exp and re-opened');
    await gap;
    await pub.publish(channel, { n: 3 });
    await pub.publish(channel, { n: 4 });
    await waitFor(() => got.length >= 5, 10_000, 'the events after expiry');
    await sleep(300); // no duplicate on its way
    expect(got.map((e) => e.n)).toEqual([0, 1, 2, 3, 4]);
    expect(resets).toEqual([]);
    expect(calls).toBeGreaterThanOrEqual(2);

    const urls = created().map((es) => new URL((es as unknown as { url: string }).url));
    expect(urls.length).toBeGreaterThanOrEqual(2);
    expect(urls[0]?.searchParams.get('token')).toMatch(/\S/);
    expect(urls[0]?.searchParams.has('lastEventId')).toBe(false);
    // The re-open carried a new token and the last id received before the stream ended.
    expect(urls[1]?.searchParams.get('token')).not.toBe(urls[0]?.searchParams.get('token'));
    expect(urls[1]?.searchParams.get('lastEventId')).toBe(beforeExpiry);
    expect(urls[1]?.searchParams.getAll('channel')).toEqual([channel]);
    // The EventSource never retried a URL by itself: every request had a token of its own.
    const tokens = requests.map((r) => r.url.searchParams.get('token'));
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(requests.map((r) => r.status)).toEqual(requests.map(() => 200));
  });

  it('reports a getToken rejection to onError and tries again', async () => {
    const channel = `tok/${uniqueId('c')}`;
    let calls = 0;
    const errors: unknown[] = [];
    const { Ctor } = countingEventSource();
    const sub = connect(`${hub.url}/v1/sse`, {
      channel,
      EventSource: Ctor,
      getToken: () => {
        calls++;
        if (calls === 1) throw new Error('auth backend down');
        return jwt(SECRET, { exp: nowSecs() + 600, 'ssehub.subscribe': channel });
      },
      onError: (e) => errors.push(e),
    });
    subs.push(sub);
    await waitFor(() => sub.connected, 10_000, 'connected after the retry');
    expect(calls).toBe(2);
    expect(errors[0]).toBeInstanceOf(Error);
    expect((errors[0] as Error).message).toBe('auth backend down');
  });
});

describe('connect with getToken (fake EventSource)', () => {
  it("puts the token in tokenParam, once per open, and uses the first subscriber's getToken", async () => {
    const urls: string[] = [];
    class Fake {
      readyState = 0;
      onopen: ((ev: unknown) => void) | null = null;
      onerror: ((ev: unknown) => void) | null = null;
      constructor(url: string) {
        urls.push(url);
      }
      addEventListener() {}
      removeEventListener() {}
      close() {
        this.readyState = 2;
      }
    }
    const Ctor = Fake as unknown as EventSourceConstructor;
    const firstCalls: number[] = [];
    let secondCalls = 0;
    const a = connect('/api/sse?x=1', {
      channel: 'a',
      EventSource: Ctor,
      tokenParam: 'auth',
      getToken: () => {
        firstCalls.push(1);
        return new Promise((r) => setTimeout(() => r(`T${firstCalls.length}`), 20));
      },
    });
    // Joins while the token is on its way: still one open, one token.
    const b = connect('/api/sse?x=1', {
      channel: 'b',
      EventSource: Ctor,
      getToken: () => {
        secondCalls++;
        return 'other';
      },
    });
    subs.push(a, b);
    await waitFor(() => urls.length === 1, 2_000, 'the open');
    await sleep(50);
    expect(urls).toEqual(['/api/sse?x=1&channel=a&channel=b&auth=T1']);
    expect(firstCalls).toHaveLength(1);
    expect(secondCalls).toBe(0);
  });
});

describe('connect with getToken: re-open delays (a local SSE server)', () => {
  /** A server whose streams end after `lifeMs` (as the hub ends one at its token's expiry). */
  async function endingServer(lifeMs: number) {
    const at: number[] = [];
    const server = createServer((req, res) => {
      at.push(Date.now());
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write(`retry: 1000\nid: ${at.length}\ndata: {}\n\n`);
      setTimeout(() => res.end('retry: 1000\n\n'), lifeMs);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}/sse`,
      at,
      close: () => {
        server.closeAllConnections();
        server.close();
      },
    };
  }

  it('re-opens a healthy stream after about 250 ms, and backs off one that ends at once', async () => {
    const healthy = await endingServer(600);
    const instant = await endingServer(0);
    try {
      let tokens = 0;
      const getToken = () => `t${++tokens}`;
      subs.push(connect(healthy.url, { EventSource: ES, getToken }));
      subs.push(connect(instant.url, { EventSource: ES, getToken }));
      await waitFor(() => healthy.at.length >= 2 && instant.at.length >= 2, 10_000, 'the re-opens');
      const gap = (at: number[]) => (at[1] ?? 0) - (at[0] ?? 0);
      expect(gap(healthy.at)).toBeGreaterThanOrEqual(600 + 200);
      expect(gap(healthy.at)).toBeLessThan(600 + 700);
      expect(gap(instant.at)).toBeGreaterThanOrEqual(950);
    } finally {
      healthy.close();
      instant.close();
    }
  });
});
