//! The [`Broker`] trait: node-to-node pub/sub of serialized events, with history.
//!
//! Backends (memory, Redis, NATS) implement only this trait; everything that is the same for all
//! of them — the local fan-out hub, framing, resume — lives in this crate.
//!
//! # Example
//!
//! Any broker can be used directly, without a [`ChannelManager`](crate::ChannelManager). This one
//! is a minimal, history-less broker written for the example:
//!
//! ```
//! use async_trait::async_trait;
//! use futures_util::StreamExt;
//! use ssehub_core::{Broker, Capabilities, Delivery, Envelope, EventId, GapCause, Message, Replay,
//!     Result, Subscription, Topic};
//! use tokio::sync::broadcast;
//!
//! #[derive(Debug)]
//! struct Tiny { tx: broadcast::Sender<Envelope>, seq: std::sync::atomic::AtomicU64 }
//!
//! #[async_trait]
//! impl Broker for Tiny {
//!     async fn publish(&self, _topic: &Topic, message: Message) -> Result<EventId> {
//!         let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         let id = EventId::parse(&n.to_string())?;
//!         let _ = self.tx.send(Envelope { id: id.clone(), event: message.event, data: message.data });
//!         Ok(id)
//!     }
//!     async fn subscribe(&self, _topic: &Topic) -> Result<Subscription> {
//!         let rx = self.tx.subscribe();
//!         Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
//!             match rx.recv().await {
//!                 Ok(env) => Some((Delivery::Event(env), rx)),
//!                 Err(broadcast::error::RecvError::Lagged(_)) => Some((Delivery::Gap, rx)),
//!                 Err(broadcast::error::RecvError::Closed) => None,
//!             }
//!         })))
//!     }
//!     async fn replay(&self, _topic: &Topic, _after: &EventId, _limit: usize) -> Result<Replay> {
//!         Ok(Replay::Gap(GapCause::Unknown)) // no history kept
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::default()
//!     }
//!     fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
//!         Some(a.as_str().parse::<u64>().ok()?.cmp(&b.as_str().parse::<u64>().ok()?))
//!     }
//!     fn active_subscriptions(&self) -> usize { self.tx.receiver_count() }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
//! let broker = Tiny { tx: broadcast::channel(16).0, seq: Default::default() };
//! let topic = Topic::new("news")?;
//! let mut sub = broker.subscribe(&topic).await?;
//! let id = broker.publish(&topic, Message::new("hello")).await?;
//! match sub.next().await {
//!     Some(Delivery::Event(env)) => assert_eq!(env.id, id),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;

use crate::error::{Error, Result};
use crate::id::{EventId, EventName, Topic};
use crate::idempotency::IdempotencyKey;
use crate::transport::ResetReason;

/// An event on its way to a broker: a name, an already-serialized payload, and the key that
/// makes its publish idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The SSE event name; [`EventName::MESSAGE`] by default.
    pub event: EventName,
    /// The serialized payload (JSON when it comes from a [`ChannelManager`](crate::ChannelManager)).
    pub data: Bytes,
    /// A publish of a key the broker has seen for the same topic within its window
    /// ([`Capabilities::idempotency`]) stores nothing and answers the first one's id. `None`:
    /// every publish stores (a [`ChannelManager`](crate::ChannelManager) always sets one).
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Message {
    /// A `message` event with this payload and no idempotency key.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Message {
            event: EventName::MESSAGE,
            data: data.into(),
            idempotency_key: None,
        }
    }

    /// The same message with this idempotency key.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// The same message with another event name.
    #[must_use]
    pub fn with_event(mut self, event: EventName) -> Self {
        self.event = event;
        self
    }
}

/// An event as a broker delivers it: with the id the broker assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The broker-assigned id; every node sees the same id for the same event.
    pub id: EventId,
    /// The event name.
    pub event: EventName,
    /// The serialized payload, shared by reference count.
    pub data: Bytes,
}

/// One item of a [`Subscription`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A live event, in publish order for its topic.
    Event(Envelope),
    /// Events may have been lost (the broker connection dropped, the node fell behind) and the
    /// backend could not recover them. Every session of the topic is sent a `reset`.
    Gap,
}

/// The answer to [`Broker::replay`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Events published after the given id, oldest first (possibly none); at most the limit
    /// asked for, and when exactly that many, more may follow.
    Events(Vec<Envelope>),
    /// The events after the id cannot be told; the cause says why (it becomes the `reset`'s
    /// reason).
    Gap(GapCause),
}

/// Why [`Broker::replay`] cannot tell the events after an id: [`Replay::Gap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapCause {
    /// The id is older than the history the broker keeps (trimmed by length or by age).
    Trimmed,
    /// The id is from another epoch: the broker, or the topic's history, was restarted without
    /// its data or flushed since.
    EpochChanged,
    /// The id is newer than anything the broker holds for the topic: it lost events it had
    /// acknowledged (a failover to a replica that had not copied them, a restart without
    /// persistence that kept the epoch).
    Lost,
    /// The id cannot be placed: malformed for this backend, or not an event of this topic.
    Unknown,
}

impl GapCause {
    /// The reason of the `reset` a client gets for this gap.
    #[must_use]
    pub fn reset_reason(self) -> ResetReason {
        match self {
            GapCause::Trimmed => ResetReason::HistoryTrimmed,
            GapCause::EpochChanged => ResetReason::EpochChanged,
            GapCause::Lost => ResetReason::DataLost,
            GapCause::Unknown => ResetReason::OutOfWindow,
        }
    }
}

/// A live feed of one topic. Dropping it releases the broker subscription.
pub type Subscription = Pin<Box<dyn Stream<Item = Delivery> + Send + 'static>>;

/// The node-to-node signals of a broker ([`Broker::signals`]).
pub type Signals = Pin<Box<dyn Stream<Item = Bytes> + Send + 'static>>;

/// What a backend promises; tests select cases by it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// How many events per topic the broker keeps for replay; `None` when it keeps none.
    /// Replay can answer events (not a gap) for an id among the last `history` events.
    pub history: Option<usize>,
    /// Whether [`Broker::signal`] reaches the other nodes (so presence is cluster-wide).
    pub presence: bool,
    /// Largest payload `publish` accepts, in bytes.
    pub max_payload: usize,
    /// How long the broker remembers a message's
    /// [`idempotency_key`](Message::idempotency_key) per topic; `None` when it does not.
    pub idempotency: Option<std::time::Duration>,
}

impl Capabilities {
    /// Start from the defaults: no history, no presence, 1 MiB payloads.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set [`Capabilities::history`].
    #[must_use]
    pub fn with_history(mut self, history: Option<usize>) -> Self {
        self.history = history;
        self
    }

    /// Set [`Capabilities::presence`].
    #[must_use]
    pub fn with_presence(mut self, presence: bool) -> Self {
        self.presence = presence;
        self
    }

    /// Set [`Capabilities::max_payload`].
    #[must_use]
    pub fn with_max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload;
        self
    }

    /// Set [`Capabilities::idempotency`].
    #[must_use]
    pub fn with_idempotency(mut self, window: Option<std::time::Duration>) -> Self {
        self.idempotency = window;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            history: None,
            presence: false,
            max_payload: 1024 * 1024,
            idempotency: None,
        }
    }
}

/// Node-to-node pub/sub of already-serialized events.
///
/// # Contract
///
/// - [`publish`](Broker::publish) assigns the event's [`EventId`]; it returns only once the event
///   is accepted (visible to `replay` and on its way to every current subscriber), and returns an
///   error — never `Ok` — when the event may be lost. Payloads larger than
///   [`Capabilities::max_payload`] are refused with [`Error::PayloadTooLarge`](crate::Error).
/// - A message whose [`idempotency_key`](Message::idempotency_key) the broker has stored for
///   the same topic within [`Capabilities::idempotency`] is not stored or delivered again:
///   `publish` answers the first one's id. Keys are scoped to the topic.
/// - [`subscribe`](Broker::subscribe) returns once the subscription is live: every event
///   published after it returns is delivered, in publish order per topic, or a
///   [`Delivery::Gap`] says that some were lost. Topics are isolated: a subscription sees its own
///   topic only. Dropping the stream releases the subscription (see
///   [`active_subscriptions`](Broker::active_subscriptions)).
/// - [`replay`](Broker::replay) answers every event after `after` still in history, oldest first,
///   or [`Replay::Gap`] when `after` is unknown, from another epoch (a restarted or flushed
///   broker), malformed for this backend, or older than the history window, with the
///   [`GapCause`] that tells which. It never silently
///   skips an event. An id equal to the latest event answers `Events(vec![])`.
/// - [`id_order`](Broker::id_order) orders the ids of one topic as they were published.
/// - Nothing a client sends (an id, a topic) makes a backend panic; errors are returned.
///
/// The trait is dyn-compatible; it is implemented for `Arc<B>` and `Box<B>`.
#[async_trait]
pub trait Broker: fmt::Debug + Send + Sync + 'static {
    /// Publish one event to `topic` and return the id the broker gave it.
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId>;

    /// Publish several events to `topic`, in this order, and return their ids in the same
    /// order: what a sequential publisher would get from [`publish`](Broker::publish), without
    /// a broker round trip per event (Redis appends the batch in one script, NATS pipelines the
    /// publishes and then awaits the acknowledgements).
    ///
    /// `Ok` means every event was accepted. An error after some events were accepted is
    /// [`Error::PartlyPublished`] with their ids (the next one may or may not have been stored,
    /// as a failed `publish` may have been); any other error means none is known to be stored.
    /// Payloads are checked before anything is sent. The default publishes one event after the
    /// other.
    async fn publish_many(&self, topic: &Topic, messages: Vec<Message>) -> Result<Vec<EventId>> {
        let max = self.capabilities().max_payload;
        for message in &messages {
            check_payload(message, max)?;
        }
        let mut ids = Vec::with_capacity(messages.len());
        for message in messages {
            match self.publish(topic, message).await {
                Ok(id) => ids.push(id),
                Err(e) => return Err(partly_published(ids, e)),
            }
        }
        Ok(ids)
    }

    /// Subscribe to the live events of `topic`.
    async fn subscribe(&self, topic: &Topic) -> Result<Subscription>;

    /// The events of `topic` published after `after` (at most `limit`, oldest first), or a gap.
    async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> Result<Replay>;

    /// The id of the newest event of `topic` still in history; `None` when it holds none (never
    /// published, expired, or a broker without history). A [`replay`](Broker::replay) after it
    /// answers exactly what is published from now on: a multiplexed stream
    /// ([`crate::multiplex`]) starts a fresh channel's position there, so a reconnect gets the
    /// channel's missed events even when it delivered none before. The default answers `None`.
    async fn tail(&self, topic: &Topic) -> Result<Option<EventId>> {
        let _ = topic;
        Ok(None)
    }

    /// What this broker promises.
    fn capabilities(&self) -> Capabilities;

    /// The publish order of two ids this broker gave for the same topic: `Less` when `a` was
    /// published before `b`. `None` when either id is not one of this broker's (another epoch,
    /// malformed). Resume uses it to drop live events the client already has.
    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering>;

    /// How many subscriptions made by [`subscribe`](Broker::subscribe) are still alive on this
    /// node. Leak tests check it returns to zero.
    fn active_subscriptions(&self) -> usize;

    /// Check the broker end to end (for example publish a probe and see it come back).
    async fn health(&self) -> Result<()> {
        Ok(())
    }

    /// Send a small signal to every node's [`signals`](Broker::signals) stream, this node's
    /// included: not stored, at most once, in no particular order across senders. Presence
    /// travels this way. The default sends nothing (one node is the whole cluster).
    async fn signal(&self, payload: Bytes) -> Result<()> {
        let _ = payload;
        Ok(())
    }

    /// The signals every node sends, for as long as the stream is held; it survives the
    /// broker's reconnects (signals sent meanwhile are lost: presence repeats itself). The
    /// default never yields.
    async fn signals(&self) -> Result<Signals> {
        Ok(Box::pin(futures_util::stream::pending()))
    }
}

macro_rules! forward_broker {
    ($ty:ty) => {
        #[async_trait]
        impl<B: Broker + ?Sized> Broker for $ty {
            async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
                (**self).publish(topic, message).await
            }
            async fn publish_many(
                &self,
                topic: &Topic,
                messages: Vec<Message>,
            ) -> Result<Vec<EventId>> {
                (**self).publish_many(topic, messages).await
            }
            async fn subscribe(&self, topic: &Topic) -> Result<Subscription> {
                (**self).subscribe(topic).await
            }
            async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> Result<Replay> {
                (**self).replay(topic, after, limit).await
            }
            async fn tail(&self, topic: &Topic) -> Result<Option<EventId>> {
                (**self).tail(topic).await
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
                (**self).id_order(a, b)
            }
            fn active_subscriptions(&self) -> usize {
                (**self).active_subscriptions()
            }
            async fn health(&self) -> Result<()> {
                (**self).health().await
            }
            async fn signal(&self, payload: Bytes) -> Result<()> {
                (**self).signal(payload).await
            }
            async fn signals(&self) -> Result<Signals> {
                (**self).signals().await
            }
        }
    };
}

forward_broker!(Arc<B>);
forward_broker!(Box<B>);

/// Refuse a payload over `max` bytes with [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge).
pub fn check_payload(message: &Message, max: usize) -> Result<()> {
    let size = message.data.len();
    if size > max {
        return Err(Error::PayloadTooLarge { size, max });
    }
    Ok(())
}

/// The error of a batch that failed after `published` events were stored: `error` itself when
/// none was, else [`Error::PartlyPublished`] (never nested: the ids add up).
pub fn partly_published(mut published: Vec<EventId>, error: Error) -> Error {
    match error {
        Error::PartlyPublished {
            published: more,
            source,
        } => {
            published.extend(more);
            Error::PartlyPublished { published, source }
        }
        e if published.is_empty() => e,
        e => Error::PartlyPublished {
            published,
            source: Box::new(e),
        },
    }
}
