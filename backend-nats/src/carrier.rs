//! How events travel: the one internal trait the two modes implement, so the broker never
//! switches on its mode.

use std::sync::Arc;

use async_trait::async_trait;
use ssehub_core::backend::{Fanout, StreamPosition};
use ssehub_core::{EventId, Message, Replay, Result};
use tokio::task::JoinHandle;

use crate::error::NatsError;

/// One mode of the NATS broker: [`JetStream`](crate::jetstream::JetStream) (stored, replayable)
/// or [`CoreNats`](crate::core_nats::CoreNats) (live only).
#[async_trait]
pub(crate) trait Carrier: Send + Sync + 'static {
    /// Publish events to `subject`, in order, pipelined, and answer their ids in order.
    async fn publish_many(&self, subject: String, messages: Vec<Message>) -> Result<Vec<EventId>>;

    /// Publish one event to `subject` and answer its id.
    async fn publish(&self, subject: String, message: Message) -> Result<EventId> {
        let mut ids = self.publish_many(subject, vec![message]).await?;
        ids.pop()
            .ok_or_else(|| NatsError::Config("a publish gave no id").into())
    }

    /// Start the live feed of `subject` into `fanout`; returns once it is live.
    async fn start_feed(&self, subject: String, fanout: Arc<Fanout>) -> Result<JoinHandle<()>>;

    /// The events of `subject` after `after` (at most `limit`), or a gap.
    async fn replay(&self, subject: &str, after: &StreamPosition, limit: usize) -> Result<Replay>;

    /// The id of the newest event of `subject` in history; `None` without one (or without
    /// history).
    async fn tail(&self, subject: &str) -> Result<Option<EventId>> {
        let _ = subject;
        Ok(None)
    }

    /// Events kept per topic; `None` without history.
    fn history(&self) -> Option<usize>;

    /// How long a publish's idempotency key is remembered; `None` when it is not.
    fn idempotency(&self) -> Option<std::time::Duration>;

    /// The epoch of the ids this mode gives now.
    fn epoch(&self) -> String;

    /// What [`Broker::health`](ssehub_core::Broker::health) checks beyond a round trip.
    async fn check(&self) -> Result<()>;
}
