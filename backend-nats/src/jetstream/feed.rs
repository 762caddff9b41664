//! The live feed of one topic in JetStream mode: an ordered pull consumer from `last + 1`,
//! restarted after the last delivered sequence whenever it fails, with a gap when events were
//! trimmed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use ssehub_core::backend::{Backoff, Fanout, Offset, StreamPosition};
use ssehub_core::{Delivery, Envelope, Result};
use tokio::sync::broadcast;

use super::{EPOCH_HEADER, epoch_of};
use crate::connection::{ConnEvent, event_of};
use crate::error::{NatsError, boxed};

pub(super) struct Feed {
    js: jetstream::Context,
    stream_name: String,
    subject: String,
    epoch: String,
    /// Last stream sequence handled (delivered, or the stream's last when the feed started).
    last: u64,
    /// Whether `last` is a message of this subject that was delivered.
    last_on_subject: bool,
    fanout: Arc<Fanout>,
}

impl Feed {
    pub(super) fn new(
        js: jetstream::Context,
        stream_name: String,
        subject: String,
        info: &stream::Info,
        fanout: Arc<Fanout>,
    ) -> Self {
        Feed {
            js,
            stream_name,
            subject,
            epoch: epoch_of(info),
            last: info.state.last_sequence,
            last_on_subject: false,
            fanout,
        }
    }

    pub(super) async fn open(&self) -> Result<consumer::pull::Ordered> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        let consumer = stream
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
        consumer
            .messages()
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)).into())
    }

    /// Whether every message of the subject after `self.last` is still in the stream. Trimming
    /// drops the oldest messages of a subject first, so it is enough that `last` is still there.
    ///
    /// Only a definite "no such message" counts as trimmed: a request that failed (a timeout
    /// under load, a reconnect) proves nothing, so it is asked again, with backoff, until the
    /// server answers. (Answering "trimmed" on a failed request sent spurious `reset`s to every
    /// session of the topic.)
    async fn nothing_trimmed(&self) -> bool {
        if !self.last_on_subject {
            return true;
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let error: async_nats::Error = match self.js.get_stream_no_info(&self.stream_name).await
            {
                Ok(stream) => match stream.get_raw_message(self.last).await {
                    Ok(_) => return true,
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                        return false;
                    }
                    Err(e) => Box::new(e),
                },
                Err(e) => Box::new(e),
            };
            tracing::debug!(error = %error, subject = %self.subject, "nats: cannot tell whether history was trimmed; asking again");
            backoff.wait().await;
        }
    }

    pub(super) async fn run(
        mut self,
        mut messages: consumer::pull::Ordered,
        mut events: broadcast::Receiver<ConnEvent>,
    ) {
        let mut received = 0u64;
        // Poll at least every second. async-nats 0.51's ordered consumer answers `Pending` after
        // its first missed heartbeat without arranging a wake-up, so without a new message it
        // would never look again. (`next` is cancel-safe: dropping it loses nothing.) One timer
        // per feed, not one per message.
        let mut repoll = tokio::time::interval(Duration::from_secs(1));
        repoll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = repoll.tick() => continue,
                event = events.recv() => match event {
                    // Reconnected: start again after the last event delivered. Messages the
                    // server sent to the old connection are gone, and the ordered consumer only
                    // notices a hole when a later message arrives: with no later publish, the
                    // subscription would stall behind it.
                    Ok(ConnEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::debug!(subject = %self.subject, last = self.last, "nats: reconnected; reopening the ordered consumer");
                        drop(messages);
                        messages = self.reopen().await;
                        received = 0;
                        continue;
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            match next {
                Some(Ok(msg)) => {
                    let Ok(info) = msg.info() else { continue };
                    let (seq, consumer_seq) = (info.stream_sequence, info.consumer_sequence);
                    // consumer_seq restarting at 1 means the ordered consumer recreated itself
                    // (after the last sequence it delivered): check nothing was trimmed meanwhile.
                    if consumer_seq == 1 && received > 0 && !self.nothing_trimmed().await {
                        tracing::warn!(subject = %self.subject, last = self.last, "nats: history trimmed while the consumer was recreated; sessions get a reset");
                        self.fanout.gap();
                    }
                    received += 1;
                    if seq <= self.last {
                        continue; // already delivered (a recreated consumer starting earlier)
                    }
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
                other => {
                    match other {
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, subject = %self.subject, "nats: ordered consumer failed; restarting")
                        }
                        _ => {
                            tracing::debug!(subject = %self.subject, "nats: ordered consumer ended; restarting")
                        }
                    }
                    drop(messages);
                    messages = self.reopen().await;
                    received = 0;
                }
            }
        }
    }

    /// Reopen after a failure, retrying until it works; yields a gap when events were lost.
    async fn reopen(&mut self) -> consumer::pull::Ordered {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            backoff.wait().await;
            let info = match self.js.get_stream(&self.stream_name).await {
                Ok(mut s) => match s.info().await {
                    Ok(info) => info.clone(),
                    Err(_) => continue,
                },
                Err(_) => continue,
            };
            if epoch_of(&info) != self.epoch {
                // A new stream incarnation: everything before it is gone.
                tracing::warn!(subject = %self.subject, "nats: the stream was recreated; sessions get a reset");
                self.fanout.gap();
                self.epoch = epoch_of(&info);
                self.last = info.state.last_sequence;
                self.last_on_subject = false;
            } else if !self.nothing_trimmed().await {
                tracing::warn!(subject = %self.subject, last = self.last, "nats: history trimmed while the consumer was down; sessions get a reset");
                self.fanout.gap();
                self.last = info.state.last_sequence;
                self.last_on_subject = false;
            }
            match self.open().await {
                Ok(m) => return m,
                Err(e) => {
                    tracing::debug!(error = %e, "nats: reopening the ordered consumer failed")
                }
            }
        }
    }
}
