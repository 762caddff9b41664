// The fetch source (src/fetchsource.ts), with an injected `fetch` whose response body the test
// writes chunk by chunk: the SSE parser (lines split anywhere, a UTF-8 character split between
// chunks, CR/LF/CRLF, fields, comments, events without data), the request it makes, and how
// it fails, ends and closes.
import { describe, expect, it } from 'vitest';

import { FetchEventSource } from '../src/fetchsource.js';
import { fakeFetch, waitFor } from './helpers.js';

const enc = new TextEncoder();

type Got = { type: string; data: string; lastEventId: string };

/** A source over a fake fetch, recording its events of `types`, opens and errors. */
async function open(types: string[] = ['message'], init: { lastEventId?: string; status?: number; type?: string } = {}) {
  const { fetch, calls } = fakeFetch(() => [init.status ?? 200, init.type ?? 'text/event-stream']);
  const es = new FetchEventSource('http://hub.test/sse', {
    fetch,
    ...(init.lastEventId === undefined ? {} : { lastEventId: init.lastEventId }),
  });
  const got: Got[] = [];
  const errors: (Event & { status?: number })[] = [];
  let opened = 0;
  es.onopen = () => opened++;
  es.onerror = (e) => errors.push(e as Event & { status?: number });
  for (const t of types) {
    es.addEventListener(t, (e) => {
      const m = e as MessageEvent;
      got.push({ type: m.type, data: m.data as string, lastEventId: m.lastEventId });
    });
  }
  await waitFor(() => calls.length === 1, 2_000, 'the request');
  const call = calls[0]!;
  /** Writes the chunks, one at a time, then waits for the reader to have read them. */
  const send = async (...chunks: (string | Uint8Array)[]) => {
    for (const c of chunks) call.write(c);
    await new Promise((r) => setTimeout(r, 10));
  };
  return { es, call, got, errors, send, opened: () => opened };
}

describe('the fetch source parses the stream as EventSource does', () => {
  it('joins lines split anywhere between chunks', async () => {
    const { got, send } = await open();
    await send('da', 'ta: hel', 'lo\nda', 'ta: world', '\n', '\n');
    expect(got).toEqual([{ type: 'message', data: 'hello\nworld', lastEventId: '' }]);
  });

  it('decodes a UTF-8 character split between chunks, and drops a leading BOM', async () => {
    const { got, send } = await open();
    const bytes = enc.encode('\uFEFFdata: é€😀\n\ndata: \uFEFFx\n\n');
    // One byte per chunk: the BOM and every multi-byte character are split.
    await send(...Array.from(bytes, (b) => Uint8Array.of(b)));
    expect(got.map((e) => e.data)).toEqual(['é€😀', '\uFEFFx']);
  });

  it('ends lines with LF, CR or CRLF, a CRLF split between chunks too', async () => {
    const { got, send } = await open();
    await send('data: a\r', '\ndata: b\rdata: c\n\r', '\n');
    await send('data: d\r\r');
    await send('data: e\n\n');
    expect(got.map((e) => e.data)).toEqual(['a\nb\nc', 'd', 'e']);
  });

  it('reads event, id, retry, comments and field values as the spec says', async () => {
    const { es, got, send } = await open(['message', 'ping']);
    await send(': a comment\nevent: ping\nid: 7\nretry: 1500\ndata:no-space\ndata:  two spaces\ndata\nfoo: bar\n\n');
    expect(got).toEqual([{ type: 'ping', data: 'no-space\n two spaces\n', lastEventId: '7' }]);
    expect(es.retry).toBe(1500);
    expect(es.lastEventId).toBe('7');
    // A retry that is not only digits, an id with a NUL: ignored. The id stays for later events.
    await send('retry: 15x0\nretry: -1\nretry:\nid: a\0b\ndata: 1\n\n');
    expect(es.retry).toBe(1500);
    expect(got[1]).toEqual({ type: 'message', data: '1', lastEventId: '7' });
    // `id` with no value clears it; the event type does not carry over.
    await send('id\ndata: 2\n\n');
    expect(got[2]).toEqual({ type: 'message', data: '2', lastEventId: '' });
  });

  it('does not dispatch an event without data, but keeps its id', async () => {
    const { es, got, send } = await open(['message', 'x']);
    await send('event: x\n\nid: 9\n\n\n\n');
    expect(got).toEqual([]);
    expect(es.lastEventId).toBe('9');
    // An empty data line is data: dispatched, empty.
    await send('data\n\n');
    expect(got).toEqual([{ type: 'message', data: '', lastEventId: '9' }]);
  });

  it('resumes from lastEventId: sent as Last-Event-ID, and the events carry it until a new id', async () => {
    const { call, got, send } = await open(['message'], { lastEventId: '~5' });
    expect(call.headers['Last-Event-ID']).toBe('~5');
    await send('data: 1\n\n');
    expect(got).toEqual([{ type: 'message', data: '1', lastEventId: '~5' }]);
  });
});

describe('the fetch source connects, ends and fails as one EventSource connection', () => {
  it('sends Accept, the headers given and no-store; cookies cross-origin only with withCredentials', async () => {
    const { fetch, calls } = fakeFetch();
    const a = new FetchEventSource('http://hub.test/a', { fetch, headers: { Authorization: 'Bearer T' } });
    const b = new FetchEventSource('http://hub.test/b', { fetch, withCredentials: true });
    await waitFor(() => calls.length === 2, 2_000, 'the requests');
    expect(calls[0]!.url).toBe('http://hub.test/a');
    expect(calls[0]!.headers).toEqual({ Accept: 'text/event-stream', Authorization: 'Bearer T' });
    expect(calls[0]!.init.cache).toBe('no-store');
    expect(calls[0]!.init.credentials).toBeUndefined();
    expect(calls[1]!.init.credentials).toBe('include');
    expect(a.withCredentials).toBe(false);
    expect(b.withCredentials).toBe(true);
    a.close();
    b.close();
  });

  it('opens, then fails (closed, status 200) when the stream ends, dropping an unfinished event', async () => {
    const { es, call, got, errors, send, opened } = await open();
    await waitFor(() => opened() === 1, 2_000, 'open');
    expect(es.readyState).toBe(1);
    await send('data: 1\n\ndata: unfinished\n');
    call.end();
    await waitFor(() => errors.length === 1, 2_000, 'the error');
    expect(errors[0]!.type).toBe('error');
    expect(errors[0]!.status).toBe(200);
    expect(es.readyState).toBe(2);
    expect(got.map((e) => e.data)).toEqual(['1']);
  });

  it('fails without opening on a status other than 200, telling the status', async () => {
    const { es, errors, opened } = await open(['message'], { status: 401, type: 'application/json' });
    await waitFor(() => errors.length === 1, 2_000, 'the error');
    expect(opened()).toBe(0);
    expect(es.status).toBe(401);
    expect(errors[0]!.status).toBe(401);
    expect(es.readyState).toBe(2);
  });

  it('fails without opening on a 200 that is not text/event-stream', async () => {
    const { es, errors, opened } = await open(['message'], { type: 'text/html' });
    await waitFor(() => errors.length === 1, 2_000, 'the error');
    expect(opened()).toBe(0);
    expect(es.status).toBe(200);
    expect(es.readyState).toBe(2);
    // With parameters, in any case: a stream.
    const ok = await open(['message'], { type: 'Text/Event-Stream; charset=utf-8' });
    await waitFor(() => ok.opened() === 1, 2_000, 'open');
    ok.es.close();
  });

  it('fails when the request does', async () => {
    const es = new FetchEventSource('http://hub.test/x', {
      fetch: () => Promise.reject(new TypeError('fetch failed')),
    });
    const errors: { status?: number; error?: unknown }[] = [];
    es.onerror = (e) => errors.push(e as Event & { status?: number; error?: unknown });
    await waitFor(() => errors.length === 1, 2_000, 'the error');
    expect(errors[0]!.status).toBe(0);
    expect(errors[0]!.error).toBeInstanceOf(TypeError);
    expect(es.readyState).toBe(2);
  });

  it('close() aborts the request: no error, no event after it', async () => {
    const { es, call, got, errors, send, opened } = await open();
    await waitFor(() => opened() === 1, 2_000, 'open');
    es.close();
    expect(call.init.signal?.aborted).toBe(true);
    expect(es.readyState).toBe(2);
    await new Promise((r) => setTimeout(r, 20));
    expect(errors).toEqual([]);
    expect(got).toEqual([]);
    await expect(send('data: late\n\n')).rejects.toThrow();
  });
});
