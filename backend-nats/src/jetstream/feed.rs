//! The live feed of one topic in JetStream mode: an ordered pull consumer after the feed's
//! anchor, reopened after the last delivered sequence whenever it fails, with a gap when events
//! may have been trimmed meanwhile or the stream was created again.
//!
//! # Anchor
//!
//! A feed stands on a stream sequence `last`: the last event it delivered or, before its first
//! delivery, the topic's own last message when it starts (so a reopened feed can ask whether
//! that message is still stored), or the stream's last sequence when the topic has no message
//! yet. Whether every message of the topic after `last` is still stored:
//!
//! - `last` is a message of the topic: it is still stored. Trimming drops the oldest first (per
//!   topic by `max_msgs_per_subject`, or the whole stream's oldest by age and bytes), so nothing
//!   after it can be gone while it is there.
//! - the topic had no message at `last`: the stream's oldest stored sequence is at most
//!   `last + 1` (nothing after `last` dropped by age or bytes), and the per-topic limit
//!   `max_msgs_per_subject` cannot have dropped any: at most that many messages were added to
//!   the whole stream since `last`, or fewer than that many of the topic are held from the first
//!   one the feed reads on (the limit keeps the newest: had it dropped one before, that many
//!   would be held). Before a consumer reads anything, all the topic's messages count.
//!
//! Anything else is a gap. The check is conservative: when it cannot be told, sessions get a
//! `reset` (for example after exactly `history` events arrived for a new topic during an outage,
//! or when a topic was quiet for longer than the stream's `max_age` before an outage).
//!
//! The check runs whenever a consumer starts: before the feed opens one (after a reconnect, a
//! failure, a new stream seen elsewhere in the broker), and at the first message of a consumer
//! the ordered consumer recreated by itself (after the last sequence it delivered, possibly on a
//! new stream). A check the server cannot answer now is retried a
//! few times, then the feed drops the consumer and tries again later (after a backoff, at once
//! after a reconnect): it never reports a gap for it, and never stops handling reconnects
//! meanwhile.
//!
//! Not detected: a consumer that falls more than `history` events behind while it runs (the
//! per-topic limit drops events the server had not sent it yet); telling would take a look-up per
//! event.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use ssehub_core::backend::{Backoff, Fanout, Offset, StreamPosition};
use ssehub_core::{Delivery, Envelope, Result};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::lookup::{self, StreamHandle};
use super::{EPOCH_HEADER, Epoch, epoch_of};
use crate::connection::{ConnEvent, event_of};
use crate::error::{NatsError, boxed};

/// How long a disconnected feed waits for the reconnect before it tries to reopen anyway (the
/// `Connected` event reopens it at once).
const WAIT_FOR_CONNECT: Duration = Duration::from_secs(5);

pub(super) struct Feed {
    stream: StreamHandle,
    subject: String,
    /// The broker's epoch: updated by the feed when it finds a new stream incarnation.
    shared_epoch: Arc<Epoch>,
    /// The stream incarnation the feed reads.
    epoch: String,
    /// Where the feed stands (see the module docs).
    last: u64,
    /// Whether `last` is a message of the topic.
    last_on_subject: bool,
    /// The name of the consumer the feed opened last, or checked after it recreated itself.
    consumer: String,
    fanout: Arc<Fanout>,
    timeout: Duration,
}

/// What a check of the feed's position found.
enum Checked {
    /// Every event after `last` is still there: go on.
    Intact,
    /// Events may be lost: a gap was sent, and the feed stands on the stream's present.
    Gap,
}

impl Feed {
    pub(super) async fn new(
        js: &jetstream::Context,
        stream_name: &str,
        subject: String,
        shared_epoch: Arc<Epoch>,
        fanout: Arc<Fanout>,
        timeout: Duration,
    ) -> Result<Self> {
        let stream = js
            .get_stream_no_info(stream_name)
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        Ok(Feed {
            stream,
            subject,
            epoch: shared_epoch.get(),
            shared_epoch,
            last: 0,
            last_on_subject: false,
            consumer: String::new(),
            fanout,
            timeout,
        })
    }

    /// Stand on the present of `info`'s stream: the topic's last message, or the stream's last
    /// sequence when the topic has none.
    pub(super) async fn anchor(&mut self, info: &stream::Info) -> Result<()> {
        let stream_last = info.state.last_sequence;
        let topic_last = lookup::last_of(&self.stream, &self.subject, self.timeout).await?;
        self.epoch = epoch_of(info);
        (self.last, self.last_on_subject) = match topic_last {
            Some(m) if m.sequence <= stream_last => (m.sequence, true),
            // Published since `info` was read (or none): the stream's last as of `info`.
            _ => (stream_last, false),
        };
        Ok(())
    }

    /// Open an ordered consumer after `last`; remembers its name.
    pub(super) async fn open(&mut self) -> Result<consumer::pull::Ordered> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.last + 1,
                },
                // Short pulls, so heartbeats (half of this) notice a lost consumer quickly.
                max_expires: Duration::from_secs(4),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        self.consumer = consumer.cached_info().name.clone();
        consumer
            .messages()
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)).into())
    }

    /// Whether every message of the topic after `last` is still stored (see the module docs).
    /// `pending`: when checking at a message read after `last`, the topic's messages after it
    /// (the server's count at delivery).
    async fn nothing_trimmed(&self, info: &stream::Info, pending: Option<u64>) -> Result<bool> {
        if self.last_on_subject {
            let m = lookup::message(&self.stream, self.last, self.timeout).await?;
            return Ok(m.is_some_and(|m| m.subject.as_str() == self.subject));
        }
        if info.state.first_sequence > self.last.saturating_add(1) {
            return Ok(false); // the stream's oldest after `last` were dropped (age, bytes)
        }
        let Ok(limit) = u64::try_from(info.config.max_messages_per_subject) else {
            return Ok(true); // no per-topic limit
        };
        if limit == 0 || info.state.last_sequence.saturating_sub(self.last) <= limit {
            // No limit, or `limit` messages at most were published to the whole stream since.
            return Ok(true);
        }
        // The per-topic limit keeps the newest `limit`: if it dropped any before the message
        // read first, that message and those after it were `limit` at least.
        let held = match pending {
            Some(pending) => pending.saturating_add(1),
            None => lookup::subject_count(&self.stream, &self.subject, self.timeout).await?,
        };
        Ok(held < limit)
    }

    /// Check the stream is the same incarnation and nothing after `last` was trimmed; on a gap,
    /// tell the sessions and stand on the stream's present.
    async fn check(&mut self, pending: Option<u64>) -> Result<Checked> {
        let info = lookup::info(&self.stream, self.timeout).await?;
        let epoch = epoch_of(&info);
        let why = if epoch != self.epoch {
            self.shared_epoch.set(epoch);
            "the stream was created again"
        } else if !self.nothing_trimmed(&info, pending).await? {
            "events were trimmed before this node read them"
        } else {
            return Ok(Checked::Intact);
        };
        tracing::warn!(subject = %self.subject, last = self.last, "nats: {why}; sessions get a reset");
        self.fanout.gap();
        self.anchor(&info).await?;
        Ok(Checked::Gap)
    }

    /// Check, then open a consumer after `last`.
    async fn reopen(&mut self) -> Result<consumer::pull::Ordered> {
        self.check(None).await?;
        self.open().await
    }

    pub(super) async fn run(
        mut self,
        messages: consumer::pull::Ordered,
        mut events: broadcast::Receiver<ConnEvent>,
        mut epochs: watch::Receiver<String>,
    ) {
        let mut messages = Some(messages);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut retry_at = Instant::now();
        // Poll at least every second. async-nats 0.51's ordered consumer answers `Pending` after
        // its first missed heartbeat without arranging a wake-up, so without a new message it
        // would never look again. (`next` is cancel-safe: dropping it loses nothing.) One timer
        // per feed, not one per message.
        let mut repoll = tokio::time::interval(Duration::from_secs(1));
        repoll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if messages.is_none() && Instant::now() >= retry_at {
                match self.reopen().await {
                    Ok(m) => {
                        messages = Some(m);
                        backoff.reset();
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, subject = %self.subject, "nats: reopening the feed failed; trying again later");
                        retry_at = Instant::now() + backoff.next_delay();
                    }
                }
                continue;
            }
            let next = tokio::select! {
                next = async { messages.as_mut()?.next().await }, if messages.is_some() => next,
                _ = tokio::time::sleep_until(retry_at), if messages.is_none() => continue,
                _ = repoll.tick() => continue,
                changed = epochs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *epochs.borrow_and_update() != self.epoch {
                        // Another part of the broker found a new stream: check and reopen now.
                        messages = None;
                        retry_at = Instant::now();
                    }
                    continue;
                }
                event = events.recv() => match event {
                    // Reconnected: start again after the last event delivered. Messages the
                    // server sent to the old connection are gone, and the ordered consumer only
                    // notices a hole when a later message arrives: with no later publish, the
                    // subscription would stall behind it.
                    Ok(ConnEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::debug!(subject = %self.subject, last = self.last, "nats: reconnected; reopening the ordered consumer");
                        messages = None;
                        retry_at = Instant::now();
                        backoff.reset();
                        continue;
                    }
                    // Disconnected: whatever the consumer does meanwhile (it recreates itself
                    // after missed heartbeats) is left; the feed reopens once connected again.
                    Ok(ConnEvent::Disconnected) => {
                        messages = None;
                        retry_at = Instant::now() + WAIT_FOR_CONNECT;
                        continue;
                    }
                    Ok(ConnEvent::SlowConsumer) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                other => {
                    match other {
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, subject = %self.subject, "nats: ordered consumer failed; restarting")
                        }
                        _ => {
                            tracing::debug!(subject = %self.subject, "nats: ordered consumer ended; restarting")
                        }
                    }
                    messages = None;
                    retry_at = Instant::now() + backoff.next_delay();
                    continue;
                }
            };
            let Ok(info) = msg.info() else { continue };
            let (seq, pending) = (info.stream_sequence, info.pending);
            // The first message of a consumer the ordered consumer recreated by itself (after
            // the last sequence it delivered, possibly on a new stream; it is named after the
            // one the feed opened): check first. The feed checked before opening its own.
            if info.consumer != self.consumer {
                let recreated = info.consumer.to_owned();
                match self.check(Some(pending)).await {
                    Ok(Checked::Intact) => self.consumer = recreated,
                    Ok(Checked::Gap) => {
                        messages = None;
                        retry_at = Instant::now();
                        continue;
                    }
                    Err(e) => {
                        // Cannot tell now: leave this message unread and try again later.
                        tracing::debug!(error = %e, subject = %self.subject, "nats: cannot tell whether events were trimmed; trying again later");
                        messages = None;
                        retry_at = Instant::now() + backoff.next_delay();
                        continue;
                    }
                }
            }
            if seq <= self.last {
                continue; // already delivered (a recreated consumer starting earlier)
            }
            self.deliver(&msg, seq);
        }
    }

    fn deliver(&mut self, msg: &jetstream::Message, seq: u64) {
        self.last = seq;
        self.last_on_subject = true;
        let headers = msg.headers.as_ref();
        let epoch = headers
            .and_then(|h| h.get(EPOCH_HEADER))
            .map_or(self.epoch.as_str(), |v| v.as_str());
        match (
            StreamPosition::new(epoch, Offset::Seq(seq)),
            event_of(headers),
        ) {
            (Some(pos), Some(event)) => {
                let env = Envelope {
                    id: pos.to_event_id(),
                    event,
                    data: msg.payload.clone(),
                };
                self.fanout.send(Delivery::Event(env));
            }
            _ => {
                tracing::warn!(subject = %self.subject, seq, "nats: ignored a message with invalid ssehub headers");
            }
        }
    }
}
