//! JetStream mode: every topic is a subject of one stream that keeps the last `history` events
//! per subject. Ids are `<epoch>-<stream sequence>`, the epoch naming the stream incarnation (its
//! creation time), so an id from a deleted and recreated stream answers a gap.

mod feed;
mod replay;

use std::sync::{Arc, Mutex, RwLock, Weak};

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use ssehub_core::backend::{Backoff, Fanout, Offset, StreamPosition, lock};
use ssehub_core::{Error, EventId, Message, Replay, Result};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::builder::NatsBrokerBuilder;
use crate::carrier::Carrier;
use crate::connection::{ConnEvent, Connection, headers_for};
use crate::error::{NatsError, boxed};

/// Header carrying the stream epoch an event was published under.
pub(crate) const EPOCH_HEADER: &str = "Ssehub-Epoch";

pub(crate) struct JetStream {
    conn: Connection,
    js: jetstream::Context,
    /// The stream as this broker creates it when it is missing.
    stream_config: stream::Config,
    /// The stream's epoch as last seen (refreshed on reconnect).
    epoch: RwLock<String>,
    history: Option<usize>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for JetStream {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.refresher).take() {
            task.abort();
        }
    }
}

impl JetStream {
    /// Find or create the stream, and refresh its epoch after every reconnect.
    pub(crate) async fn open(conn: Connection, config: &NatsBrokerBuilder) -> Result<Arc<Self>> {
        let mut js = jetstream::new(conn.client.clone());
        js.set_timeout(config.response_timeout);
        let stream_config = stream::Config {
            name: config.stream_name(),
            subjects: vec![format!("{}.>", config.prefix)],
            max_messages_per_subject: i64::try_from(config.history).unwrap_or(i64::MAX),
            max_age: config.history_ttl,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let info = ensure_stream(&js, &stream_config).await?;
        let this = Arc::new(JetStream {
            history: usize::try_from(info.config.max_messages_per_subject)
                .ok()
                .filter(|h| *h > 0),
            epoch: RwLock::new(epoch_of(&info)),
            conn,
            js,
            stream_config,
            refresher: Mutex::new(None),
        });
        let task = tokio::spawn(refresh_on_reconnect(
            Arc::downgrade(&this),
            this.conn.events(),
        ));
        *lock(&this.refresher) = Some(task);
        Ok(this)
    }

    fn stream_name(&self) -> &str {
        &self.stream_config.name
    }

    fn epoch_now(&self) -> String {
        self.epoch.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_epoch(&self, epoch: String) {
        *self.epoch.write().unwrap_or_else(|e| e.into_inner()) = epoch;
    }

    /// Re-read the stream (recreating it if it vanished) and refresh the epoch.
    async fn refresh_stream(&self) -> Result<stream::Info> {
        let info = ensure_stream(&self.js, &self.stream_config).await?;
        self.set_epoch(epoch_of(&info));
        Ok(info)
    }
}

async fn refresh_on_reconnect(this: Weak<JetStream>, mut events: broadcast::Receiver<ConnEvent>) {
    loop {
        match events.recv().await {
            Ok(ConnEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                let Some(this) = this.upgrade() else { return };
                if let Err(e) = this.refresh_stream().await {
                    tracing::warn!(error = %e, "nats: stream refresh after reconnect failed");
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[async_trait]
impl Carrier for JetStream {
    async fn publish(&self, subject: String, message: Message) -> Result<EventId> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let epoch = self.epoch();
            let headers = headers_for(&message.event, (EPOCH_HEADER, &epoch));
            if !self.conn.connected() {
                return Err(NatsError::NotConnected.into());
            }
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, message.data.clone())
                .await
                .map_err(|e| NatsError::Publish(boxed(e)))?;
            let ack = match ack.await {
                Ok(ack) => ack,
                Err(e) => {
                    use async_nats::jetstream::context::PublishErrorKind as K;
                    match e.kind() {
                        // Nothing was stored: safe to recreate the stream and try once more.
                        K::StreamNotFound if attempt == 1 => {
                            self.refresh_stream().await?;
                            continue;
                        }
                        K::TimedOut | K::BrokenPipe => {
                            return Err(NatsError::Unconfirmed(Some(boxed(e))).into());
                        }
                        _ => return Err(NatsError::Publish(boxed(e)).into()),
                    }
                }
            };
            if ack.stream != self.stream_name() {
                return Err(NatsError::WrongStream(ack.stream).into());
            }
            return StreamPosition::new(&epoch, Offset::Seq(ack.sequence))
                .map(|p| p.to_event_id())
                .ok_or_else(|| NatsError::Config("the stream epoch is not alphanumeric").into());
        }
    }

    async fn start_feed(&self, subject: String, fanout: Arc<Fanout>) -> Result<JoinHandle<()>> {
        let info = self.refresh_stream().await?;
        let feed = feed::Feed::new(
            self.js.clone(),
            self.stream_name().to_owned(),
            subject,
            &info,
            fanout,
        );
        let messages = feed.open().await?;
        Ok(tokio::spawn(feed.run(messages, self.conn.events())))
    }

    async fn replay(&self, subject: &str, after: &StreamPosition, limit: usize) -> Result<Replay> {
        let deadline = self.conn.timeout * 2;
        tokio::time::timeout(deadline, replay::replay(self, subject, after, limit))
            .await
            .map_err(|_| Error::from(NatsError::ReplayTimeout))?
    }

    fn history(&self) -> Option<usize> {
        self.history
    }

    fn epoch(&self) -> String {
        self.epoch_now()
    }

    async fn check(&self) -> Result<()> {
        self.refresh_stream().await.map(|_| ())
    }
}

async fn ensure_stream(js: &jetstream::Context, config: &stream::Config) -> Result<stream::Info> {
    // Nodes starting together race to create the stream: a create that loses the race fails,
    // and the next look finds the winner's stream. A few tries settle it.
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_millis(200),
    );
    let mut attempt = 0;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream.cached_info().clone()),
            Err(e) if attempt < 3 => {
                tracing::debug!(error = %e, stream = %config.name, "nats: stream setup failed; trying again");
                attempt += 1;
                backoff.wait().await;
            }
            Err(e) => return Err(NatsError::Stream(boxed(e)).into()),
        }
    }
}

/// The stream incarnation: its creation time in nanoseconds, as hex.
pub(crate) fn epoch_of(info: &stream::Info) -> String {
    format!("{:x}", info.created.unix_timestamp_nanos().max(0))
}
