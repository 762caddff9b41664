//! Core of [ssehub](https://docs.rs/ssehub): typed Server-Sent Events over interchangeable
//! pub/sub backends.
//!
//! - [`Broker`]: what a backend (memory, Redis, NATS) implements — node-to-node pub/sub of
//!   serialized events with broker-assigned ids and replayable history.
//! - [`Transport`]: how events become bytes for one kind of client stream ([`Sse`], [`Ndjson`]).
//! - [`ChannelManager`]: typed channels named `prefix:resourceId:suffix`, with publish (one event
//!   or a batch), session counts, cleanup, and sessions that resume from a `Last-Event-ID`
//!   without gap or duplicate.
//! - [`multiplex`]: several channels on one stream, each event labelled with its channel, each
//!   id resuming every channel exactly.
//!
//! # Example
//!
//! ```
//! use futures_util::StreamExt;
//! use ssehub_core::{ChannelManager, SubscribeOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let manager = ChannelManager::<serde_json::Value>::builder(ssehub_memory::MemoryBroker::new())
//!     .key_prefix("room")
//!     .build()?;
//! let mut session = manager.subscribe("42", SubscribeOptions::new()).await?;
//! let id = manager.publish("42", &serde_json::json!({"hello": "world"})).await?;
//! let frame = session.next().await.unwrap();
//! assert_eq!(frame, format!("id: {id}\ndata: {{\"hello\":\"world\"}}\n\n"));
//! # Ok(()) }
//! ```
//!
//! # Features
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
mod broker;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
mod error;
mod hub;
mod id;
mod idempotency;
mod manager;
pub mod metric_names;
pub mod multiplex;
mod presence;
mod session;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod sse_parser;
mod transport;

pub use broker::{
    Broker, Capabilities, Delivery, Envelope, GapCause, Message, Replay, Signals, Subscription,
};
pub use error::{BoxError, Error, Result};
pub use id::{
    EventId, EventName, MAX_EVENT_ID_LEN, MAX_EVENT_NAME_LEN, MAX_RESOURCE_ID_LEN, MAX_TOPIC_LEN,
    PRESENCE_EVENT, RESET_EVENT, Topic, validate_key_part,
};
pub use idempotency::{DEFAULT_IDEMPOTENCY_WINDOW, GENERATED_KEY_WINDOW, IdempotencyKey};
pub use manager::{
    Channel, ChannelManager, ChannelManagerBuilder, History, PublishOptions, SubscribeOptions,
};
pub use presence::{ChannelPresence, PresenceConfig, UserPresence};
pub use session::{CloseReason, OverflowPolicy, QueueLimits, ReplayLimits, Session};
pub use transport::{Ndjson, ResetPayload, ResetReason, Sse, Transport};

// The README's Rust code blocks (the crate's page on crates.io) compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
