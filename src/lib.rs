#![doc = include_str!("../README.md")]

pub use ssehub_core::*;

/// The in-memory backend (feature `memory`, on by default).
#[cfg(feature = "memory")]
pub use ssehub_memory as memory;
#[cfg(feature = "memory")]
pub use ssehub_memory::MemoryBroker;

/// The HTTP adapter (feature `axum`, on by default): [`SseLayer`](ssehub_axum::SseLayer) and
/// [`SseEndpoint`](ssehub_axum::SseEndpoint).
#[cfg(feature = "axum")]
pub use ssehub_axum as axum;
#[cfg(feature = "axum")]
pub use ssehub_axum::{MultiplexEndpoint, PathParams, SseEndpoint, SseLayer};

/// The Redis backend (feature `redis`).
#[cfg(feature = "redis")]
pub use ssehub_redis as redis;
#[cfg(feature = "redis")]
pub use ssehub_redis::RedisBroker;

/// The NATS backend (feature `nats`).
#[cfg(feature = "nats")]
pub use ssehub_nats as nats;
#[cfg(feature = "nats")]
pub use ssehub_nats::NatsBroker;
