/**
 * `@ssehub/client/react`: React hooks over the shared connections of {@link connect}:
 * `useSSEConnection` (a callback per event) and `useSSEQueryInvalidation` (TanStack Query
 * invalidation). Needs the optional peer dependencies `react` and `@tanstack/react-query`;
 * `connect` and the types are exported by the package root, `@ssehub/client`.
 */

import { hashKey, useQueryClient, type QueryKey } from '@tanstack/react-query';
import { useEffect, useRef, useState } from 'react';

import {
  connect,
  type ConnectOptions,
  type EventMeta,
  type EventSourceConstructor,
  type ResetInfo,
} from './core.js';

/** Options of {@link useSSEConnection}. */
export interface UseSSEConnectionOptions<TEvent> {
  /** The SSE endpoint URL. */
  endpoint: string;
  /** Called with each event. */
  onEvent: (event: TEvent, meta: EventMeta) => void;
  /** Called when the connection opens or drops. */
  onConnectionChange?: (connected: boolean) => void;
  /** Called on connection errors and unparseable events. */
  onError?: (error: unknown) => void;
  /** Called when the server could not replay what was missed (or a reconnect did not resume). */
  onReset?: (reset: ResetInfo) => void;
  /** Whether to connect (default: true). */
  enabled?: boolean;
  /** Named SSE events to receive besides `message`. */
  eventTypes?: readonly string[];
  /**
   * A channel of the multiplexing endpoint `endpoint` (e.g. `comments/123` of `/api/sse`):
   * every hook on a channel of one endpoint shares ONE connection.
   */
  channel?: string;
  /** The `EventSource` constructor (default: the global one). */
  EventSource?: EventSourceConstructor;
  /**
   * The stream's token (see `ConnectOptions.getToken`): fetched before every open and sent as
   * `Authorization: Bearer …` over `fetch` streaming (or in the query, with `tokenParam`); the
   * latest function given is called, so it may change on every render.
   */
  getToken?: () => string | Promise<string>;
  /** Put the token in this query parameter instead (see `ConnectOptions.tokenParam`). */
  tokenParam?: string;
  /** Share one stream with the page's other tabs (default `true`; see `ConnectOptions.share`). */
  share?: boolean;
  /** The reconnect policy and page-life options of `connect` (read when the stream is created). */
  retryMinMs?: number;
  retryMaxMs?: number;
  releaseHiddenAfterMs?: number;
}

/** What the hooks return. */
export interface SSEConnectionState {
  /** Whether the (shared) connection is open. */
  connected: boolean;
}

/** The reconnect and page-life options given. */
function pick(o: {
  retryMinMs?: number;
  retryMaxMs?: number;
  releaseHiddenAfterMs?: number;
}): Pick<ConnectOptions<unknown>, 'retryMinMs' | 'retryMaxMs' | 'releaseHiddenAfterMs'> {
  const out: Pick<ConnectOptions<unknown>, 'retryMinMs' | 'retryMaxMs' | 'releaseHiddenAfterMs'> = {};
  if (o.retryMinMs !== undefined) out.retryMinMs = o.retryMinMs;
  if (o.retryMaxMs !== undefined) out.retryMaxMs = o.retryMaxMs;
  if (o.releaseHiddenAfterMs !== undefined) out.releaseHiddenAfterMs = o.releaseHiddenAfterMs;
  return out;
}

/** Keep the latest value in a ref, so callbacks can change without reconnecting. */
function useLatest<T>(value: T): { readonly current: T } {
  const ref = useRef(value);
  ref.current = value;
  return ref;
}

/**
 * Connect to an SSE endpoint while the component is mounted (and `enabled`); reconnects only
 * when `endpoint`, `enabled` or `eventTypes` change. Callbacks may change on every render.
 */
export function useSSEConnection<TEvent = unknown>(
  options: UseSSEConnectionOptions<TEvent>,
): SSEConnectionState {
  const { endpoint, enabled = true, EventSource, channel, tokenParam, share } = options;
  const withToken = options.getToken !== undefined;
  const latest = useLatest(options);
  const [connected, setConnected] = useState(false);
  const typesKey = (options.eventTypes ?? []).join('\n');

  useEffect(() => {
    if (!enabled) {
      setConnected(false);
      return undefined;
    }
    const sub = connect<TEvent>(endpoint, {
      eventTypes: typesKey ? typesKey.split('\n') : [],
      ...(EventSource ? { EventSource } : {}),
      ...(channel === undefined ? {} : { channel }),
      ...(withToken
        ? { getToken: () => (latest.current.getToken as () => string | Promise<string>)() }
        : {}),
      ...(tokenParam === undefined ? {} : { tokenParam }),
      ...(share === undefined ? {} : { share }),
      ...pick(latest.current),
      onEvent: (event, meta) => latest.current.onEvent(event, meta),
      onConnectionChange: (c) => {
        setConnected(c);
        latest.current.onConnectionChange?.(c);
      },
      onError: (e) => latest.current.onError?.(e),
      onReset: (r) => latest.current.onReset?.(r),
    });
    setConnected(sub.connected);
    return () => {
      sub.close();
      setConnected(false);
    };
  }, [endpoint, channel, enabled, typesKey, EventSource, withToken, tokenParam, share, latest]);

  return { connected };
}

/** Options of {@link useSSEQueryInvalidation}. */
export interface UseSSEQueryInvalidationOptions<TEvent> {
  /** The SSE endpoint URL. */
  endpoint: string;
  /** Query keys to invalidate on each event: a list, or a function of the event. */
  queryKeys: readonly QueryKey[] | ((event: TEvent) => readonly QueryKey[]);
  /** Called when the connection opens or drops. */
  onConnectionChange?: (connected: boolean) => void;
  /** Called on connection errors and unparseable events. */
  onError?: (error: unknown) => void;
  /** Called on a reset, after every registered query key was invalidated. */
  onReset?: (reset: ResetInfo) => void;
  /** Whether to connect (default: true). */
  enabled?: boolean;
  /** Named SSE events that also invalidate, besides `message`. */
  eventTypes?: readonly string[];
  /** A channel of the multiplexing endpoint `endpoint`; hooks on one endpoint share a connection. */
  channel?: string;
  /** The `EventSource` constructor (default: the global one). */
  EventSource?: EventSourceConstructor;
  /**
   * The stream's token (see `ConnectOptions.getToken`): fetched before every open and sent as
   * `Authorization: Bearer …` over `fetch` streaming (or in the query, with `tokenParam`); the
   * latest function given is called, so it may change on every render.
   */
  getToken?: () => string | Promise<string>;
  /** Put the token in this query parameter instead (see `ConnectOptions.tokenParam`). */
  tokenParam?: string;
  /** Share one stream with the page's other tabs (default `true`; see `ConnectOptions.share`). */
  share?: boolean;
  /** The reconnect policy and page-life options of `connect` (read when the stream is created). */
  retryMinMs?: number;
  retryMaxMs?: number;
  releaseHiddenAfterMs?: number;
}

/**
 * Invalidate TanStack Query keys when events arrive.
 *
 * When the server sends `reset` (it could not replay what this page missed) or a reconnect
 * could not resume, EVERY key this hook has registered — the static list, and every key a
 * `queryKeys` function returned so far — is invalidated, so the page never stays stale.
 */
export function useSSEQueryInvalidation<TEvent = unknown>(
  options: UseSSEQueryInvalidationOptions<TEvent>,
): SSEConnectionState {
  const queryClient = useQueryClient();
  const latest = useLatest(options);
  // Every key this hook invalidated or was given, by TanStack's own key hash.
  const registered = useRef(new Map<string, QueryKey>());
  const streamKey = `${options.endpoint}\n${options.channel ?? ''}`;
  const endpointRef = useRef(streamKey);
  if (endpointRef.current !== streamKey) {
    // Keys of another endpoint's events are not this stream's business any more.
    endpointRef.current = streamKey;
    registered.current = new Map();
  }

  const register = (keys: readonly QueryKey[]): void => {
    for (const k of keys) registered.current.set(hashKey(k), k);
  };
  if (typeof options.queryKeys !== 'function') register(options.queryKeys);

  const invalidate = (keys: Iterable<QueryKey>): void => {
    for (const queryKey of keys) {
      void queryClient.invalidateQueries({ queryKey });
    }
  };

  return useSSEConnection<TEvent>({
    endpoint: options.endpoint,
    enabled: options.enabled ?? true,
    ...(options.eventTypes ? { eventTypes: options.eventTypes } : {}),
    ...(options.channel === undefined ? {} : { channel: options.channel }),
    ...(options.EventSource ? { EventSource: options.EventSource } : {}),
    ...(options.getToken ? { getToken: () => (latest.current.getToken as () => string | Promise<string>)() } : {}),
    ...(options.tokenParam === undefined ? {} : { tokenParam: options.tokenParam }),
    ...(options.share === undefined ? {} : { share: options.share }),
    ...pick(options),
    onEvent: (event) => {
      const qk = latest.current.queryKeys;
      const keys = typeof qk === 'function' ? qk(event) : qk;
      register(keys);
      invalidate(keys);
    },
    onConnectionChange: (c) => latest.current.onConnectionChange?.(c),
    onError: (e) => latest.current.onError?.(e),
    onReset: (reset) => {
      const qk = latest.current.queryKeys;
      if (typeof qk !== 'function') register(qk);
      invalidate(registered.current.values());
      latest.current.onReset?.(reset);
    },
  });
}
