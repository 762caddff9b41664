//! Serve ssehub channels as Server-Sent Events over HTTP: a tower [`SseLayer`] that works in
//! front of any hyper service, an [`SseEndpoint`] that is itself a tower service for axum's
//! `route_service`, and a [`MultiplexEndpoint`] that carries channels of several endpoints on
//! one response (`/api/sse?channel=comments/123&channel=votes/123`).
//!
//! # Example
//!
//! ```
//! use axum::Router;
//! use serde::Serialize;
//! use ssehub_axum::{PathParams, SseEndpoint};
//! use ssehub_core::ChannelManager;
//!
//! #[derive(Serialize, Clone)]
//! #[serde(rename_all = "camelCase")]
//! struct CommentEvent { discussion_id: String, comment_count: u64 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let comments = ChannelManager::<CommentEvent>::builder(ssehub_memory::MemoryBroker::new())
//!     .key_prefix("discussion")
//!     .key_suffix("comments")
//!     .build()?;
//! let endpoint = SseEndpoint::new(comments.clone(), "/api/sse/comments/{discussionId}")?
//!     .resource(|p: &PathParams| p.get("discussionId").unwrap_or_default().to_owned())
//!     .validate(|p: &PathParams| p.get("discussionId").is_some_and(|id| id.len() < 64))
//!     .initial_event(|p: PathParams| async move {
//!         Some(CommentEvent { discussion_id: p.get("discussionId")?.to_owned(), comment_count: 0 })
//!     })
//!     .on_disconnect(move |p: &PathParams| {
//!         let _ = p; // e.g. comments.cleanup_if_empty(id)
//!     });
//!
//! // As an axum route ...
//! let app: Router = Router::new().route_service(endpoint.pattern(), endpoint.clone());
//! // ... or as a layer in front of any service: requests it does not own pass through.
//! let app: Router = Router::new().layer(ssehub_axum::SseLayer::new(endpoint));
//! # let _ = app; Ok(()) }
//! ```
//!
//! # HTTP behaviour
//!
//! - `GET` (and `HEAD`) only; other methods on an owned path get `405` with `Allow: GET, HEAD`.
//! - `200`, `Content-Type: text/event-stream`, `Cache-Control: no-cache`,
//!   `X-Accel-Buffering: no`; a `retry:` hint first, then the initial event, then replayed and
//!   live events, with a keep-alive comment after 15 s of silence (configurable).
//! - Params refused by `validate`: `400` with a short text body. `authorize` answers `401`/`403`
//!   (or any status it returns) before a stream opens. Params are percent-decoded before any
//!   hook sees them; access rules belong on them, not on the raw `parts.uri` (see
//!   [`SseEndpoint::authorize`]).
//! - An initial event that cannot be encoded (serialization fails, too large, bad event name):
//!   `500` and an error in the log; a retry hint would make the browser retry forever. A broker
//!   error that retrying cannot fix (`Error::is_temporary` is false: a wrong key type, a
//!   permission) is answered the same way, `500` with the error in the body and the log.
//! - Resume from the `Last-Event-ID` header, or the `lastEventId` query parameter for polyfills
//!   (the header wins); a malformed, unknown or too old id starts the stream with a `reset` event.
//! - Over capacity, shutting down, or broker unavailable: by default `200` with a `retry:` hint
//!   (base plus random jitter) and an immediate end, because a browser's `EventSource` gives up
//!   for good on any non-200 answer but reconnects after a stream that ends. Non-browser clients
//!   can get `503` with `Retry-After` instead ([`Unavailable::ServiceUnavailable`]).
//! - A client that stops reading is cut off when its session queue is full; wrap the server's
//!   listener in [`WriteTimeoutListener`] so its connection is closed too (hyper has no write
//!   timeout), which runs `on_disconnect`. The same listener sets TCP keepalive and
//!   `TCP_USER_TIMEOUT` on accepted sockets, so a client that vanished without a word is closed
//!   within about 45 s with the defaults instead of the kernel's ~15 minutes.
//! - Retry hints, their jitter and the keep-alive interval are clamped to [`MAX_DURATION`].
//! - On a [`MultiplexEndpoint`], each registered endpoint's hooks run per channel; one refused
//!   channel refuses the request with its status and a body naming it; more than
//!   [`DEFAULT_MAX_CHANNELS`] (configurable), a repeated or an unknown channel answer `400`.
//! - Never compressed: tower-http's `CompressionLayer` skips `text/event-stream`, and the response
//!   carries no `Content-Length` to mislead a size predicate.

mod body;
mod endpoint;
mod layer;
mod listener;
mod multiplex;
mod params;
mod response;
mod resume;
mod serve;
mod service;
mod settings;

pub use body::{ResponseBody, SseBody};
pub use endpoint::SseEndpoint;
pub use layer::{ResponseFuture, SseLayer, SseService};
pub use listener::{WriteTimeoutIo, WriteTimeoutListener};
pub use multiplex::{DEFAULT_MAX_CHANNELS, MultiplexEndpoint};
pub use params::{PathParams, RequestInfo};
pub use serve::{DEFAULT_HEADER_READ_TIMEOUT, Serve, serve};
pub use service::SseRoutes;
pub use settings::{MAX_DURATION, Unavailable};

// The README's Rust code blocks (the crate's page on crates.io) compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
