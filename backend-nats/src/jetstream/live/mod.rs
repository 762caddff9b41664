//! Live delivery in JetStream mode: core subscriptions on the stream's republished messages, no
//! consumer per topic.
//!
//! # Design
//!
//! The stream republishes every message it stores (its `republish` setting) from `<prefix>.…` to
//! `_ssehub_live.<prefix>.…`, adding headers that name its stream sequence (`Nats-Sequence`) and
//! the sequence of the previous message of the same subject (`Nats-Last-Sequence`). A node
//! subscribes to the republished subject of each live topic with an ordinary core subscription,
//! which the server routes by interest and which costs no JetStream object. The event id is still
//! `<epoch>-<stream sequence>`, so a replay starts exactly after it.
//!
//! Each topic's feed knows the sequence of the last event it delivered (`last`). A message whose
//! previous sequence is `last` is delivered; one whose previous sequence is not shows a hole (a
//! message the client dropped, a disconnect), filled by a replay from `last` before it is
//! delivered. A fill that finds `last` trimmed sends a gap.
//!
//! ## Reconnects: one scan, not one look-up per topic
//!
//! What a topic missed while the connection was down shows by itself only when its next message
//! arrives. To recover every topic at once after a reconnect, the node reads the stream once,
//! from its *watermark* to the stream's end, with one ordered consumer over `<prefix>.>`, and
//! hands each live topic its messages. The watermark is the sequence of the newest *marker* the
//! node received: a message on `<prefix>.~mark` (a subject no topic maps to) that some node
//! publishes every [`MARK_EVERY`] while it has live topics and has seen no marker meanwhile. The
//! stream republishes in sequence order on one path and the server sends a connection's messages
//! in order, so every message older than a marker the node received was received before it.
//! Before the first marker, the watermark is the stream's last sequence when the broker opened.
//!
//! After the scan, one stream info with per-subject counts tells whether messages the scan did
//! not see were trimmed: none were when the stream still holds the sequence after the watermark
//! and the topic holds fewer than `history` messages; otherwise the topic's own last delivered
//! message must still be stored (one look-up for that topic), or it gets a gap.
//!
//! # Costs
//!
//! - **Per topic and node:** one core subscription (a SUB; no server-side JetStream state). A new
//!   topic costs one round trip: the SUB and the look-up of the topic's last message travel
//!   together, the reply arrives after the server registered the SUB.
//! - **Per node:** one core subscription to the markers; at most one marker published every
//!   [`MARK_EVERY`] by the whole fleet (a node that saw one from another node publishes none).
//! - **Per reconnect:** two stream infos, one stream info with subject counts, one ordered
//!   consumer reading the messages stored since the watermark (about [`MARK_EVERY`] plus the
//!   outage of traffic), and one look-up per topic that both received events meanwhile and holds
//!   a full history. A scan longer than [`SCAN_LIMIT`] messages sends every topic a gap instead.
//! - **Per hole** (a dropped message noticed on the next one): one replay (a temporary consumer,
//!   deleted when done).
//! - A client-side slow-consumer drop (the subscription's buffer overflowed) cannot be told from
//!   the watermark: every topic gets a gap.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::Subscriber;
use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use ssehub_core::Result;
use ssehub_core::backend::{Backoff, Fanout, lock};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio::time::Instant;

use super::lookup::{self, StreamHandle};
use super::{EPOCH_HEADER, JetStream, Stored, epoch_of, stored_of};
use crate::connection::ConnEvent;
use crate::error::{NatsError, boxed};

mod feed;

use feed::TopicFeed;

/// Root of the subjects the stream republishes to.
pub(crate) const LIVE_ROOT: &str = "_ssehub_live";
/// The last token of the marker subject: `~` followed by a non-hex letter, which no escaped topic
/// part is.
const MARK_TOKEN: &str = "~mark";
/// How often the fleet publishes a marker while nodes have live topics.
pub(crate) const MARK_EVERY: Duration = Duration::from_secs(5);
/// The most messages a reconnect scans; beyond it every topic gets a gap.
const SCAN_LIMIT: u64 = 200_000;
/// Look-ups and fills at once across the node's topics.
const CONCURRENT_READS: usize = 16;

/// The subject the stream republishes `subject` to.
pub(crate) fn live_subject(subject: &str) -> String {
    format!("{LIVE_ROOT}.{subject}")
}

/// The subject of the markers under `prefix`.
pub(crate) fn mark_subject(prefix: &str) -> String {
    format!("{prefix}.{MARK_TOKEN}")
}

/// A republished message: its sequence and the previous one of its subject from the headers the
/// stream adds.
fn republished(msg: &async_nats::Message) -> Option<Stored> {
    let headers = msg.headers.as_ref()?;
    let number = |name: &str| headers.get(name)?.as_str().parse::<u64>().ok();
    let seq = number("Nats-Sequence")?;
    let prev = number("Nats-Last-Sequence")?;
    stored_of(seq, Some(prev), Some(headers), &msg.payload, "")
}

/// What the reconnect scan found about a topic's events that it did not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing was trimmed before the scan read it.
    Intact,
    /// Messages may have been trimmed, unless the feed's last event is still stored.
    Verify,
    /// Events may have been lost: a gap comes first.
    Gap,
}

/// What the node tells a topic's feed.
#[derive(Debug)]
enum Control {
    /// The connection dropped: queue holes until the scan says what was missed.
    Hold,
    /// The scan is over: the topic's messages it read, in order, and what it could tell of the
    /// rest.
    Recovered { events: Vec<Stored>, check: Check },
    /// The stream was created again: this is its epoch.
    Epoch(String),
    /// Events were lost (a slow-consumer drop).
    Gap,
}

/// A scan that told nothing: every topic gets a gap.
fn unknown() -> Control {
    Control::Recovered {
        events: Vec::new(),
        check: Check::Gap,
    }
}

/// The live feeds of one broker: which topics this node holds, and the watermark.
pub(super) struct Live {
    stream: StreamHandle,
    prefix: String,
    topics: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    /// Every message of a live topic older than this was received (see the module docs).
    watermark: AtomicU64,
    /// When the last marker arrived.
    marked_at: Mutex<Instant>,
    /// The connection generation the watermark is about: a marker that arrives on a later
    /// connection, before the reconnect scan, says nothing of what the outage lost.
    recovered_on: AtomicU64,
    reads: Semaphore,
    timeout: Duration,
}

impl Live {
    pub(super) fn new(
        stream: StreamHandle,
        prefix: String,
        watermark: u64,
        generation: u64,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Live {
            stream,
            prefix,
            topics: Mutex::new(HashMap::new()),
            watermark: AtomicU64::new(watermark),
            marked_at: Mutex::new(Instant::now()),
            recovered_on: AtomicU64::new(generation),
            reads: Semaphore::new(CONCURRENT_READS),
            timeout,
        })
    }

    fn tell_all(&self, control: impl Fn() -> Control) {
        for tx in lock(&self.topics).values() {
            let _ = tx.send(control());
        }
    }

    /// Start the feed of `subject` into `fanout`: subscribe, then stand on the topic's last
    /// message. Returns once the server has registered the subscription.
    pub(super) async fn start(
        self: &Arc<Self>,
        js: &Arc<JetStream>,
        subject: String,
        fanout: Arc<Fanout>,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let sub = js
            .conn
            .client
            .subscribe(live_subject(&subject))
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        // The look-up leaves after the SUB on the same connection: its reply means the server
        // registered the subscription, and every message stored after the one it names reaches us.
        let last = lookup::last_of(&self.stream, &subject, self.timeout).await?;
        let (epoch, last) = match last {
            Some(m) => {
                let epoch = m
                    .headers
                    .get(EPOCH_HEADER)
                    .map_or_else(|| js.epoch.get(), |v| v.as_str().to_owned());
                (epoch, m.sequence)
            }
            None => (js.epoch.get(), 0),
        };
        let (tx, control) = mpsc::unbounded_channel();
        lock(&self.topics).insert(subject.clone(), tx.clone());
        let feed = TopicFeed {
            registration: Registration {
                live: Arc::downgrade(self),
                subject,
                tx,
            },
            js: Arc::downgrade(js),
            fanout,
            epoch,
            last,
            held: false,
            resync: false,
            pending: VecDeque::new(),
        };
        Ok(tokio::spawn(feed.run(sub, control)))
    }

    /// The node's task: markers, reconnects, new stream incarnations.
    pub(super) async fn run(
        self: Arc<Self>,
        js: Weak<JetStream>,
        mut marks: Subscriber,
        mut events: broadcast::Receiver<ConnEvent>,
        mut epochs: watch::Receiver<String>,
    ) {
        let mut tick = tokio::time::interval(MARK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                mark = marks.next() => {
                    let Some(mark) = mark else { return };
                    let Some(js) = js.upgrade() else { return };
                    if js.conn.generation() != self.recovered_on.load(Ordering::Acquire) {
                        continue;
                    }
                    if let Some(seq) = mark
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Sequence"))
                        .and_then(|v| v.as_str().parse::<u64>().ok())
                    {
                        self.watermark.fetch_max(seq, Ordering::AcqRel);
                        *lock(&self.marked_at) = Instant::now();
                    }
                }
                _ = tick.tick() => {
                    let Some(js) = js.upgrade() else { return };
                    // A reconnect whose `Connected` event never reached us (the client library
                    // drops events when its own queue is full): the connection's generation
                    // says so. Recovery never waits on an event that can be lost.
                    if js.conn.connected()
                        && js.conn.generation() != self.recovered_on.load(Ordering::Acquire)
                    {
                        tracing::debug!("nats: a reconnect seen by its generation; scanning");
                        self.tell_all(|| Control::Hold);
                        self.recover(&js).await;
                        continue;
                    }
                    let due = lock(&self.marked_at).elapsed() >= MARK_EVERY;
                    if due && !lock(&self.topics).is_empty() {
                        self.mark(&js).await;
                    }
                }
                changed = epochs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let epoch = epochs.borrow_and_update().clone();
                    // A new stream: its sequences start again, and every feed starts over.
                    self.watermark.store(0, Ordering::Release);
                    self.tell_all(|| Control::Epoch(epoch.clone()));
                }
                event = events.recv() => match event {
                    Ok(ConnEvent::Disconnected) => self.tell_all(|| Control::Hold),
                    Ok(ConnEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.tell_all(|| Control::Hold);
                        let Some(js) = js.upgrade() else { return };
                        self.recover(&js).await;
                    }
                    Ok(ConnEvent::SlowConsumer) => {
                        tracing::warn!("nats: the client dropped messages (slow consumer); live topics get a reset");
                        self.tell_all(|| Control::Gap);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Publish a marker (its ack is not awaited: the marker is only useful once it comes back).
    async fn mark(&self, js: &JetStream) {
        *lock(&self.marked_at) = Instant::now();
        if let Err(e) = js
            .js
            .publish(mark_subject(&self.prefix), bytes::Bytes::new())
            .await
        {
            tracing::debug!(error = %e, "nats: publishing a marker failed");
        }
    }

    /// After a reconnect: scan what every live topic missed, trying again while the server cannot
    /// answer (5 attempts, then a reset for every live topic); each topic resumes afterwards.
    async fn recover(&self, js: &JetStream) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1.. {
            if !js.conn.connected() {
                return; // the next `Connected` starts again
            }
            match self.scan(js).await {
                Ok(()) => return,
                Err(e) if attempt < 5 => {
                    tracing::debug!(error = %e, "nats: the reconnect scan failed; trying again");
                    backoff.wait().await;
                }
                Err(e) => {
                    // The budget is spent: a reset for every live topic, and this connection
                    // counts as recovered (the tick does not scan it again).
                    tracing::warn!(error = %e, "nats: the reconnect scan failed; live topics get a reset");
                    self.tell_all(unknown);
                    self.recovered_on
                        .store(js.conn.generation(), Ordering::Release);
                    return;
                }
            }
        }
    }

    async fn scan(&self, js: &JetStream) -> Result<()> {
        let generation = js.conn.generation();
        let from = self.watermark.load(Ordering::Acquire) + 1;
        let info = lookup::info(&self.stream, self.timeout).await?;
        if js.epoch.set(epoch_of(&info)) {
            // A new stream: the epoch watch sends every feed a gap.
            self.watermark.store(0, Ordering::Release);
            self.recovered_on.store(generation, Ordering::Release);
            self.tell_all(|| Control::Recovered {
                events: Vec::new(),
                check: Check::Intact,
            });
            return Ok(());
        }
        let end = info.state.last_sequence;
        if end >= from && end - from >= SCAN_LIMIT {
            tracing::warn!(
                from,
                end,
                "nats: too much was published during the outage to scan; live topics get a reset"
            );
            self.watermark.fetch_max(end, Ordering::AcqRel);
            self.recovered_on.store(generation, Ordering::Release);
            self.tell_all(unknown);
            return Ok(());
        }
        let live: Vec<String> = lock(&self.topics).keys().cloned().collect();
        let mut found: HashMap<String, Vec<Stored>> = HashMap::new();
        if end >= from && !live.is_empty() {
            let wanted: std::collections::HashSet<&str> = live.iter().map(String::as_str).collect();
            let consumer = self
                .stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: format!("{}.>", self.prefix),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| NatsError::Read(boxed(e)))?;
            let name = consumer.cached_info().name.clone();
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| NatsError::Read(boxed(e)))?;
            let deadline = Instant::now() + self.timeout * 4;
            loop {
                let msg = match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(Some(Ok(msg))) => msg,
                    Ok(Some(Err(e))) => return Err(NatsError::Read(boxed(e)).into()),
                    Ok(None) | Err(_) => {
                        return Err(NatsError::ReadTimeout("reconnect scan").into());
                    }
                };
                let seq = msg.info().map_err(NatsError::Read)?.stream_sequence;
                if wanted.contains(msg.subject.as_str())
                    && let Some(stored) =
                        stored_of(seq, None, msg.headers.as_ref(), &msg.payload, "")
                {
                    found
                        .entry(msg.subject.to_string())
                        .or_default()
                        .push(stored);
                }
                if seq >= end {
                    break;
                }
            }
            drop(messages);
            // Not left to the server's inactivity clean-up: one scan consumer at a time.
            if let Err(e) = self.stream.delete_consumer(&name).await {
                tracing::debug!(error = %e, "nats: deleting the reconnect scan's consumer failed");
            }
        }
        // Whether a topic's messages the scan did not see were trimmed first. Trimming drops
        // the oldest (of a subject past `history`, of the stream by age and bytes). With the
        // stream's oldest still at or before `from` and the topic holding fewer than `history`,
        // nothing after `from` was dropped; otherwise the topic's own last event must still be
        // there.
        let mut verify = std::collections::HashSet::new();
        if !found.is_empty() {
            let after = lookup::info(&self.stream, self.timeout).await?;
            if after.state.first_sequence > from {
                verify.extend(found.keys().cloned());
            } else {
                let history = u64::try_from(js.history).unwrap_or(u64::MAX);
                let filter = format!("{}.>", self.prefix);
                for (subject, count) in
                    lookup::subject_counts(&self.stream, &filter, self.timeout).await?
                {
                    if count >= history && found.contains_key(&subject) {
                        verify.insert(subject);
                    }
                }
            }
        }
        let topics = lock(&self.topics);
        for (subject, tx) in topics.iter() {
            let events = found.remove(subject).unwrap_or_default();
            let check = if verify.contains(subject) {
                Check::Verify
            } else {
                Check::Intact
            };
            let _ = tx.send(Control::Recovered { events, check });
        }
        drop(topics);
        self.watermark.fetch_max(end, Ordering::AcqRel);
        self.recovered_on.store(generation, Ordering::Release);
        Ok(())
    }
}

/// Removes a topic from the node's live topics when its feed ends.
struct Registration {
    live: Weak<Live>,
    subject: String,
    tx: mpsc::UnboundedSender<Control>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(live) = self.live.upgrade() {
            let mut topics = lock(&live.topics);
            // Only our own entry: a new feed of the same topic may have replaced it.
            if topics
                .get(&self.subject)
                .is_some_and(|tx| tx.same_channel(&self.tx))
            {
                topics.remove(&self.subject);
            }
        }
    }
}
