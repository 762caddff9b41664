//! One live topic's feed: its core subscription's messages in stream order, holes filled from
//! the stream, gaps when history no longer reaches back, and what the node's reconnect scan
//! hands it.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::Subscriber;
use futures_util::StreamExt;
use ssehub_core::backend::{Backoff, Fanout, Offset, StreamPosition};
use ssehub_core::{Delivery, Result};
use tokio::sync::mpsc;

use super::super::lookup;
use super::super::{JetStream, Stored, replay};
use super::{Check, Control, Registration, republished};

/// Events a hole's fill reads at once.
const FILL_PAGE: usize = 256;

/// How long a feed asks the server again (a fill, a look-up) before it gives the topic a reset.
const ASK_BUDGET: Duration = Duration::from_secs(30);

/// The live feed of one topic.
pub(super) struct TopicFeed {
    pub(super) registration: Registration,
    pub(super) js: Weak<JetStream>,
    pub(super) fanout: Arc<Fanout>,
    /// The stream incarnation of `last`.
    pub(super) epoch: String,
    /// The sequence of the last event delivered, or of the topic's last message when the feed
    /// started; 0 when the topic had none.
    pub(super) last: u64,
    /// Between a disconnect and the end of the reconnect scan: holes wait in `pending`.
    pub(super) held: bool,
    /// A gap was just sent: the next event is delivered whatever came before it.
    pub(super) resync: bool,
    pub(super) pending: VecDeque<Stored>,
}

impl TopicFeed {
    pub(super) async fn run(
        mut self,
        mut sub: Subscriber,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        loop {
            // Biased: what the subscription already holds (received before a disconnect) is
            // handled before what the scan read after it.
            tokio::select! {
                biased;
                msg = sub.next() => {
                    let Some(msg) = msg else {
                        tracing::info!(subject = %self.registration.subject, "nats: a live topic's subscription ended; it gets a gap");
                        self.fanout.gap();
                        return;
                    };
                    match republished(&msg) {
                        // The common case is small and inline; a hole's fill (a stream read
                        // with async-nats's large futures) is boxed, so the idle task stays
                        // small: see `tests/topic_cost.rs`.
                        Some(stored) => self.live(stored).await,
                        None => tracing::warn!(subject = %self.registration.subject, "nats: ignored a message without valid ssehub headers"),
                    }
                }
                ctl = control.recv() => match ctl {
                    Some(ctl) => Box::pin(self.control(ctl)).await,
                    None => return,
                },
            }
        }
    }

    fn deliver(&mut self, stored: Stored) {
        self.last = stored.seq;
        self.resync = false;
        self.fanout.send(Delivery::Event(stored.env));
    }

    /// Lost events: tell the sessions; the next event is delivered whatever came before it. A
    /// new `epoch` (a new stream) starts its sequences again.
    fn gap(&mut self, epoch: String, cause: &'static str) {
        if !self.resync {
            tracing::info!(subject = %self.registration.subject, last = self.last, cause, "nats: a live topic gets a gap");
            self.fanout.gap();
        }
        self.resync = true;
        if epoch != self.epoch {
            self.epoch = epoch;
            self.last = 0;
        }
    }

    /// A message from the subscription.
    async fn live(&mut self, stored: Stored) {
        if stored.epoch != self.epoch {
            // The stream was created again (or the publisher had not noticed yet): let the
            // broker check, so its publishes take the new epoch.
            if let Some(js) = self.js.upgrade()
                && let Err(e) = Box::pin(js.refresh_stream()).await
            {
                tracing::debug!(error = %e, "nats: stream check after a new epoch failed");
            }
            self.gap(stored.epoch.clone(), "a message of another stream epoch");
            self.pending.clear();
            self.deliver(stored);
            return;
        }
        if stored.seq <= self.last {
            return; // delivered already (by the scan or a fill)
        }
        if self.resync || stored.prev == Some(self.last) {
            self.deliver(stored);
            self.drain_pending();
            return;
        }
        if self.held {
            self.pending.push_back(stored);
            return;
        }
        Box::pin(self.fill(stored)).await;
    }

    /// Deliver the pending messages that follow on `last`.
    fn drain_pending(&mut self) {
        while let Some(front) = self.pending.front() {
            if front.seq <= self.last {
                self.pending.pop_front();
            } else if self.resync || front.prev == Some(self.last) {
                let next = self.pending.pop_front().expect("front exists");
                self.deliver(next);
            } else {
                return;
            }
        }
    }

    /// A hole before `stored`: read what is missing, a page at a time, delivering each page
    /// before the next is read; then deliver `stored`.
    async fn fill(&mut self, stored: Stored) {
        loop {
            match self.missing_page().await {
                Some(page) => {
                    let full = page.len() >= FILL_PAGE;
                    for event in page {
                        if event.seq > self.last {
                            self.deliver(event);
                        }
                    }
                    if !full || self.last + 1 >= stored.seq {
                        break;
                    }
                }
                None => {
                    self.gap(stored.epoch.clone(), "a hole that could not be filled");
                    break;
                }
            }
        }
        if stored.seq > self.last {
            self.deliver(stored);
        }
        self.drain_pending();
    }

    /// Ask until the server answers, within [`ASK_BUDGET`]: a look-up that fails for a
    /// temporary reason (a timeout, a 503 while a stream leader is elected) is asked again,
    /// never taken for "absent", which would be a spurious gap. `None` (a gap for the caller)
    /// when the budget is spent, the error is permanent, the stream was created again
    /// meanwhile (the broker's epoch moved on) or the broker is gone.
    async fn ask<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Option<T>
    where
        F: FnMut(Arc<JetStream>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + ASK_BUDGET;
        loop {
            let js = self.js.upgrade()?;
            if js.epoch.get() != self.epoch {
                return None;
            }
            let live = self.registration.live.upgrade()?;
            let permit = live.reads.acquire().await.ok()?;
            match attempt(js).await {
                Ok(value) => return Some(value),
                Err(e) if !e.is_temporary() => {
                    tracing::warn!(error = %e, what, subject = %self.registration.subject, "nats: a feed's look-up failed for good; the topic gets a reset");
                    return None;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %e, what, subject = %self.registration.subject, budget = ?ASK_BUDGET, "nats: a feed's look-up kept failing; the topic gets a reset");
                    return None;
                }
                Err(e) => {
                    drop(permit);
                    tracing::debug!(error = %e, what, subject = %self.registration.subject, "nats: a feed's look-up failed; asking again");
                    backoff.wait().await;
                }
            }
        }
    }

    /// The next page of the topic's events after `last` (at most [`FILL_PAGE`]); `None` when
    /// they cannot be told (a gap).
    async fn missing_page(&self) -> Option<Vec<Stored>> {
        if self.last == 0 {
            return None;
        }
        let after = StreamPosition::new(&self.epoch, Offset::Seq(self.last))?;
        let subject = &self.registration.subject;
        self.ask("fill", |js| {
            let after = after.clone();
            async move { replay::read_after(&js, subject, &after, FILL_PAGE).await }
        })
        .await?
        .ok()
    }

    /// Whether the message at `last` is still this topic's (nothing after it was trimmed).
    async fn last_still_stored(&self) -> bool {
        if self.last == 0 {
            return false;
        }
        let subject = &self.registration.subject;
        let seq = self.last;
        self.ask("last event still stored", |js| async move {
            let m = lookup::message(&js.live.stream, seq, js.timeout()).await?;
            Ok(m.is_some_and(|m| m.subject.as_str() == subject))
        })
        .await
        .unwrap_or(false)
    }

    async fn control(&mut self, control: Control) {
        match control {
            Control::Hold => self.held = true,
            Control::Recovered { events, check } => {
                self.held = false;
                let news = events.iter().any(|e| e.seq > self.last);
                let lost = match check {
                    Check::Gap => true,
                    Check::Verify => news && !self.last_still_stored().await,
                    Check::Intact => false,
                };
                if lost {
                    // Sessions reload after the gap: what the scan read is behind them.
                    let epoch = self.epoch.clone();
                    self.gap(epoch, "the reconnect scan could not tell what was missed");
                    let read = events.iter().filter(|e| e.epoch == self.epoch);
                    self.last = read.map(|e| e.seq).fold(self.last, u64::max);
                    self.drain_pending();
                    return;
                }
                for event in events {
                    if event.epoch != self.epoch {
                        self.gap(event.epoch.clone(), "the reconnect scan read another epoch");
                    }
                    if event.seq > self.last {
                        self.deliver(event);
                    }
                }
                self.drain_pending();
                // A hole the scan did not cover (its message came after the scan's end).
                if let Some(next) = self.pending.pop_front() {
                    self.fill(next).await;
                }
            }
            Control::Epoch(epoch) => {
                if epoch != self.epoch {
                    self.gap(epoch, "the stream was created again");
                    self.pending.clear();
                }
            }
            Control::Gap => {
                let epoch = self.epoch.clone();
                self.gap(epoch, "the client dropped messages (slow consumer)");
            }
        }
    }
}
