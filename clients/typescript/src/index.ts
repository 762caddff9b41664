/**
 * `@ssehub/client`: typed Server-Sent Events from an ssehub server in the browser.
 *
 * This entry never imports React or TanStack Query; the hooks are in `@ssehub/client/react`.
 *
 * - {@link connect}: framework-free, over the native `EventSource` (or `fetch` streaming, for a
 *   token in a header, loaded when needed), one shared connection per endpoint (and, where the
 *   browser allows, per browser: every tab shares it); on a multiplexing endpoint, one
 *   connection for every channel.
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
