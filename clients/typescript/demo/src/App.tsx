// The seed's Quick Start step 4 (options A, B and C) against ssehub, with @ssehub/client.
import { useQuery } from '@tanstack/react-query';
import { useState } from 'react';

import type { ResetInfo } from '@ssehub/client';
import { useSSEConnection, useSSEQueryInvalidation } from '@ssehub/client/react';

// The comments example's events, generated from their Rust definitions.
import type { CommentEvent } from '../generated/CommentEvent';
import type { PresenceEvent } from '../generated/PresenceEvent';
import type { VoteEvent } from '../generated/VoteEvent';

/**
 * The multiplexing endpoint: every hook below names its channel of it, and they all share ONE
 * EventSource (`/api/sse?channel=comments/…&channel=votes/…&channel=presence/…`).
 */
const MUX = '/api/sse';

type Props = { discussionId: string };

/** How many times each query ran, for the page (and the browser test) to show. */
const fetches: Record<string, number> = {};

async function getCounts(discussionId: string, tag: string): Promise<{ commentCount: number }> {
  fetches[tag] = (fetches[tag] ?? 0) + 1;
  const res = await fetch(`/api/comments/${encodeURIComponent(discussionId)}`);
  if (!res.ok) throw new Error(`GET /api/comments: ${res.status}`);
  return (await res.json()) as { commentCount: number };
}

function useCount(queryKey: readonly unknown[], discussionId: string, tag: string) {
  return useQuery({ queryKey, queryFn: () => getCounts(discussionId, tag) });
}

/** Option A: with TanStack Query integration (static keys). */
function OptionA({ discussionId }: Props) {
  const [resets, setResets] = useState<string[]>([]);
  const { connected } = useSSEQueryInvalidation({
    endpoint: MUX,
    channel: `comments/${discussionId}`,
    queryKeys: [
      ['infiniteComments', discussionId],
      ['discussion', 'counts', discussionId],
    ],
    // Beyond the seed: every registered key was just invalidated.
    onReset: (r: ResetInfo) => setResets((rs) => [...rs, r.reason]),
  });
  const counts = useCount(['discussion', 'counts', discussionId], discussionId, 'a-counts');
  const comments = useCount(['infiniteComments', discussionId], discussionId, 'a-comments');
  return (
    <section id="option-a">
      <h2>Option A: useSSEQueryInvalidation</h2>
      <p>
        Status: <span className="status">{connected ? 'connected' : 'disconnected'}</span>
      </p>
      <p>
        Comments: <span className="count">{counts.data?.commentCount ?? '–'}</span> (list query
        sees <span className="list-count">{comments.data?.commentCount ?? '–'}</span>)
      </p>
      <p>
        Resets: <span className="resets">{resets.join(',')}</span>
      </p>
    </section>
  );
}

/** Option B: with a custom handler. */
function OptionB({ discussionId }: Props) {
  const [last, setLast] = useState<CommentEvent | null>(null);
  const [log, setLog] = useState<string[]>([]);
  const { connected } = useSSEConnection<CommentEvent>({
    endpoint: MUX,
    channel: `comments/${discussionId}`,
    onEvent: (event, meta) => {
      console.log('New comment!', event);
      setLast(event);
      setLog((l) => [`${meta.lastEventId || '(initial)'}: ${event.commentCount}`, ...l].slice(0, 10));
      window.__ssehubEvents?.push({ id: meta.lastEventId, n: event.commentCount });
    },
    onConnectionChange: (c) => {
      console.log('SSE', c ? 'connected' : 'disconnected');
    },
  });
  return (
    <section id="option-b">
      <h2>Option B: useSSEConnection</h2>
      <div>Status: {connected ? '🟢' : '🔴'} <span className="status">{connected ? 'connected' : 'disconnected'}</span></div>
      <p>
        Last event: <span className="count">{last ? last.commentCount : '–'}</span>
      </p>
      <pre className="log">{log.join('\n')}</pre>
    </section>
  );
}

/** Option C: dynamic query keys from each event. */
function OptionC({ discussionId }: Props) {
  useSSEQueryInvalidation<CommentEvent>({
    endpoint: MUX,
    channel: `comments/${discussionId}`,
    queryKeys: (event) => [
      ['infiniteComments', event.discussionId],
      ['discussion', 'counts', event.discussionId],
      ['option-c', event.discussionId],
    ],
  });
  const counts = useCount(['option-c', discussionId], discussionId, 'c');
  return (
    <section id="option-c">
      <h2>Option C: dynamic query keys</h2>
      <p>
        Comments: <span className="count">{counts.data?.commentCount ?? '–'}</span>
      </p>
    </section>
  );
}

/** Votes: their own channel of the same connection. */
function Votes({ discussionId }: Props) {
  const [votes, setVotes] = useState<{ up: number; down: number } | null>(null);
  const refetch = () => {
    void fetch(`/api/votes/${encodeURIComponent(discussionId)}`)
      .then((r) => r.json() as Promise<{ up: number; down: number }>)
      .then(setVotes);
  };
  useSSEConnection<VoteEvent>({
    endpoint: MUX,
    channel: `votes/${discussionId}`,
    onEvent: (event) => setVotes({ up: event.up, down: event.down }),
    onReset: refetch,
  });
  const vote = (v: 'up' | 'down') => {
    void fetch(`/api/votes/${encodeURIComponent(discussionId)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vote: v }),
    });
  };
  return (
    <section id="votes">
      <h2>Votes</h2>
      <button className="up" onClick={() => vote('up')}>Up</button>{' '}
      <span className="up-count">{votes ? votes.up : '–'}</span>{' '}
      <button className="down" onClick={() => vote('down')}>Down</button>{' '}
      <span className="down-count">{votes ? votes.down : '–'}</span>
    </section>
  );
}

/** Viewers: the cluster-wide number of streams on this discussion's comments, live. */
function Viewers({ discussionId }: Props) {
  const [sessions, setSessions] = useState<number | null>(null);
  useSSEConnection<PresenceEvent>({
    endpoint: MUX,
    channel: `presence/${discussionId}`,
    onEvent: (event) => setSessions(event.sessions),
  });
  return (
    <p id="viewers">
      <span className="sessions">{sessions ?? '–'}</span> viewing
    </p>
  );
}

export function App({ discussionId }: Props) {
  const [, rerender] = useState(0);
  return (
    <main>
      <h1>Discussion {discussionId}</h1>
      <p>
        React + TanStack Query + <code>@ssehub/client</code>: five hooks on three channels, one
        shared EventSource.
      </p>
      <button
        id="add"
        onClick={() => {
          void fetch(`/api/comments/${encodeURIComponent(discussionId)}`, { method: 'POST' });
        }}
      >
        Add a comment
      </button>
      <OptionA discussionId={discussionId} />
      <OptionB discussionId={discussionId} />
      <OptionC discussionId={discussionId} />
      <Votes discussionId={discussionId} />
      <Viewers discussionId={discussionId} />
      <p>
        <button id="show-fetches" onClick={() => rerender((n) => n + 1)}>
          Refresh fetch counts
        </button>{' '}
        <span id="fetches">{JSON.stringify(fetches)}</span>
      </p>
    </main>
  );
}

declare global {
  interface Window {
    __ssehubFetches?: Record<string, number>;
  }
}
window.__ssehubFetches = fetches;
