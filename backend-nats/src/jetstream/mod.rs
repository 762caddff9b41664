//! JetStream mode: every topic is a subject of one stream that keeps the last `history` events
//! per subject. Ids are `<epoch>-<stream sequence>`, the epoch naming the stream incarnation (its
//! creation time), so an id from a deleted and recreated stream answers a gap.
//!
//! # The epoch
//!
//! Whatever part of the broker first sees a new stream incarnation updates the one shared
//! [`Epoch`] at once: a publish answered "stream not found" (it creates the stream again), a
//! publish acknowledged at a sequence the old incarnation had already passed, a feed or a replay
//! reading the stream's info, the health check, and a check after every reconnect and every
//! [`REVERIFY`] otherwise. Publishes then carry the new epoch, and every feed of this broker
//! sends its subscribers a gap and goes on with the new stream.
//!
//! After a reconnect, the first publish verifies the stream before it publishes (the stream may
//! have been created again while this node was away). Left: a stream created again by another
//! node while this one stays connected, before any of the above notices it; publishes meanwhile
//! carry the old epoch. Their ids are consistent (the feeds deliver the same ids) but a resume
//! from one answers a gap, never a wrong replay: replay accepts only the current epoch.

mod live;
mod lookup;
mod replay;
mod setup;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use ssehub_core::backend::{Fanout, Offset, StreamPosition, lock};
use ssehub_core::{Envelope, EventId, Message, Replay, Result};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::builder::NatsBrokerBuilder;
use crate::carrier::Carrier;
use crate::connection::{ConnEvent, Connection, headers_for};
use crate::error::{NatsError, boxed};
pub(crate) use setup::epoch_of;

/// Header carrying the stream epoch an event was published under.
pub(crate) const EPOCH_HEADER: &str = "Ssehub-Epoch";

/// One stored event as the feeds and replays read it.
#[derive(Debug)]
pub(super) struct Stored {
    seq: u64,
    /// The sequence of the previous message of the subject, when the message says (a
    /// republished one); reads of the stream go through every message of the subject in order.
    prev: Option<u64>,
    epoch: String,
    env: Envelope,
}

/// The event a stream message holds; `None` when it is not an ssehub event. A message without
/// an epoch header takes `default_epoch` (none when that is empty).
pub(super) fn stored_of(
    seq: u64,
    prev: Option<u64>,
    headers: Option<&async_nats::HeaderMap>,
    payload: &bytes::Bytes,
    default_epoch: &str,
) -> Option<Stored> {
    let epoch = headers
        .and_then(|h| h.get(EPOCH_HEADER))
        .map_or(default_epoch, |v| v.as_str());
    let id = StreamPosition::new(epoch, Offset::Seq(seq))?.to_event_id();
    let event = crate::connection::event_of(headers)?;
    Some(Stored {
        seq,
        prev,
        epoch: epoch.to_owned(),
        env: Envelope {
            id,
            event,
            data: payload.clone(),
        },
    })
}

/// How often the broker checks the stream incarnation when nothing else did.
const REVERIFY: Duration = Duration::from_secs(10);

/// The stream incarnation this broker publishes under; the feeds watch it.
pub(crate) struct Epoch {
    current: watch::Sender<String>,
    /// Highest sequence acknowledged under the current epoch: an ack below it comes from a new
    /// incarnation.
    high_water: AtomicU64,
}

impl Epoch {
    fn new(epoch: String) -> Self {
        Epoch {
            current: watch::Sender::new(epoch),
            high_water: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self) -> String {
        self.current.borrow().clone()
    }

    /// Record the epoch of the stream as just seen; `true` when it is a new one.
    pub(crate) fn set(&self, epoch: String) -> bool {
        let changed = self.current.send_if_modified(|current| {
            if *current == epoch {
                return false;
            }
            tracing::warn!(old = %current, new = %epoch, "nats: the stream was created again; ids start a new epoch");
            *current = epoch;
            true
        });
        if changed {
            self.high_water.store(0, Ordering::Release);
        }
        changed
    }

    pub(crate) fn watch(&self) -> watch::Receiver<String> {
        self.current.subscribe()
    }
}

/// JetStream's de-duplication header: a message id seen within the stream's `duplicate_window`
/// is not stored again.
const MSG_ID_HEADER: &str = "Nats-Msg-Id";

pub(crate) struct JetStream {
    /// This broker's own handle, for the feeds' tasks.
    me: Weak<JetStream>,
    conn: Connection,
    js: jetstream::Context,
    /// The stream as this broker creates it when it is missing.
    stream_config: stream::Config,
    epoch: Arc<Epoch>,
    /// The connection generation ([`Connection::generation`]) on which the stream was last
    /// verified: a publish on a later one verifies it first.
    verified_on: AtomicU64,
    history: usize,
    live: Arc<live::Live>,
    /// The stream check and the live feeds' node task.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for JetStream {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl JetStream {
    /// Publish `messages` to `subject` pipelined: every publish leaves in order on the one
    /// connection, then the acks are awaited.
    async fn pipelined(&self, subject: &str, messages: Vec<Message>) -> Result<Vec<EventId>> {
        use async_nats::jetstream::context::PublishErrorKind as K;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !self.conn.connected() {
                return Err(NatsError::NotConnected.into());
            }
            // Reconnected since the stream was last seen: it may be another one now.
            if self.verified_on.load(Ordering::Acquire) < self.conn.generation() {
                self.refresh_stream().await?;
            }
            let epoch = self.epoch.get();
            // Every publish leaves in order on the one connection before any ack is awaited:
            // one round trip for the batch, and the stream stores them in this order.
            let mut pending = Vec::with_capacity(messages.len());
            for message in &messages {
                let mut headers = headers_for(&message.event, (EPOCH_HEADER, &epoch));
                // A generated key is not sent: async-nats does not resend a publish, and the
                // server keeps every message id of its duplicate window.
                if let Some(key) = &message.idempotency_key
                    && !key.is_generated()
                    && !self.stream_config.duplicate_window.is_zero()
                {
                    // The stream de-duplicates by message id across all its subjects: the id
                    // names the topic too, so keys stay scoped to their topic.
                    headers.insert(MSG_ID_HEADER, format!("{subject} {key}").as_str());
                }
                let ack = self
                    .js
                    .publish_with_headers(subject.to_owned(), headers, message.data.clone())
                    .await
                    .map_err(|e| NatsError::Publish(boxed(e)))?;
                pending.push(ack);
            }
            let mut acks = Vec::with_capacity(pending.len());
            for ack in pending {
                acks.push(ack.await);
            }
            // Nothing was stored when every publish found no stream: safe to recreate the
            // stream and try once more.
            if attempt == 1
                && acks
                    .iter()
                    .all(|a| matches!(a, Err(e) if matches!(e.kind(), K::StreamNotFound)))
            {
                self.refresh_stream().await?;
                continue;
            }
            let mut ids = Vec::with_capacity(acks.len());
            for ack in acks {
                let ack = match ack {
                    Ok(ack) => ack,
                    Err(e) => match e.kind() {
                        K::TimedOut | K::BrokenPipe => {
                            return Err(NatsError::Unconfirmed(Some(boxed(e))).into());
                        }
                        _ => return Err(NatsError::Publish(boxed(e)).into()),
                    },
                };
                ids.push(self.id_of(&ack, &epoch).await?);
            }
            return Ok(ids);
        }
    }

    /// The id of an acknowledged publish made under `epoch`.
    async fn id_of(&self, ack: &PublishAck, epoch: &str) -> Result<EventId> {
        if ack.stream != self.stream_name() {
            return Err(NatsError::WrongStream(ack.stream.clone()).into());
        }
        let high = self
            .epoch
            .high_water
            .fetch_max(ack.sequence, Ordering::AcqRel);
        // A duplicate (a repeated idempotency key) answers its first publish's sequence, which
        // is rightly behind the high water.
        if !ack.duplicate && ack.sequence <= high && self.epoch.get() == epoch {
            // Sequences only grow within one stream: this one was created again. The event is
            // stored under the old epoch (its id says so, consistently); later ones get the new
            // one.
            if let Err(e) = self.refresh_stream().await {
                tracing::debug!(error = %e, "nats: stream check after a sequence going back failed");
            }
        }
        StreamPosition::new(epoch, Offset::Seq(ack.sequence))
            .map(|p| p.to_event_id())
            .ok_or_else(|| NatsError::Config("the stream epoch is not alphanumeric").into())
    }
    /// Find or create the stream (warning when an existing one has other settings), and keep
    /// its epoch checked.
    pub(crate) async fn open(conn: Connection, config: &NatsBrokerBuilder) -> Result<Arc<Self>> {
        let mut js = jetstream::new(conn.client.clone());
        js.set_timeout(config.response_timeout);
        let stream_config = setup::stream_config(config);
        let generation = conn.generation();
        let info = setup::ensure_stream(&js, &stream_config).await?;
        setup::report_differences(&info.config, &stream_config);
        let stream = js
            .get_stream_no_info(&stream_config.name)
            .await
            .map_err(|e| NatsError::Stream(boxed(e)))?;
        // Subscribed before the stream's last sequence is read (below, as the watermark), so
        // markers from then on are seen.
        let marks = conn
            .client
            .subscribe(live::live_subject(&live::mark_subject(&config.prefix)))
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        let watermark = lookup::info(&stream, conn.timeout)
            .await?
            .state
            .last_sequence;
        let live = live::Live::new(
            stream,
            config.prefix.clone(),
            watermark,
            generation,
            conn.timeout,
        );
        let this = Arc::new_cyclic(|me| JetStream {
            me: me.clone(),
            history: setup::history_of(&info.config),
            epoch: Arc::new(Epoch::new(epoch_of(&info))),
            verified_on: AtomicU64::new(generation),
            conn,
            js,
            stream_config,
            live,
            tasks: Mutex::new(Vec::new()),
        });
        let refresher = tokio::spawn(refresh(Arc::downgrade(&this), this.conn.events()));
        let feeds = tokio::spawn(this.live.clone().run(
            Arc::downgrade(&this),
            marks,
            this.conn.events(),
            this.epoch.watch(),
        ));
        lock(&this.tasks).extend([refresher, feeds]);
        Ok(this)
    }

    fn stream_name(&self) -> &str {
        &self.stream_config.name
    }

    fn timeout(&self) -> Duration {
        self.conn.timeout
    }

    /// Re-read the stream (creating it again if it vanished) and take its epoch.
    async fn refresh_stream(&self) -> Result<stream::Info> {
        let generation = self.conn.generation();
        let info = setup::ensure_stream(&self.js, &self.stream_config).await?;
        self.epoch.set(epoch_of(&info));
        self.verified_on.fetch_max(generation, Ordering::AcqRel);
        Ok(info)
    }
}

/// Check the stream after every reconnect, and every [`REVERIFY`].
async fn refresh(this: Weak<JetStream>, mut events: broadcast::Receiver<ConnEvent>) {
    let mut every = tokio::time::interval(REVERIFY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(ConnEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = every.tick() => {}
        }
        let Some(this) = this.upgrade() else { return };
        if !this.conn.connected() {
            continue;
        }
        if let Err(e) = this.refresh_stream().await {
            tracing::debug!(error = %e, "nats: stream check failed");
        }
    }
}

#[async_trait]
impl Carrier for JetStream {
    async fn publish_many(&self, subject: String, messages: Vec<Message>) -> Result<Vec<EventId>> {
        self.pipelined(&subject, messages).await
    }

    async fn tail(&self, subject: &str) -> Result<Option<EventId>> {
        let stream = self
            .js
            .get_stream_no_info(self.stream_name())
            .await
            .map_err(|e| NatsError::Read(boxed(e)))?;
        let last = lookup::last_of(&stream, subject, self.timeout()).await?;
        Ok(last.and_then(|m| {
            let epoch = m.headers.get(EPOCH_HEADER)?.as_str().to_owned();
            StreamPosition::new(&epoch, Offset::Seq(m.sequence)).map(|p| p.to_event_id())
        }))
    }

    async fn start_feed(&self, subject: String, fanout: Arc<Fanout>) -> Result<JoinHandle<()>> {
        let me = self
            .me
            .upgrade()
            .ok_or(NatsError::Config("the broker is shutting down"))?;
        self.live.start(&me, subject, fanout).await
    }

    async fn replay(&self, subject: &str, after: &StreamPosition, limit: usize) -> Result<Replay> {
        Ok(
            match replay::read_after(self, subject, after, limit).await? {
                Ok(events) => Replay::Events(events.into_iter().map(|e| e.env).collect()),
                Err(cause) => Replay::Gap(cause),
            },
        )
    }

    fn history(&self) -> Option<usize> {
        Some(self.history)
    }

    fn idempotency(&self) -> Option<Duration> {
        Some(self.stream_config.duplicate_window).filter(|w| !w.is_zero())
    }

    fn epoch(&self) -> String {
        self.epoch.get()
    }

    async fn check(&self) -> Result<()> {
        self.refresh_stream().await.map(|_| ())
    }
}
