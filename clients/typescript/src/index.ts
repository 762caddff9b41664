/**
 * `@ssehub/client`: typed Server-Sent Events from an ssehub server in the browser.
 *
 * - {@link connect}: framework-free, over the native `EventSource`, one shared connection per
 *   endpoint.
 * - {@link useSSEConnection} and {@link useSSEQueryInvalidation}: the React hooks of
 *   `@enalmada/start-streaming/client`, plus invalidation of every registered query on `reset`.
 * - {@link CommentEvent}: the demo's event type, generated from Rust with ts-rs.
 */

export {
  connect,
  openConnectionCount,
  RESET_EVENT,
  type ConnectOptions,
  type EventMeta,
  type EventSourceConstructor,
  type EventSourceLike,
  type ResetInfo,
  type ResetReason,
  type Subscription,
} from './core.js';
export {
  useSSEConnection,
  useSSEQueryInvalidation,
  type SSEConnectionState,
  type UseSSEConnectionOptions,
  type UseSSEQueryInvalidationOptions,
} from './react.js';
export type { CommentEvent } from './generated/CommentEvent.js';
