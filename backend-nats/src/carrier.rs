//! How events travel: the one internal trait the two modes implement, so the broker never
//! switches on its mode.

use std::sync::Arc;

use async_trait::async_trait;
use ssehub_core::backend::{Fanout, StreamPosition};
use ssehub_core::{EventId, Message, Replay, Result};
use tokio::task::JoinHandle;

/// One mode of the NATS broker: [`JetStream`](crate::jetstream::JetStream) (stored, replayable)
/// or [`CoreNats`](crate::core_nats::CoreNats) (live only).
#[async_trait]
pub(crate) trait Carrier: Send + Sync + 'static {
    /// Publish one event to `subject` and answer its id.
    async fn publish(&self, subject: String, message: Message) -> Result<EventId>;

    /// Start the live feed of `subject` into `fanout`; returns once it is live.
    async fn start_feed(&self, subject: String, fanout: Arc<Fanout>) -> Result<JoinHandle<()>>;

    /// The events of `subject` after `after` (at most `limit`), or a gap.
    async fn replay(&self, subject: &str, after: &StreamPosition, limit: usize) -> Result<Replay>;

    /// Events kept per topic; `None` without history.
    fn history(&self) -> Option<usize>;

    /// The epoch of the ids this mode gives now.
    fn epoch(&self) -> String;

    /// What [`Broker::health`](ssehub_core::Broker::health) checks beyond a round trip.
    async fn check(&self) -> Result<()>;
}
