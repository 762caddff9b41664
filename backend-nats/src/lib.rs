//! NATS backend for ssehub: JetStream history with stream-sequence ids, or core NATS only.
//!
//! [`NatsBroker`] keeps one NATS connection per broker. In the default
//! [`Mode::JetStream`] every topic is a subject of one JetStream stream (`<prefix>.>`) that keeps
//! the last `history` events per subject, so browsers resume after a reconnect; the event id is
//! `<epoch>-<stream sequence>`, where the epoch identifies the stream incarnation (its creation
//! time), so an id from a deleted and recreated stream answers a gap, never a wrong replay. In
//! [`Mode::Core`] events go over core NATS only: no history, and a dropped connection yields a
//! [`Delivery::Gap`](ssehub_core::Delivery::Gap) so sessions are sent a `reset`; a publish is
//! `Ok` once the server has routed the event (see [`Mode::Core`] for exactly what that covers).
//!
//! # Bounds
//!
//! The stream keeps `history` events per topic, for at most `history_ttl` (default 24 hours), in
//! at most `max_bytes` (default 1 GiB), dropping the oldest past either. Replays read with a
//! temporary consumer that is deleted when done. A look-up the server cannot answer now (a
//! timeout, a 503 while a stream leader is elected) is retried a few times and then reported as
//! a temporary error, never as a gap.
//!
//! Supported servers: nats-server 2.9 and newer with JetStream enabled (`-js`) for
//! [`Mode::JetStream`]; any nats-server 2.x for [`Mode::Core`]. Tested against nats-server
//! 2.9.10 (Debian). Uses only APIs present in 2.9: stream create/info (with a subject filter),
//! republish, publish with ack, `STREAM.MSG.GET` by sequence and last-by-subject, ephemeral
//! ordered pull consumers, and named pull consumers with consumer delete (`direct_get` is not used: it needs
//! `allow_direct`, which a 2.9 stream does not set by default).
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use ssehub_core::{Broker, Delivery, Message, Topic};
//! use ssehub_nats::NatsBroker;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let broker = NatsBroker::connect("nats://127.0.0.1:4222").await?;
//! let topic = Topic::new("discussion:1:comments")?;
//! let mut sub = broker.subscribe(&topic).await?;
//! let id = broker.publish(&topic, Message::new("hello")).await?;
//! match sub.next().await {
//!     Some(Delivery::Event(env)) => assert_eq!(env.id, id),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # How live events learn their id, and what a topic costs
//!
//! The stream sequence is only known once the server stored the event, so the stream
//! *republishes* every message it stores to `_ssehub_live.<subject>` with headers naming its
//! sequence and the previous sequence of the same subject (the `republish` setting the broker
//! gives the stream; nats-server 2.9 cannot add it to a stream made without it, 2.10 can: the
//! broker says so at start). Each live topic on a node is one **core subscription** to that
//! subject: interest-routed by the server, no JetStream consumer. A message whose previous
//! sequence is not the last one delivered shows a hole (a dropped connection, a client-side
//! drop), filled from the stream before it is delivered, or a
//! [`Delivery::Gap`](ssehub_core::Delivery::Gap) when it was trimmed.
//!
//! After a reconnect the node reads the stream **once**, from its *watermark* (the newest
//! marker it received: a message some node of the fleet publishes every 5 s while it has live
//! topics), with one ordered consumer over all of the prefix's subjects, and hands each topic what
//! it missed: a bounded number of JetStream API calls however many topics are live, not one
//! burst per topic.
//!
//! | | server-side objects | API calls |
//! |---|---|---|
//! | per live topic and node | one core subscription | one look-up when it starts (sent with the SUB: one round trip) |
//! | per node | one core subscription (markers) | at most one marker every 5 s for the whole fleet |
//! | per reconnect | one ordered consumer while it scans, deleted after | 3 stream infos + the scan's pulls, plus one look-up per topic that got events meanwhile and holds a full history |
//! | per hole | one replay consumer, deleted after | a replay |
//! | per client replay | one replay consumer, deleted after | a replay |
//!
//! Measured (`backend-nats/tests/many_topics.rs`, one node, 2 cores): 10,000 topics subscribed
//! with **0** JetStream consumers, and recovered after a server restart or a cut-off with no
//! event lost or repeated.

//! # Modules
//!
//! `builder` (settings), `connection` (the one connection, its events, headers), `carrier`
//! (the internal trait of the two modes), `jetstream` (stream, live feeds, replay), `core_nats`,
//! `subject` (topic ↔ subject escaping), `error`. Ids, the local fan-out, backoff
//! and the payload limit come from [`ssehub_core::backend`].

#![forbid(unsafe_code)]

mod builder;
mod carrier;
mod connection;
mod core_nats;
mod error;
mod jetstream;
mod subject;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use ssehub_core::backend::{
    Fanout, StreamPosition, SubscriptionCount, check_payload, lock, node_id,
};
use ssehub_core::{
    Broker, Capabilities, Error, EventId, GapCause, Message, Replay, Result, Signals, Subscription,
    Topic,
};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

pub use async_nats;
pub use builder::{Mode, NatsBrokerBuilder};

use crate::carrier::Carrier;
use crate::connection::Connection;
use crate::core_nats::CoreNats;
use crate::error::{NatsError, boxed};
use crate::jetstream::JetStream;
use crate::subject::topic_subject;

/// Bytes kept free for headers below the server's `max_payload` (which counts headers too).
const HEADER_RESERVE: usize = 1024;

/// A NATS-backed [`Broker`]. Cheap to clone (clones share the connection and subscriptions).
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsBrokerBuilder,
    conn: Connection,
    carrier: Arc<dyn Carrier>,
    max_payload: usize,
    /// Random id of this broker instance (the core-mode id epoch).
    node: String,
    topics: Mutex<HashMap<Topic, Weak<TopicShared>>>,
    subscriptions: SubscriptionCount,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("config", &self.inner.config)
            .field("node", &self.inner.node)
            .field("history", &self.inner.carrier.history())
            .field("max_payload", &self.inner.max_payload)
            .finish_non_exhaustive()
    }
}

/// One live topic on this node: one NATS feed handed to every local subscription. Held by each
/// subscription stream; the last one to go stops the feed.
struct TopicShared {
    topic: Topic,
    fanout: Arc<Fanout>,
    ready: OnceCell<()>,
    task: Mutex<Option<JoinHandle<()>>>,
    broker: Weak<Inner>,
}

impl Drop for TopicShared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        if let Some(inner) = self.broker.upgrade() {
            let mut topics = lock(&inner.topics);
            if topics
                .get(&self.topic)
                .is_some_and(|w| w.strong_count() == 0)
            {
                topics.remove(&self.topic);
            }
        }
    }
}

impl NatsBroker {
    /// Connect to `url` with the defaults (JetStream mode, prefix `ssehub`; see
    /// [`NatsBrokerBuilder`]).
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// Start configuring a broker that connects to `url`; [`NatsBrokerBuilder::build`]
    /// connects.
    pub fn builder(url: impl Into<String>) -> NatsBrokerBuilder {
        NatsBrokerBuilder::new(url)
    }

    /// Connect with checked settings.
    async fn open(config: NatsBrokerBuilder) -> Result<Self> {
        let conn = Connection::open(&config).await?;
        // 0 would be a server that sent no INFO yet (`open` waits for it): no limit of its own.
        let server_max = match conn.client.server_info().max_payload {
            0 => usize::MAX,
            n => n.saturating_sub(HEADER_RESERVE),
        };
        let max_payload = config.max_payload.min(server_max);
        let node = node_id();
        let carrier: Arc<dyn Carrier> = match config.mode {
            Mode::JetStream => JetStream::open(conn.clone(), &config).await?,
            Mode::Core => Arc::new(
                CoreNats::new(conn.clone(), node.clone(), config.idempotency_window).await?,
            ),
        };
        let inner = Arc::new(Inner {
            config,
            conn,
            carrier,
            max_payload,
            node,
            topics: Mutex::new(HashMap::new()),
            subscriptions: SubscriptionCount::new(),
            tasks: Mutex::new(Vec::new()),
        });
        Ok(NatsBroker { inner })
    }

    /// The underlying client (one connection per broker).
    #[must_use]
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.conn.client
    }

    /// The mode this broker runs in.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.inner.config.mode
    }

    /// The NATS subject a topic maps to (`<prefix>.<escaped part>…`).
    #[must_use]
    pub fn subject_for(&self, topic: &Topic) -> String {
        topic_subject(&self.inner.config.prefix, topic)
    }

    /// The subject of the signals between nodes (presence): outside the stream's subjects, so
    /// never stored.
    fn signal_subject(&self) -> String {
        format!("_ssehub_signals.{}", self.inner.config.prefix)
    }

    /// The current epoch (JetStream: of the stream incarnation; core: of this broker).
    #[must_use]
    pub fn epoch(&self) -> String {
        self.inner.carrier.epoch()
    }
}

/// The most events [`NatsBroker`]'s `publish_many` has in flight at once.
pub const MAX_BATCH_EVENTS: usize = 256;

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        check_payload(&message, self.inner.max_payload)?;
        let subject = self.subject_for(topic);
        self.inner.carrier.publish(subject, message).await
    }

    /// Core mode pipelines the batch (the publishes leave in order, then one confirmation round
    /// trip), at most [`MAX_BATCH_EVENTS`] events at once. JetStream mode publishes the events
    /// one by one for now, each acknowledged before the next: with the batch pipelined, this
    /// node's live feed was seen to skip events of the burst.
    async fn publish_many(&self, topic: &Topic, messages: Vec<Message>) -> Result<Vec<EventId>> {
        for message in &messages {
            check_payload(message, self.inner.max_payload)?;
        }
        let subject = self.subject_for(topic);
        let mut ids = Vec::with_capacity(messages.len());
        for batch in ssehub_core::backend::batches(&messages, MAX_BATCH_EVENTS, usize::MAX) {
            match self
                .inner
                .carrier
                .publish_many(subject.clone(), batch.to_vec())
                .await
            {
                Ok(more) => ids.extend(more),
                Err(e) => return Err(ssehub_core::backend::partly_published(ids, e)),
            }
        }
        Ok(ids)
    }

    async fn tail(&self, topic: &Topic) -> Result<Option<EventId>> {
        self.inner.carrier.tail(&self.subject_for(topic)).await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription> {
        let inner = &self.inner;
        let (shared, subscription) = {
            let mut topics = lock(&inner.topics);
            let shared = match topics.get(topic).and_then(Weak::upgrade) {
                Some(shared) => shared,
                None => {
                    let shared = Arc::new(TopicShared {
                        topic: topic.clone(),
                        fanout: Fanout::new(inner.config.subscriber_buffer),
                        ready: OnceCell::new(),
                        task: Mutex::new(None),
                        broker: Arc::downgrade(inner),
                    });
                    topics.insert(topic.clone(), Arc::downgrade(&shared));
                    shared
                }
            };
            // Joined before the feed starts, so nothing it sends is missed.
            let subscription = shared
                .fanout
                .subscribe(&inner.subscriptions, shared.clone());
            (shared, subscription)
        };
        shared
            .ready
            .get_or_try_init(|| async {
                let subject = self.subject_for(topic);
                let task = inner
                    .carrier
                    .start_feed(subject, shared.fanout.clone())
                    .await?;
                *lock(&shared.task) = Some(task);
                Ok::<(), Error>(())
            })
            .await?;
        Ok(subscription)
    }

    async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> Result<Replay> {
        let Some(after) = StreamPosition::from_event_id(after) else {
            return Ok(Replay::Gap(GapCause::Unknown));
        };
        let subject = self.subject_for(topic);
        self.inner.carrier.replay(&subject, &after, limit).await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_history(self.inner.carrier.history())
            .with_max_payload(self.inner.max_payload)
            .with_presence(true)
            .with_idempotency(self.inner.carrier.idempotency())
    }

    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
        StreamPosition::order_ids(a, b)
    }

    fn active_subscriptions(&self) -> usize {
        self.inner.subscriptions.get()
    }

    async fn signal(&self, payload: Bytes) -> Result<()> {
        let client = &self.inner.conn.client;
        client
            .publish(self.signal_subject(), payload)
            .await
            .map_err(|e| NatsError::Publish(boxed(e)))?;
        Ok(())
    }

    async fn signals(&self) -> Result<Signals> {
        // A core subscription: async-nats subscribes it again after every reconnect.
        let sub = self
            .inner
            .conn
            .client
            .subscribe(self.signal_subject())
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        Ok(Box::pin(sub.map(|msg| msg.payload)))
    }

    async fn health(&self) -> Result<()> {
        let inner = &self.inner;
        if !inner.conn.connected() {
            return Err(NatsError::NotConnected.into());
        }
        let probe = async {
            inner.conn.round_trip().await?;
            inner.carrier.check().await
        };
        tokio::time::timeout(inner.config.health_timeout, probe)
            .await
            .map_err(|_| Error::from(NatsError::ProbeTimeout))?
    }
}

// The README's Rust code blocks (the crate's page on crates.io) compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
