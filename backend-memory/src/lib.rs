//! In-process broker for ssehub: one server process, no services needed.
//!
//! [`MemoryBroker`] keeps a ring buffer of recent events per topic, so a client that reconnects
//! with its `Last-Event-ID` resumes where it left off. Ids are `<epoch>-<sequence>`; the epoch is
//! random per broker instance, so an id from an earlier process (or another instance) answers a
//! gap, never a wrong replay.
//!
//! # Example
//!
//! ```
//! use ssehub_core::{Broker, Message, Replay, Topic};
//! use ssehub_memory::MemoryBroker;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let broker = MemoryBroker::builder().history(100).build();
//! let topic = Topic::new("discussion:1:comments")?;
//! let first = broker.publish(&topic, Message::new("a")).await?;
//! broker.publish(&topic, Message::new("b")).await?;
//! match broker.replay(&topic, &first, 100).await? {
//!     Replay::Events(events) => assert_eq!(&events[0].data[..], b"b"),
//!     Replay::Gap(_) => unreachable!(),
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use ssehub_core::backend::{
    Fanout, IdempotencyWindow, Offset, StreamPosition, SubscriptionCount, check_payload, lock,
    signal_stream,
};
use ssehub_core::{
    Broker, Capabilities, DEFAULT_IDEMPOTENCY_WINDOW, Delivery, Envelope, EventId, GapCause,
    Message, Replay, Result, Signals, Subscription, Topic,
};
use tokio::sync::broadcast;

/// Builds a [`MemoryBroker`]; every setter documents its default.
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryBrokerBuilder {
    history: usize,
    max_payload: usize,
    history_ttl: Duration,
    subscriber_buffer: usize,
    idempotency_window: Duration,
}

impl Default for MemoryBrokerBuilder {
    fn default() -> Self {
        MemoryBrokerBuilder {
            history: 1024,
            max_payload: 1024 * 1024,
            history_ttl: Duration::from_secs(600),
            subscriber_buffer: 4096,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
        }
    }
}

impl MemoryBrokerBuilder {
    /// Events kept per topic for replay. Default: 1,024. Zero keeps none (resume then always
    /// answers `reset`).
    pub fn history(mut self, events: usize) -> Self {
        self.history = events;
        self
    }

    /// Largest payload accepted, in bytes. Default: 1 MiB.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// How long a topic with no subscriber and no publish keeps its history before it is
    /// dropped (so abandoned topics do not hold memory forever). Default: 10 minutes.
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// Events a subscription may fall behind before it receives a gap. Default: 4,096.
    pub fn subscriber_buffer(mut self, events: usize) -> Self {
        self.subscriber_buffer = events.max(1);
        self
    }

    /// How long a publish's idempotency key is remembered per topic: a repeat within it stores
    /// nothing and answers the first id. Default: 2 minutes. Zero remembers none.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Build the broker with a new random epoch.
    pub fn build(self) -> MemoryBroker {
        let keys = IdempotencyWindow::new(self.idempotency_window);
        MemoryBroker {
            inner: Arc::new(Inner {
                epoch: format!("{:x}", rand::random::<u32>() | 1),
                config: self,
                state: Mutex::new(State {
                    seq: 0,
                    topics: HashMap::new(),
                    last_sweep: Instant::now(),
                    keys,
                }),
                subscriptions: SubscriptionCount::new(),
                signals: broadcast::channel(1024).0,
            }),
        }
    }
}

/// In-process topics with a ring buffer of history each. Cheap to clone (clones share state).
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Random per instance, lowercase hex: ids of another instance never match.
    epoch: String,
    config: MemoryBrokerBuilder,
    state: Mutex<State>,
    subscriptions: SubscriptionCount,
    /// Node-to-node signals between the managers sharing this broker.
    signals: broadcast::Sender<Bytes>,
}

struct State {
    /// Last sequence number given, across all topics.
    seq: u64,
    topics: HashMap<Topic, TopicState>,
    last_sweep: Instant,
    /// The idempotency keys published with recently, and their ids.
    keys: IdempotencyWindow,
}

struct TopicState {
    history: VecDeque<(u64, Envelope)>,
    /// Every event of this topic after `floor` is still in `history`.
    floor: u64,
    /// Live subscriptions; each has its own queue, which grows only as needed.
    fanout: Arc<Fanout>,
    touched: Instant,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("epoch", &self.inner.epoch)
            .field("history", &self.inner.config.history)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// A broker with the default settings (see [`MemoryBrokerBuilder`]).
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Start building a broker.
    pub fn builder() -> MemoryBrokerBuilder {
        MemoryBrokerBuilder::default()
    }

    /// Topics currently held (with history or subscribers).
    #[must_use]
    pub fn topic_count(&self) -> usize {
        self.lock().topics.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn position(&self, seq: u64) -> Option<StreamPosition> {
        StreamPosition::new(&self.inner.epoch, Offset::Seq(seq))
    }

    /// The sequence number of one of this broker's ids; `None` for any other id.
    fn seq_of(&self, id: &EventId) -> Option<u64> {
        let pos = StreamPosition::from_event_id(id)?;
        match pos.offset() {
            Offset::Seq(seq) if pos.epoch() == self.inner.epoch => Some(seq),
            _ => None,
        }
    }

    /// Drop topics that have no subscriber and were not touched for the TTL (at most once per
    /// quarter TTL, so publishing stays O(1) amortized).
    fn sweep(&self, state: &mut State, now: Instant) {
        let ttl = self.inner.config.history_ttl;
        if now.duration_since(state.last_sweep) < ttl / 4 {
            return;
        }
        state.last_sweep = now;
        state
            .topics
            .retain(|_, t| !t.fanout.is_empty() || now.duration_since(t.touched) < ttl);
    }

    fn topic<'a>(&self, state: &'a mut State, topic: &Topic, now: Instant) -> &'a mut TopicState {
        let seq = state.seq;
        let buffer = self.inner.config.subscriber_buffer;
        let t = state
            .topics
            .entry(topic.clone())
            .or_insert_with(|| TopicState {
                history: VecDeque::new(),
                floor: seq,
                fanout: Fanout::new(buffer),
                touched: now,
            });
        t.touched = now;
        t
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        check_payload(&message, self.inner.config.max_payload)?;
        let now = Instant::now();
        let history = self.inner.config.history;
        let mut state = self.lock();
        self.sweep(&mut state, now);
        // A generated key guards against a client library's resends; in process nothing
        // resends, so it is not remembered (it would cost memory per publish).
        let key = message
            .idempotency_key
            .as_ref()
            .filter(|k| !k.is_generated());
        if let Some(key) = key
            && let Some(id) = state.keys.get(topic.as_str(), key)
        {
            return Ok(id);
        }
        state.seq += 1;
        let seq = state.seq;
        let Some(pos) = self.position(seq) else {
            unreachable!("the epoch is hex digits")
        };
        let env = Envelope {
            id: pos.to_event_id(),
            event: message.event,
            data: message.data,
        };
        let t = self.topic(&mut state, topic, now);
        if history > 0 {
            if t.history.len() == history
                && let Some((old, _)) = t.history.pop_front()
            {
                t.floor = old;
            }
            t.history.push_back((seq, env.clone()));
        } else {
            t.floor = seq;
        }
        t.fanout.send(Delivery::Event(env.clone()));
        if let Some(key) = key {
            state.keys.insert(topic.as_str(), key, env.id.clone());
        }
        Ok(env.id)
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription> {
        let now = Instant::now();
        let mut state = self.lock();
        self.sweep(&mut state, now);
        let fanout = self.topic(&mut state, topic, now).fanout.clone();
        let leave = Leave {
            inner: Arc::downgrade(&self.inner),
            topic: topic.clone(),
        };
        Ok(fanout.subscribe(&self.inner.subscriptions, leave))
    }

    async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> Result<Replay> {
        let Some(after) = self.seq_of(after) else {
            let cause = match StreamPosition::from_event_id(after) {
                Some(pos) if matches!(pos.offset(), Offset::Seq(_)) => GapCause::EpochChanged,
                _ => GapCause::Unknown,
            };
            return Ok(Replay::Gap(cause));
        };
        let state = self.lock();
        if after > state.seq {
            return Ok(Replay::Gap(GapCause::Lost));
        }
        // A topic forgotten after its TTL, or history off: what came after `after` is gone.
        let Some(t) = state.topics.get(topic) else {
            return Ok(Replay::Gap(GapCause::Trimmed));
        };
        if after < t.floor || self.inner.config.history == 0 {
            return Ok(Replay::Gap(GapCause::Trimmed));
        }
        let start = t.history.partition_point(|(s, _)| *s <= after);
        Ok(Replay::Events(
            t.history
                .range(start..)
                .take(limit)
                .map(|(_, e)| e.clone())
                .collect(),
        ))
    }

    async fn tail(&self, topic: &Topic) -> Result<Option<EventId>> {
        let state = self.lock();
        Ok(state
            .topics
            .get(topic)
            .and_then(|t| t.history.back())
            .map(|(_, e)| e.id.clone()))
    }

    fn capabilities(&self) -> Capabilities {
        let history = self.inner.config.history;
        Capabilities::new()
            .with_history((history > 0).then_some(history))
            .with_max_payload(self.inner.config.max_payload)
            .with_presence(true)
            .with_idempotency(Some(self.inner.config.idempotency_window).filter(|w| !w.is_zero()))
    }

    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
        Some(self.seq_of(a)?.cmp(&self.seq_of(b)?))
    }

    fn active_subscriptions(&self) -> usize {
        self.inner.subscriptions.get()
    }

    async fn signal(&self, payload: Bytes) -> Result<()> {
        // Nobody listening is no error: signals are at most once.
        let _ = self.inner.signals.send(payload);
        Ok(())
    }

    async fn signals(&self) -> Result<Signals> {
        Ok(signal_stream(self.inner.signals.subscribe()))
    }
}

/// Held by each subscription stream: when the last subscription of a topic without history
/// goes, the topic goes too (so abandoned channels leave nothing behind).
struct Leave {
    inner: Weak<Inner>,
    topic: Topic,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let mut state = lock(&inner.state);
        if state
            .topics
            .get(&self.topic)
            .is_some_and(|t| t.fanout.is_empty() && t.history.is_empty())
        {
            state.topics.remove(&self.topic);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The broker is gone: end every live subscription's stream.
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in state.topics.values() {
            t.fanout.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_epoch_and_sequence() {
        let b = MemoryBroker::new();
        let t = Topic::new("a").unwrap();
        let id = b.publish(&t, Message::new("x")).await.unwrap();
        assert_eq!(b.seq_of(&id), Some(1));
        let other = MemoryBroker::new();
        assert_eq!(other.seq_of(&id), None);
    }

    #[tokio::test]
    async fn topics_without_history_go_with_their_last_subscription() {
        let b = MemoryBroker::new();
        for i in 0..1000 {
            let t = Topic::new(format!("t{i}")).unwrap();
            drop(b.subscribe(&t).await.unwrap());
        }
        assert_eq!(b.topic_count(), 0);
        assert_eq!(b.active_subscriptions(), 0);
    }

    #[tokio::test]
    async fn abandoned_topics_are_dropped_after_the_ttl() {
        let b = MemoryBroker::builder().history_ttl(Duration::ZERO).build();
        for i in 0..100 {
            let t = Topic::new(format!("t{i}")).unwrap();
            b.publish(&t, Message::new("x")).await.unwrap();
        }
        assert!(b.topic_count() <= 1);
    }

    #[tokio::test]
    async fn an_id_from_an_evicted_topic_is_a_gap() {
        let b = MemoryBroker::builder().history_ttl(Duration::ZERO).build();
        let t = Topic::new("t").unwrap();
        let old = b.publish(&t, Message::new("x")).await.unwrap();
        b.publish(&Topic::new("u").unwrap(), Message::new("y"))
            .await
            .unwrap();
        b.publish(&t, Message::new("z")).await.unwrap();
        assert_eq!(
            b.replay(&t, &old, usize::MAX).await.unwrap(),
            Replay::Gap(GapCause::Trimmed)
        );
    }
}

// The README's Rust code blocks (the crate's page on crates.io) compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
