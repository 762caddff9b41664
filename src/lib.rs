//! Typed Server-Sent Events with interchangeable pub/sub backends.
//!
//! An app starts on one process with the in-memory backend and grows to a fleet by switching a
//! cargo feature and a URL: events published on any server reach every browser connected to any
//! server, and a browser that reconnects anywhere resumes from its `Last-Event-ID` with no gap and
//! no duplicate, or gets an explicit `reset` event when history no longer reaches back that far.
//!
//! - [`ChannelManager`]: typed channels named `prefix:resourceId:suffix`; publish one event or a
//!   batch, count sessions, clean up.
//! - [`SseEndpoint`] / [`MultiplexEndpoint`]: the SSE routes (validate, authorize, initial event,
//!   on-disconnect), as axum routes or, with [`SseLayer`], in front of any tower/hyper service.
//! - Backends, chosen with a cargo feature: [`MemoryBroker`] (default), `RedisBroker`
//!   (feature `redis`, single node or Redis Cluster), `NatsBroker` (feature `nats`, core NATS or
//!   JetStream).
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use serde::Serialize;
//! use ssehub::{ChannelManager, MemoryBroker, PathParams, SseEndpoint};
//!
//! #[derive(Clone, Serialize)]
//! #[serde(rename_all = "camelCase")]
//! struct CommentAdded {
//!     discussion_id: String,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let comments = ChannelManager::<CommentAdded>::builder(MemoryBroker::new())
//!         .key_prefix("discussion")
//!         .key_suffix("comments")
//!         .build()?;
//!     let stream = SseEndpoint::new(comments.clone(), "/api/sse/comments/{id}")?
//!         .resource(|p: &PathParams| p.get("id").unwrap_or_default().to_owned());
//!     let publish = post(move |axum::extract::Path(id): axum::extract::Path<String>| async move {
//!         let event = CommentAdded { discussion_id: id.clone() };
//!         comments.publish(&id, &event).await.map(|id| id.to_string()).map_err(|e| e.to_string())
//!     });
//!     let app = Router::new()
//!         .merge(stream.into_router())
//!         .route("/api/comments/{id}", publish);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app.with_state::<()>(()).into_make_service()).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Features
#![doc = document_features::document_features!()]
//!
//! # What is exported
//!
//! The types an app uses, at the top level; each adapter and backend crate whole under
//! [`adapter`] and [`backends`] (module names that cannot clash with the `axum`, `redis` or
//! `nats` crates under a glob import). Writing a backend of your own takes the backend kit and
//! the conformance suite of [`ssehub-core`](https://docs.rs/ssehub-core), which this facade does
//! not re-export.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use ssehub_core::{
    BoxError, Broker, Capabilities, Channel, ChannelManager, ChannelManagerBuilder,
    ChannelPresence, CloseReason, DEFAULT_IDEMPOTENCY_WINDOW, Delivery, Envelope, Error, EventId,
    EventName, History, IdempotencyKey, MAX_EVENT_ID_LEN, MAX_EVENT_NAME_LEN, MAX_RESOURCE_ID_LEN,
    MAX_TOPIC_LEN, Message, Ndjson, OverflowPolicy, PRESENCE_EVENT, PresenceConfig, PublishOptions,
    QueueLimits, RESET_EVENT, Replay, ReplayLimits, ResetPayload, ResetReason, Result, Session,
    Signals, Sse, SubscribeOptions, Subscription, Topic, Transport, UserPresence,
    validate_key_part,
};

/// Several channels on one stream without the HTTP adapter: [`MultiplexedSession`] labels each
/// event with its channel and gives it an id that resumes every channel.
pub use ssehub_core::multiplex::MultiplexedSession;

/// Multiplexing without the HTTP adapter: [`MultiplexedSession`] and the codec of its ids
/// ([`multiplex::encode_positions`], [`multiplex::decode_positions`]), for servers that build
/// multiplexed streams themselves (the `ssehub` hub does).
pub use ssehub_core::multiplex;

pub use ssehub_core::metric_names;

/// The HTTP adapter, the `ssehub-axum` crate (feature `axum`, on by default).
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use ssehub_axum as adapter;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use ssehub_axum::{
    MultiplexEndpoint, PathParams, RequestInfo, Serve, SseEndpoint, SseLayer, Unavailable,
    WriteTimeoutListener, serve,
};

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use ssehub_memory::MemoryBroker;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use ssehub_nats::NatsBroker;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use ssehub_redis::RedisBroker;

/// The backend crates, whole: their builders, options and re-exported client libraries.
pub mod backends {
    /// The in-memory backend, the `ssehub-memory` crate (feature `memory`, on by default).
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub use ssehub_memory as memory;
    /// The NATS backend, the `ssehub-nats` crate (feature `nats`); `nats::async_nats` is its
    /// client library.
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    pub use ssehub_nats as nats;
    /// The Redis backend, the `ssehub-redis` crate (feature `redis`); `redis::redis` is its
    /// client library.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub use ssehub_redis as redis;
}

// The README's Rust code blocks compile (and the ones not marked `no_run` run) as doctests, so
// the Quick start a newcomer copies is the one that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
