// `connect({ getToken })`: a token fetched for every open, in the `Authorization` header over
// `fetch` streaming (the default) or in the query (`tokenParam`, with the npm `eventsource`
// package); streams that end when their token expires are re-opened with a fresh one and the
// last id; a `401` asks for a new token at once, once. Against the real hub (SSEHUB_HUB_BIN)
// started with --jwt-secret, and with an injected `fetch` or a fake `EventSource`.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { EventSource } from 'eventsource';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { connect, type EventSourceConstructor, type ResetInfo, type Subscription } from '../src/core.js';
import { createPublisher, type Publisher } from '../src/server.js';
import { countingEventSource, fakeFetch, uniqueId, waitFor } from './helpers.js';
import { describeHub, jwt, KEY, nowSecs, SECRET, startHub, type Hub } from './hub.js';

const subs: Subscription[] = [];
afterEach(() => {
  for (const s of subs.splice(0)) s.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How long a stream stays open to count as healthy (core's `HEALTHY_MS`, and some). */
const HEALTHY = 600;

/**
 * An `EventSource` (npm `eventsource`) recording each HTTP request it makes, its own
 * reconnects included, with the answer's status.
 */
function recordingEventSource() {
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
    }
  }
  return { Ctor: Recording as unknown as EventSourceConstructor, requests };
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

  /** One request of a stream: its token, the id it resumed from (header and query), its answer. */
  type Req = { url: URL; token: string | null; header: string | null; status: number };

  /** The header form: an injected `fetch` recording each request. */
  function headerForm() {
    const requests: Req[] = [];
    const f: typeof fetch = async (u, i) => {
      const res = await fetch(u, i);
      const h = (i?.headers ?? {}) as Record<string, string>;
      const token = h.Authorization?.replace(/^Bearer /, '') ?? null;
      requests.push({ url: new URL(String(u)), token, header: h['Last-Event-ID'] ?? null, status: res.status });
      return res;
    };
    return { options: { fetch: f }, requests: () => requests };
  }

  /** The query form: `tokenParam` and an `EventSource` recording each request. */
  function queryForm() {
    const { Ctor, requests } = recordingEventSource();
    const reqs = (): Req[] =>
      requests.map((r) => ({ url: r.url, token: r.url.searchParams.get('token'), header: null, status: r.status }));
    return { options: { EventSource: Ctor, tokenParam: 'token' }, requests: reqs };
  }

  for (const [form, make] of [
    ['in the Authorization header (fetch)', headerForm],
    ['in the query (tokenParam, EventSource)', queryForm],
  ] as const) {
    it(`token ${form}: re-opens with a fresh token and the last id when it expires, every event once`, async () => {
      const channel = `tok/${uniqueId('c')}`;
      const { options, requests } = make();
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
        ...options,
        channel,
        getToken,
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

      // Every request, the EventSource's own retries included, had a token of its own.
      const all = requests();
      expect(all.length).toBeGreaterThanOrEqual(2);
      const tokens = all.map((r) => r.token);
      expect(tokens.every((t) => t && /\S/.test(t))).toBe(true);
      expect(new Set(tokens).size).toBe(tokens.length);
      expect(all.map((r) => r.status)).toEqual(all.map(() => 200));
      const [first, second] = all as [Req, Req];
      expect(first.url.searchParams.has('lastEventId')).toBe(false);
      // The re-open carried the last id received before the stream ended, in the query (and,
      // over fetch, as Last-Event-ID), and its channels.
      expect(second.url.searchParams.get('lastEventId')).toBe(beforeExpiry);
      expect(second.url.searchParams.getAll('channel')).toEqual([channel]);
      if (make === headerForm) {
        expect(first.header).toBe(null);
        expect(second.header).toBe(beforeExpiry);
        expect(all.some((r) => r.url.searchParams.has('token'))).toBe(false);
      }
    });
  }

  it('asks for a new token at once when the hub answers 401 (a token expired on its way)', async () => {
    const channel = `tok/${uniqueId('c')}`;
    const { options, requests } = headerForm();
    let calls = 0;
    const errors: unknown[] = [];
    const sub = connect(`${hub.url}/v1/sse`, {
      ...options,
      channel,
      retryMinMs: 10_000,
      getToken: () => {
        calls++;
        // The first is long expired.
        return jwt(SECRET, { exp: nowSecs() + (calls === 1 ? -3600 : 600), 'ssehub.subscribe': channel });
      },
      onError: (e) => errors.push(e),
    });
    subs.push(sub);
    await waitFor(() => sub.connected, 5_000, 'connected with the second token, without backoff');
    expect(calls).toBe(2);
    expect(requests().map((r) => r.status)).toEqual([401, 200]);
    expect(errors).toEqual([]);
  });

  it('reports a getToken rejection to onError and tries again (query form)', async () => {
    const channel = `tok/${uniqueId('c')}`;
    let calls = 0;
    const errors: unknown[] = [];
    const { Ctor } = countingEventSource();
    const sub = connect(`${hub.url}/v1/sse`, {
      channel,
      EventSource: Ctor,
      tokenParam: 'token',
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

/** An `EventSource` stand-in that records the URLs it is opened with and never opens. */
function urlRecordingEventSource(): { urls: string[]; Ctor: EventSourceConstructor } {
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
  return { urls, Ctor: Fake as unknown as EventSourceConstructor };
}

describe('connect with getToken (fake EventSource)', () => {
  it("puts the token in tokenParam, once per open, and uses the first subscriber's getToken", async () => {
    const { urls, Ctor } = urlRecordingEventSource();
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

describe('connect with getToken in a header (injected fetch)', () => {
  const ACCEPT = 'text/event-stream';
  const endpoint = () => `http://hub.test/${uniqueId('sse')}`;
  const fast = { retryMinMs: 20, retryMaxMs: 40 };
  /** The `401`s among what `onError` got. */
  const denials = (errors: unknown[]) => errors.filter((e) => (e as { status?: number }).status === 401);

  it('sends the token as Authorization and the last id as Last-Event-ID; no EventSource needed', async () => {
    expect((globalThis as { EventSource?: unknown }).EventSource).toBeUndefined();
    const { fetch, calls } = fakeFetch();
    let n = 0;
    const ids: string[] = [];
    const sub = connect(endpoint(), {
      ...fast,
      channel: 'c',
      fetch,
      getToken: () => `T${++n}`,
      onEvent: (_, meta) => ids.push(meta.lastEventId),
    });
    subs.push(sub);
    await waitFor(() => sub.connected, 2_000, 'open');
    expect(calls[0]!.headers).toEqual({ Accept: ACCEPT, Authorization: 'Bearer T1' });
    expect(new URL(calls[0]!.url).search).toBe('?channel=c');
    // On a multiplexed stream, channel `c`'s unnamed events are named `c`.
    calls[0]!.write('event: c\nid: ~e-1\ndata: {}\n\n');
    await waitFor(() => ids.length === 1, 2_000, 'the event');
    // The stream ends (the hub ends it at the token's expiry): a fresh token, the last id.
    calls[0]!.end();
    await waitFor(() => calls.length === 2 && sub.connected, 2_000, 'the re-open');
    expect(calls[1]!.headers).toEqual({ Accept: ACCEPT, Authorization: 'Bearer T2', 'Last-Event-ID': '~e-1' });
    expect(new URL(calls[1]!.url).searchParams.get('lastEventId')).toBe('~e-1');
    expect(new URL(calls[1]!.url).searchParams.has('token')).toBe(false);
  });

  it('asks for a new token at once on a 401, once per open', async () => {
    // Refused, accepted and ended, refused again, accepted.
    const answers = [401, 200, 401, 200];
    const { fetch, calls } = fakeFetch((i) => answers[i] ?? 200);
    let n = 0;
    const errors: unknown[] = [];
    const sub = connect(endpoint(), {
      retryMinMs: 10_000,
      fetch,
      getToken: () => `T${++n}`,
      onError: (e) => errors.push(e),
    });
    subs.push(sub);
    await waitFor(() => sub.connected, 2_000, 'open after the 401');
    expect(calls.map((c) => c.headers.Authorization)).toEqual(['Bearer T1', 'Bearer T2']);
    await sleep(HEALTHY);
    calls[1]!.end();
    await waitFor(() => calls.length === 4 && sub.connected, 2_000, 'the re-open, refused then accepted');
    expect(calls.map((c) => c.headers.Authorization)).toEqual(['Bearer T1', 'Bearer T2', 'Bearer T3', 'Bearer T4']);
    expect(calls[3]!.at - calls[2]!.at).toBeLessThan(200);
    expect(denials(errors)).toEqual([]);
  });

  it('backs off after a second 401 in a row, reporting it', async () => {
    const { fetch, calls } = fakeFetch(() => 401);
    let n = 0;
    const errors: unknown[] = [];
    const states: boolean[] = [];
    const sub = connect(endpoint(), {
      retryMinMs: 300,
      retryMaxMs: 300,
      fetch,
      getToken: () => `T${++n}`,
      onError: (e) => errors.push(e),
      onConnectionChange: (c) => states.push(c),
    });
    subs.push(sub);
    await waitFor(() => calls.length === 2, 2_000, 'the second try');
    await sleep(150);
    expect(calls).toHaveLength(2);
    expect(denials(errors)).toHaveLength(1);
    await waitFor(() => calls.length === 3, 2_000, 'the try after the backoff');
    expect(calls[2]!.at - calls[1]!.at).toBeGreaterThanOrEqual(280);
    expect(calls[2]!.headers.Authorization).toBe('Bearer T3');
    // Never open in between: this 401 backs off too.
    await sleep(150);
    expect(calls).toHaveLength(3);
    expect(denials(errors)).toHaveLength(2);
    expect(states).toEqual([]);
  });

  it("waits the server's retry before re-opening after a failure", async () => {
    const { fetch, calls } = fakeFetch();
    const sub = connect(endpoint(), { fetch, retryMaxMs: 400, getToken: () => 'T' });
    subs.push(sub);
    await waitFor(() => sub.connected, 2_000, 'open');
    calls[0]!.write('retry: 300\n\n');
    await sleep(20);
    calls[0]!.end();
    await waitFor(() => calls.length === 2, 2_000, 'the re-open');
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(300);
  });

  it('uses the EventSource with tokenParam: the token in the query', async () => {
    const { fetch, calls } = fakeFetch();
    const { urls, Ctor } = urlRecordingEventSource();
    subs.push(
      connect('/api/sse', {
        EventSource: Ctor,
        tokenParam: 'token',
        fetch,
        getToken: () => 'T',
      }),
    );
    await waitFor(() => urls.length === 1, 2_000, 'the open');
    expect(urls).toEqual(['/api/sse?token=T']);
    expect(calls).toEqual([]);
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
      // The token in a header, over fetch: the server's `retry` is the backoff's minimum.
      subs.push(connect(healthy.url, { getToken }));
      subs.push(connect(instant.url, { getToken }));
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
