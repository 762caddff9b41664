/**
 * `@ssehub/client`: typed Server-Sent Events from an ssehub server in the browser.
 *
 * - {@link connect}: framework-free, over the native `EventSource`, one shared connection per
 *   endpoint; on a multiplexing endpoint, one connection for every channel.
 * - {@link useSSEConnection} and {@link useSSEQueryInvalidation}: React hooks, the second
 *   invalidating TanStack Query keys on events and every registered key on a reset.
 * - {@link ResetReason} and {@link ResetPayload}: the server's `reset` event, generated from
 *   ssehub's Rust definitions.
 */

export {
  connect,
  decodePositions,
  encodePositions,
  openConnectionCount,
  RESET_EVENT,
  type ConnectOptions,
  type EventMeta,
  type EventSourceConstructor,
  type EventSourceLike,
  type ResetCause,
  type ResetInfo,
  type ResetPayload,
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
