// The framework-free core against the real comments example, with the npm `eventsource`
// package as the EventSource (a real SSE client).
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterEach, describe, expect, it } from 'vitest';

import { connect, openConnectionCount, type ResetInfo, type Subscription } from '../src/core.js';
import type { CommentEvent } from '../demo/generated/CommentEvent.js';
import { addComment, base, countingEventSource, ES, uniqueId, waitFor } from './helpers.js';

const subs: Subscription[] = [];
afterEach(() => {
  for (const s of subs.splice(0)) s.close();
});

describe('connect', () => {
  it('delivers the typed initial event, then published events with ids', async () => {
    const id = uniqueId('core');
    const events: { event: CommentEvent; lastEventId: string }[] = [];
    const states: boolean[] = [];
    subs.push(
      connect<CommentEvent>(`${base()}/api/sse/comments/${id}`, {
        EventSource: ES,
        onEvent: (event, meta) => events.push({ event, lastEventId: meta.lastEventId }),
        onConnectionChange: (c) => states.push(c),
      }),
    );
    await waitFor(() => events.length === 1, 10_000, 'the initial event');
    expect(events[0]?.event).toMatchObject({ type: 'comment-added', discussionId: id, commentCount: 0 });
    expect(events[0]?.lastEventId).toBe('');
    expect(states).toEqual([true]);
    expect(subs[0]?.connected).toBe(true);

    await addComment(id);
    await addComment(id);
    await waitFor(() => events.length === 3, 10_000, 'two published events');
    expect(events.map((e) => e.event.commentCount)).toEqual([0, 1, 2]);
    expect(events[1]?.lastEventId).not.toBe('');
    expect(events[2]?.lastEventId).not.toBe(events[1]?.lastEventId);
  });

  it('shares one EventSource per endpoint and closes it with the last subscriber', async () => {
    const id = uniqueId('shared');
    const { Ctor, created } = countingEventSource();
    const endpoint = `${base()}/api/sse/comments/${id}`;
    const a: number[] = [];
    const b: number[] = [];
    let bConnected = false;
    const subA = connect<CommentEvent>(endpoint, { EventSource: Ctor, onEvent: (e) => a.push(e.commentCount) });
    await waitFor(() => a.length === 1, 10_000, 'A initial');
    const subB = connect<CommentEvent>(endpoint, {
      EventSource: Ctor,
      onEvent: (e) => b.push(e.commentCount),
      onConnectionChange: (c) => {
        bConnected = c;
      },
    });
    // A late subscriber learns the connection is already open.
    await waitFor(() => bConnected, 2_000, 'B told it is connected');
    expect(created()).toHaveLength(1);
    expect(openConnectionCount(Ctor)).toBe(1);

    await addComment(id);
    await waitFor(() => a.length === 2 && b.length === 1, 10_000, 'both got the comment');
    expect(a).toEqual([0, 1]);
    expect(b).toEqual([1]);

    subA.close();
    await addComment(id);
    await waitFor(() => b.length === 2, 10_000, 'B still receives');
    expect(a).toEqual([0, 1]);
    expect(created()[0]?.readyState).not.toBe(2);

    subB.close();
    expect(created()[0]?.readyState).toBe(2); // CLOSED
    expect(openConnectionCount(Ctor)).toBe(0);

    // A new subscriber opens a fresh connection.
    subs.push(connect(endpoint, { EventSource: Ctor, onEvent: () => {} }));
    expect(created()).toHaveLength(2);
  });

  it('calls onReset when the server cannot replay what the client missed', async () => {
    const id = uniqueId('reset');
    const resets: ResetInfo[] = [];
    const events: CommentEvent[] = [];
    subs.push(
      connect<CommentEvent>(`${base()}/api/sse/comments/${id}?lastEventId=not-an-id-of-this-server`, {
        EventSource: ES,
        onEvent: (e) => events.push(e),
        onReset: (r) => resets.push(r),
      }),
    );
    await waitFor(() => resets.length === 1, 10_000, 'the reset');
    expect(resets[0]?.reason).toMatch(/^(out-of-window|epoch-changed|malformed-id)$/);
    // The reset is not passed to onEvent as if it were a CommentEvent.
    expect(events.every((e) => e.type === 'comment-added')).toBe(true);
  });
});

// A tiny SSE server for what the comments example never sends: named events, bad JSON, and a
// connection dropped before any event with an id.
function tinyServer(handle: (res: ServerResponse, n: number, lastEventId: string | undefined) => void) {
  let n = 0;
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    // The id to resume from: the header (the EventSource's own retry) or the query parameter
    // (the client's re-open, after its jittered backoff).
    const header = req.headers['last-event-id'];
    const query = new URL(req.url ?? '/', 'http://x').searchParams.get('lastEventId') ?? undefined;
    handle(res, n++, (Array.isArray(header) ? header[0] : header) ?? query);
  });
  return new Promise<{ url: string; close: () => void }>((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}/`,
        close: () => {
          server.closeAllConnections();
          server.close();
        },
      });
    });
  });
}

describe('connect (protocol details)', () => {
  it('delivers listed named events, and reports data that is not JSON', async () => {
    const srv = await tinyServer((res) => {
      res.write('retry: 60000\n\n');
      res.write('event: vote-changed\nid: 1\ndata: {"type":"vote-changed","yes":2}\n\n');
      res.write('event: ignored\nid: 2\ndata: {"type":"ignored"}\n\n');
      res.write('id: 3\ndata: not json\n\n');
      res.write('id: 4\ndata: {"type":"comment-added"}\n\n');
    });
    try {
      const got: { type: string; meta: string }[] = [];
      const errors: unknown[] = [];
      subs.push(
        connect<{ type: string }>(srv.url, {
          EventSource: ES,
          eventTypes: ['vote-changed'],
          onEvent: (e, meta) => got.push({ type: e.type, meta: meta.type }),
          onError: (e) => errors.push(e),
        }),
      );
      await waitFor(() => got.length === 2, 5_000, 'two events');
      expect(got).toEqual([
        { type: 'vote-changed', meta: 'vote-changed' },
        { type: 'comment-added', meta: 'message' },
      ]);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(SyntaxError);
    } finally {
      srv.close();
    }
  });

  it('treats a reconnect without an id to resume from as a reset', async () => {
    const srv = await tinyServer((res, n) => {
      res.write('retry: 50\n\n');
      res.write(`data: {"n":${n}}\n\n`); // an initial event, without id
      if (n === 0) setTimeout(() => res.destroy(), 50);
    });
    try {
      const resets: ResetInfo[] = [];
      const states: boolean[] = [];
      const events: { n: number }[] = [];
      subs.push(
        connect<{ n: number }>(srv.url, {
          EventSource: ES,
          onEvent: (e) => events.push(e),
          onReset: (r) => resets.push(r),
          onConnectionChange: (c) => states.push(c),
        }),
      );
      await waitFor(() => resets.length === 1 && events.length === 2, 5_000, 'the reconnect');
      expect(resets[0]?.reason).toBe('not-resumed');
      expect(states).toEqual([true, false, true]);
    } finally {
      srv.close();
    }
  });

  it('does not report a reset when the reconnect resumes from an id', async () => {
    const heads: (string | undefined)[] = [];
    const srv = await tinyServer((res, n, last) => {
      heads.push(last);
      res.write('retry: 50\n\n');
      res.write(`id: ${n + 1}\ndata: {"n":${n}}\n\n`);
      if (n === 0) setTimeout(() => res.destroy(), 50);
    });
    try {
      const resets: ResetInfo[] = [];
      const events: { n: number }[] = [];
      subs.push(
        connect<{ n: number }>(srv.url, {
          EventSource: ES,
          onEvent: (e) => events.push(e),
          onReset: (r) => resets.push(r),
        }),
      );
      await waitFor(() => events.length === 2, 5_000, 'the reconnect');
      expect(heads).toEqual([undefined, '1']);
      expect(resets).toEqual([]);
    } finally {
      srv.close();
    }
  });
});

describe('channels of a multiplexing endpoint', () => {
  it('share one EventSource, route events per channel, and re-open without losing anything', async () => {
    const id = uniqueId('mux');
    const { Ctor, created } = countingEventSource();
    const endpoint = `${base()}/api/sse`;
    const comments: number[] = [];
    const votes: { up: number; down: number }[] = [];
    const resets: ResetInfo[] = [];
    const subC = connect<CommentEvent>(endpoint, {
      EventSource: Ctor,
      channel: `comments/${id}`,
      onEvent: (e, meta) => {
        expect(meta.channel).toBe(`comments/${id}`);
        comments.push(e.commentCount);
      },
      onReset: (r) => resets.push(r),
    });
    const subV = connect<{ up: number; down: number }>(endpoint, {
      EventSource: Ctor,
      channel: `votes/${id}`,
      onEvent: (e) => votes.push({ up: e.up, down: e.down }),
      onReset: (r) => resets.push(r),
    });
    subs.push(subC, subV);
    // Both channels' initial events over ONE connection, opened once for both hooks.
    await waitFor(() => comments.length === 1 && votes.length === 1, 10_000, 'initial events');
    expect(created()).toHaveLength(1);
    expect(created()[0]?.url).toContain(`channel=comments%2F${id}`);
    expect(created()[0]?.url).toContain(`channel=votes%2F${id}`);

    await addComment(id);
    await fetch(`${base()}/api/votes/${id}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vote: 'up' }),
    });
    await waitFor(() => comments.length === 2 && votes.length === 2, 10_000, 'routed events');
    expect(comments).toEqual([0, 1]);
    expect(votes[1]).toEqual({ up: 1, down: 0 });

    // Removing a channel re-opens the connection with the current position of the others:
    // the comment added meanwhile arrives once, and no initial event is repeated.
    subV.close();
    await addComment(id);
    await waitFor(() => created().length === 2, 10_000, 'a re-open');
    await waitFor(() => comments.length === 3, 10_000, 'the comment after the re-open');
    expect(created()[1]?.url).not.toContain('votes');
    expect(created()[1]?.url).toContain('lastEventId=');
    await new Promise((r) => setTimeout(r, 300));
    expect(comments).toEqual([0, 1, 2]);
    expect(resets).toEqual([]);
  });
});
