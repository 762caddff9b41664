// @vitest-environment jsdom
// The React hooks against the real comments example (npm `eventsource` as the EventSource).
import { QueryClient, QueryClientProvider, useQuery, type QueryKey } from '@tanstack/react-query';
import { act, cleanup, render, screen, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';

import type { ResetInfo } from '../src/core.js';
import type { CommentEvent } from '../demo/generated/CommentEvent.js';
import { useSSEConnection, useSSEQueryInvalidation } from '../src/react.js';
import { addComment, base, ES, uniqueId } from './helpers.js';

afterEach(() => cleanup());

const until = { timeout: 10_000 };

function withClient(children: ReactNode, client = new QueryClient()) {
  return <QueryClientProvider client={client}>{children}</QueryClientProvider>;
}

async function fetchCount(id: string): Promise<number> {
  const res = await fetch(`${base()}/api/comments/${encodeURIComponent(id)}`);
  const body = (await res.json()) as { commentCount: number };
  return body.commentCount;
}

/** The count as the page fetches it, and how many times it fetched. */
function Count({ id, queryKey, fetches }: { id: string; queryKey: QueryKey; fetches: { n: number } }) {
  const { data } = useQuery({
    queryKey,
    queryFn: () => {
      fetches.n += 1;
      return fetchCount(id);
    },
  });
  return <p data-testid={`count-${JSON.stringify(queryKey)}`}>{data ?? '–'}</p>;
}

describe('useSSEConnection (option B)', () => {
  it('reports the connection and hands every event to onEvent', async () => {
    const id = uniqueId('hook-b');
    const events: CommentEvent[] = [];
    const changes: boolean[] = [];
    function View() {
      const { connected } = useSSEConnection<CommentEvent>({
        endpoint: `${base()}/api/sse/comments/${id}`,
        EventSource: ES,
        onEvent: (event) => events.push(event),
        onConnectionChange: (c) => changes.push(c),
      });
      return <div>Status: {connected ? '🟢' : '🔴'}</div>;
    }
    render(<View />);
    expect(screen.getByText('Status: 🔴')).toBeTruthy();
    await waitFor(() => expect(screen.getByText('Status: 🟢')).toBeTruthy(), until);
    await waitFor(() => expect(events).toHaveLength(1), until);
    await addComment(id);
    await waitFor(() => expect(events.map((e) => e.commentCount)).toEqual([0, 1]), until);
    expect(changes).toEqual([true]);
  });

  it('does not connect while disabled', async () => {
    const id = uniqueId('hook-off');
    const onEvent = vi.fn();
    function View({ enabled }: { enabled: boolean }) {
      const { connected } = useSSEConnection({
        endpoint: `${base()}/api/sse/comments/${id}`,
        EventSource: ES,
        onEvent,
        enabled,
      });
      return <div>{connected ? 'on' : 'off'}</div>;
    }
    const { rerender } = render(<View enabled={false} />);
    await new Promise((r) => setTimeout(r, 300));
    expect(onEvent).not.toHaveBeenCalled();
    expect(screen.getByText('off')).toBeTruthy();
    rerender(<View enabled />);
    await waitFor(() => expect(screen.getByText('on')).toBeTruthy(), until);
    await waitFor(() => expect(onEvent).toHaveBeenCalledTimes(1), until);
    rerender(<View enabled={false} />);
    await waitFor(() => expect(screen.getByText('off')).toBeTruthy(), until);
  });
});

describe('useSSEQueryInvalidation', () => {
  it('option A: refetches the listed queries when an event arrives', async () => {
    const id = uniqueId('hook-a');
    const countsKey = ['discussion', 'counts', id];
    const otherKey = ['infiniteComments', id];
    const fetches = { n: 0 };
    const other = { n: 0 };
    function View() {
      const { connected } = useSSEQueryInvalidation({
        endpoint: `${base()}/api/sse/comments/${id}`,
        EventSource: ES,
        queryKeys: [otherKey, countsKey],
      });
      return (
        <>
          <span>{connected ? 'live' : 'offline'}</span>
          <Count id={id} queryKey={countsKey} fetches={fetches} />
          <Count id={id} queryKey={otherKey} fetches={other} />
        </>
      );
    }
    render(withClient(<View />));
    const count = () => screen.getByTestId(`count-${JSON.stringify(countsKey)}`).textContent;
    await waitFor(() => expect(count()).toBe('0'), until);
    await waitFor(() => expect(screen.getByText('live')).toBeTruthy(), until);
    const before = other.n;
    await act(async () => {
      await addComment(id);
    });
    await waitFor(() => expect(count()).toBe('1'), until);
    await waitFor(() => expect(other.n).toBeGreaterThan(before), until);
  });

  it('option C: invalidates the keys computed from each event', async () => {
    const id = uniqueId('hook-c');
    const client = new QueryClient();
    const spy = vi.spyOn(client, 'invalidateQueries');
    const fetches = { n: 0 };
    function View() {
      useSSEQueryInvalidation<CommentEvent>({
        endpoint: `${base()}/api/sse/comments/${id}`,
        EventSource: ES,
        queryKeys: (event) => [
          ['infiniteComments', event.discussionId],
          ['discussion', 'counts', event.discussionId],
        ],
      });
      return <Count id={id} queryKey={['discussion', 'counts', id]} fetches={fetches} />;
    }
    render(withClient(<View />, client));
    const count = () => screen.getByTestId(`count-${JSON.stringify(['discussion', 'counts', id])}`).textContent;
    await waitFor(() => expect(count()).toBe('0'), until);
    await act(async () => {
      await addComment(id);
      await addComment(id);
    });
    await waitFor(() => expect(count()).toBe('2'), until);
    const keys = spy.mock.calls.map((c) => JSON.stringify(c[0]?.queryKey));
    expect(keys).toContain(JSON.stringify(['infiniteComments', id]));
    expect(keys).toContain(JSON.stringify(['discussion', 'counts', id]));
  });

  it('on reset, invalidates every key it registered (static and from events)', async () => {
    const id = uniqueId('hook-reset');
    const client = new QueryClient();
    const spy = vi.spyOn(client, 'invalidateQueries');
    const resets: ResetInfo[] = [];
    let invalidatedAtReset: string[] = [];
    function View() {
      useSSEQueryInvalidation<CommentEvent>({
        // An id this server never issued: the stream starts with `reset`, then the initial event
        // (the snapshot rule: the fresh snapshot comes after the reset, never before it).
        endpoint: `${base()}/api/sse/comments/${id}?lastEventId=0-0`,
        EventSource: ES,
        queryKeys: (event) => [['discussion', 'counts', event.discussionId]],
        onReset: (r) => {
          resets.push(r);
          invalidatedAtReset = spy.mock.calls.map((c) => JSON.stringify(c[0]?.queryKey));
        },
      });
      return null;
    }
    render(withClient(<View />, client));
    await waitFor(() => expect(resets).toHaveLength(1), until);
    expect(resets[0]?.reason).toBe('out-of-window');
    const key = JSON.stringify(['discussion', 'counts', id]);
    // At the reset no event has taught the hook this key yet…
    expect(invalidatedAtReset.filter((k) => k === key)).toHaveLength(0);
    // …then the initial event that follows it invalidates the key it names.
    await waitFor(
      () =>
        expect(
          spy.mock.calls.map((c) => JSON.stringify(c[0]?.queryKey)).filter((k) => k === key),
        ).toHaveLength(1),
      until,
    );
  });

  it('on reset with static keys, refetches all of them', async () => {
    const id = uniqueId('hook-reset-a');
    const a = { n: 0 };
    const b = { n: 0 };
    const resets: ResetInfo[] = [];
    function View({ enabled }: { enabled: boolean }) {
      useSSEQueryInvalidation({
        endpoint: `${base()}/api/sse/comments/${id}?lastEventId=0-0`,
        EventSource: ES,
        queryKeys: [['a', id], ['b', id]],
        onReset: (r) => resets.push(r),
        enabled,
      });
      return (
        <>
          <Count id={id} queryKey={['a', id]} fetches={a} />
          <Count id={id} queryKey={['b', id]} fetches={b} />
        </>
      );
    }
    const client = new QueryClient();
    const { rerender } = render(withClient(<View enabled={false} />, client));
    // Both queries have their data before the stream opens.
    await waitFor(() => expect(screen.getAllByText('0')).toHaveLength(2), until);
    expect([a.n, b.n]).toEqual([1, 1]);
    rerender(withClient(<View enabled />, client));
    await waitFor(() => expect(resets).toHaveLength(1), until);
    await waitFor(() => expect(a.n).toBeGreaterThanOrEqual(2), until);
    await waitFor(() => expect(b.n).toBeGreaterThanOrEqual(2), until);
  });

  it('hooks on the same endpoint share one connection', async () => {
    const id = uniqueId('hook-share');
    const { countingEventSource } = await import('./helpers.js');
    const { Ctor, created } = countingEventSource();
    const seen = { a: 0, b: 0 };
    function View() {
      const endpoint = `${base()}/api/sse/comments/${id}`;
      useSSEConnection({ endpoint, EventSource: Ctor, onEvent: () => (seen.a += 1) });
      useSSEQueryInvalidation({ endpoint, EventSource: Ctor, queryKeys: [['x', id]] });
      useSSEConnection({ endpoint, EventSource: Ctor, onEvent: () => (seen.b += 1) });
      return null;
    }
    render(withClient(<View />));
    await waitFor(() => expect(seen.a + seen.b).toBe(2), until);
    expect(created()).toHaveLength(1);
    cleanup();
    expect(created()[0]?.readyState).toBe(2);
  });
});
