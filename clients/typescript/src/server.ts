/**
 * `@ssehub/client/server`: publish to an ssehub hub from a server (Node ≥ 20, TanStack Start
 * server functions, any runtime with `fetch` and `crypto.randomUUID`). No dependencies; never
 * imported by the package root, which stays browser-only.
 *
 * @example
 * ```ts
 * import { createPublisher } from '@ssehub/client/server';
 *
 * const hub = createPublisher({ url: process.env.SSEHUB_URL!, key: process.env.SSEHUB_PUBLISH_KEY! });
 * const { id } = await hub.publish(`comments/${discussionId}`, { commentCount }, { event: 'comment-added' });
 * ```
 */

/** The `fetch` the publisher calls (the global one by default). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** Options of {@link createPublisher}. */
export interface PublisherOptions {
  /** The hub's base URL, e.g. `https://hub.example.com` (a path prefix is kept). */
  url: string;
  /**
   * A publish key (`--publish-key`) or a JWT with `ssehub.publish`, or a function returning
   * one (called before every attempt, so a short-lived JWT can be renewed between retries).
   */
  key: string | (() => string | Promise<string>);
  /** The `fetch` to use (default: `globalThis.fetch`). */
  fetch?: FetchLike;
  /**
   * How many times one publish is retried after a network error, a timeout or a `503`
   * (default 3, so at most 4 attempts). Every attempt sends the same `Idempotency-Key`.
   */
  retries?: number;
  /** The time limit of one attempt, in milliseconds (default 10 000). */
  timeoutMs?: number;
}

/** Options of {@link Publisher.publish}. */
export interface PublishOptions {
  /** The event name (`<channel>:<event>` on the stream); none for plain channel events. */
  event?: string;
  /**
   * The `Idempotency-Key` (1–255 visible ASCII characters): a repeat within 2 minutes stores
   * nothing and answers the first id. Default: a fresh random key per call, so the retries of
   * one call never store twice.
   */
  idempotencyKey?: string;
  /** Aborts the publish (and its retries). */
  signal?: AbortSignal;
}

/** Options of {@link Publisher.publishMany}. */
export type PublishManyOptions = Omit<PublishOptions, 'event'>;

/** One event of {@link Publisher.publishMany}. */
export interface PublishEvent<T = unknown> {
  channel: string;
  data: T;
  event?: string;
}

/** What {@link createPublisher} returns. */
export interface Publisher {
  /** `POST /v1/publish/{channel}`: the event's id. */
  publish<T = unknown>(channel: string, data: T, options?: PublishOptions): Promise<{ id: string }>;
  /**
   * `POST /v1/publish`: up to 1 000 events, checked as a whole before any is published; the
   * ids in the order of the events.
   */
  publishMany(events: readonly PublishEvent[], options?: PublishManyOptions): Promise<{ ids: string[] }>;
}

/**
 * A publish that failed: the hub's answer (`status` 400, 401, 403, 413, 503 …, `message` its
 * `error`), or `status` 0 when no answer came (network errors and timeouts, after the retries;
 * the last error is the `cause`).
 */
export class PublishError extends Error {
  override name = 'PublishError';
  /** The HTTP status, or 0 without an answer. */
  readonly status: number;
  /** The channel a `403` names. */
  readonly channel: string | undefined;
  /** A `503`'s `Retry-After`, in seconds. */
  readonly retryAfter: number | undefined;

  constructor(
    status: number,
    message: string,
    extra: { channel?: string | undefined; retryAfter?: number | undefined; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.status = status;
    this.channel = extra.channel;
    this.retryAfter = extra.retryAfter;
  }
}

const DEFAULT_RETRIES = 3;
const DEFAULT_TIMEOUT_MS = 10_000;
const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 10_000;
/** The longest `Retry-After` honoured; a longer one is cut to this. */
const RETRY_AFTER_MAX_MS = 30_000;

const CHANNEL = /^[A-Za-z0-9_.@/-]{1,200}$/;

/** Why the hub would refuse `channel` (PROTOCOL.md, Names), or `null`. */
function channelProblem(channel: string): string | null {
  if (typeof channel !== 'string' || !CHANNEL.test(channel)) {
    return `invalid channel name ${JSON.stringify(channel)}: 1 to 200 characters from A-Z a-z 0-9 _ - . @ /`;
  }
  if (channel === 'reset') return 'invalid channel name "reset": reserved for the reset event';
  if (channel.split('/').some((s) => s === '.' || s === '..')) {
    return `invalid channel name ${JSON.stringify(channel)}: \`.\` and \`..\` segments are not allowed (URLs resolve them)`;
  }
  return null;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** `Retry-After` (seconds or an HTTP date) in milliseconds, or `undefined`. */
function retryAfterMs(value: string | null): number | undefined {
  if (!value) return undefined;
  const secs = Number(value);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** The delay before retry number `attempt` (0-based): exponential with jitter, or `Retry-After`. */
function backoff(attempt: number, retryAfter: number | undefined): number {
  if (retryAfter !== undefined) {
    // Honour the hub's wish, spread by up to 20 % (at most 1 s) so publishers do not come back together.
    const ms = Math.min(retryAfter, RETRY_AFTER_MAX_MS);
    return ms + Math.random() * Math.min(ms * 0.2, 1000);
  }
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  return cap / 2 + Math.random() * (cap / 2);
}

/** The error an answer carries. */
async function answerError(res: Response): Promise<PublishError> {
  let message = `HTTP ${res.status}`;
  let channel: string | undefined;
  try {
    const text = await res.text();
    try {
      const body = JSON.parse(text) as { error?: unknown; channel?: unknown };
      if (typeof body?.error === 'string') message = body.error;
      if (typeof body?.channel === 'string') channel = body.channel;
    } catch {
      if (text) message = `${message}: ${text.slice(0, 200)}`;
    }
  } catch {
    // The body could not be read: the status says enough.
  }
  const after = retryAfterMs(res.headers.get('retry-after'));
  return new PublishError(res.status, message, {
    channel,
    retryAfter: after === undefined ? undefined : after / 1000,
  });
}

/**
 * A publisher to the hub at `url`. Each `publish`/`publishMany` is one logical publish: it is
 * retried on network errors, timeouts and `503` (after `Retry-After` when the hub sends one,
 * else exponential backoff with jitter), always with the same `Idempotency-Key`, so the hub
 * stores it once. Other answers (`400`, `401`, `403`, `413`, …) are never retried: they reject
 * with a {@link PublishError}.
 */
export function createPublisher(options: PublisherOptions): Publisher {
  const base = options.url.replace(/\/+$/, '');
  const retries = Math.max(0, options.retries ?? DEFAULT_RETRIES);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const doFetch: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));

  async function post<T>(path: string, body: unknown, key: string, signal?: AbortSignal): Promise<T> {
    const payload = JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const credential = typeof options.key === 'function' ? await options.key() : options.key;
      const timeout = new AbortController();
      const timer = setTimeout(
        () => timeout.abort(new PublishError(0, `no answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = () => timeout.abort(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      let answer: PublishError | undefined;
      let failure: unknown;
      try {
        const res = await doFetch(base + path, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${credential}`,
            'content-type': 'application/json',
            'idempotency-key': key,
          },
          body: payload,
          signal: timeout.signal,
        });
        // A body lost after a 200 is retried like any lost answer: the same key stores nothing twice.
        if (res.ok) return (await res.json()) as T;
        answer = await answerError(res);
      } catch (e) {
        failure = e;
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      }
      if (signal?.aborted) throw signal.reason;
      if (answer && answer.status !== 503) throw answer;
      if (attempt >= retries) {
        if (answer) throw answer;
        const why = failure instanceof Error ? failure.message : String(failure);
        throw new PublishError(0, `no answer from the hub after ${attempt + 1} attempts: ${why}`, {
          cause: failure,
        });
      }
      const retryAfter = answer?.retryAfter === undefined ? undefined : answer.retryAfter * 1000;
      await sleep(backoff(attempt, retryAfter), signal);
    }
  }

  return {
    async publish(channel, data, opts = {}) {
      const problem = channelProblem(channel);
      if (problem) throw new PublishError(400, problem, { channel });
      const key = opts.idempotencyKey ?? globalThis.crypto.randomUUID();
      const event = opts.event === undefined ? {} : { event: opts.event };
      return post<{ id: string }>(`/v1/publish/${channel}`, { data, ...event }, key, opts.signal);
    },

    async publishMany(events, opts = {}) {
      for (const e of events) {
        const problem = channelProblem(e.channel);
        if (problem) throw new PublishError(400, problem, { channel: e.channel });
      }
      const key = opts.idempotencyKey ?? globalThis.crypto.randomUUID();
      const body = {
        events: events.map((e) =>
          e.event === undefined
            ? { channel: e.channel, data: e.data }
            : { channel: e.channel, data: e.data, event: e.event },
        ),
      };
      return post<{ ids: string[] }>('/v1/publish', body, key, opts.signal);
    },
  };
}
