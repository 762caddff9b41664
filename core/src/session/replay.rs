//! Resuming: the replay of what a client missed, read from the broker a page at a time.

use std::cmp::Ordering;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::CloseReason;
use super::queue::{SessionShared, SessionState, Start};
use crate::broker::{Broker, Envelope, Replay};
use crate::id::{EventId, Topic};
use crate::transport::ResetReason;

/// Bounds of one session's replay when it resumes from a `Last-Event-ID`.
///
/// The missed events are read from the broker a page at a time, each page only once the
/// client has taken everything queued before it, so a resuming client holds at most one page in
/// server memory however far behind it is, and a client that does not read stops the reading.
/// A client further behind than `max_events` or `max_bytes` in total gets a `reset` (reason
/// `overflow`) instead of the rest: it refetches its state, which is cheaper than replaying it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayLimits {
    page: usize,
    max_events: usize,
    max_bytes: usize,
}

impl ReplayLimits {
    /// Pages of `page` events (at least 1), at most `max_events` events and `max_bytes` bytes
    /// in all.
    #[must_use]
    pub fn new(page: usize, max_events: usize, max_bytes: usize) -> Self {
        ReplayLimits {
            page: page.max(1),
            max_events,
            max_bytes,
        }
    }

    /// Events read from the broker at a time.
    #[must_use]
    pub fn page(&self) -> usize {
        self.page
    }

    /// Events one replay sends at most.
    #[must_use]
    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// Bytes of event data one replay sends at most.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl Default for ReplayLimits {
    /// Pages of 32 events; at most 10,000 events or 64 MiB in all.
    fn default() -> Self {
        ReplayLimits::new(32, 10_000, 64 * 1024 * 1024)
    }
}

pub(super) struct Cursor {
    pub(super) after: EventId,
    pub(super) events_left: usize,
    pub(super) bytes_left: usize,
}

/// What the session needs to read the next page of its replay.
pub(crate) struct Replayer {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) topic: Topic,
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
}

pub(super) type PageFuture = Pin<Box<dyn Future<Output = crate::error::Result<Replay>> + Send>>;

impl SessionShared {
    /// Start the stream: queue `head` (retry hint, initial event, reset), then the first page
    /// of the replay (`resumed_from` is the id the client resumed from, when the broker
    /// answered). With `more`, the replay goes on page by page after `replayed` (see
    /// [`ReplayLimits`]) and the live frames keep waiting; otherwise the session goes live:
    /// the live frames that arrived meanwhile are queued, minus those the client already has.
    pub(crate) fn start(
        &self,
        head: Vec<Bytes>,
        resumed_from: Option<EventId>,
        replayed: Vec<Envelope>,
        more: bool,
    ) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            for f in head {
                st.push_raw(f);
            }
            let start = st.start.get_or_insert_default();
            start.seen_up_to = resumed_from.clone();
            start.replay = resumed_from.map(|after| Cursor {
                after,
                events_left: self.config.replay_limits.max_events,
                bytes_left: self.config.replay_limits.max_bytes,
            });
            self.queue_page(&mut st, replayed, more);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Queue one page of the replay; when it is the last (or the budget is spent), go live.
    fn queue_page(&self, st: &mut SessionState, events: Vec<Envelope>, more: bool) {
        let mut spent = false;
        for env in events {
            let Some(cursor) = st.start.as_mut().and_then(|s| s.replay.as_mut()) else {
                break;
            };
            if cursor.events_left == 0 || cursor.bytes_left < env.data.len() {
                spent = true;
                break;
            }
            cursor.events_left -= 1;
            cursor.bytes_left -= env.data.len();
            cursor.after = env.id.clone();
            let frame = self.transport.event(Some(&env.id), &env.event, &env.data);
            st.push_raw(frame);
            if let Some(start) = st.start.as_mut() {
                start.seen_up_to = Some(env.id);
            }
        }
        let overflowed = st
            .start
            .as_ref()
            .and_then(|s| s.pending.as_ref())
            .is_some_and(|p| p.overflow.is_some());
        if spent && !overflowed {
            // (With overflowed live events, going live below sends the one reset, at their id.)
            crate::metric_names::resets_sent(ResetReason::Overflow, 1);
            tracing::debug!("a replay went past its budget: the session gets a reset");
            st.push_raw(self.transport.reset(ResetReason::Overflow, None));
        }
        if spent || !more {
            self.go_live(st);
        }
    }

    /// End the replay: queue the live frames that waited (or the reset that replaced them).
    fn go_live(&self, st: &mut SessionState) {
        let Some(start) = st.start.as_mut() else {
            return;
        };
        start.replay = None;
        let Some(pending) = start.pending.take() else {
            return;
        };
        let mut seen_up_to = start.seen_up_to.take();
        match pending.overflow {
            Some(newest) => {
                // The replay reads the broker's history, which holds the dropped live events
                // too: when it reached the newest of them, the client has them all.
                let covered = match (&newest, &seen_up_to) {
                    (Some(n), Some(seen)) => matches!(
                        self.config.broker.id_order(n, seen),
                        Some(Ordering::Less | Ordering::Equal)
                    ),
                    _ => false,
                };
                if !covered {
                    crate::metric_names::resets_sent(ResetReason::Overflow, 1);
                    st.push_raw(self.transport.reset(ResetReason::Overflow, newest.as_ref()));
                    seen_up_to = newest;
                }
            }
            None => {
                for (id, f) in pending.frames {
                    if let Some(id) = id.as_ref()
                        && self.already_sent(&mut seen_up_to, id)
                    {
                        continue;
                    }
                    st.push_raw(f);
                }
            }
        }
        // Live now: what is left of the start is the resume filter, if any.
        st.start = seen_up_to.map(|id| {
            Box::new(Start {
                seen_up_to: Some(id),
                ..Start::default()
            })
        });
    }

    /// Where the next page of the replay starts, when one is due.
    pub(super) fn next_page(&self) -> Option<EventId> {
        let st = self.lock();
        if st.closed.is_some() {
            return None;
        }
        st.start
            .as_ref()
            .and_then(|s| s.replay.as_ref())
            .map(|c| c.after.clone())
    }

    /// Apply the broker's answer for the next page.
    pub(super) fn apply_page(&self, answer: crate::error::Result<Replay>, retry: Duration) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() || st.start.as_ref().is_none_or(|s| s.replay.is_none()) {
                return;
            }
            match answer {
                Ok(Replay::Events(events)) => {
                    let more = events.len() >= self.config.replay_limits.page;
                    self.queue_page(&mut st, events, more);
                }
                Ok(Replay::Gap(cause)) => {
                    // History was trimmed past the cursor while the client read.
                    let reason = cause.reset_reason();
                    crate::metric_names::resets_sent(reason, 1);
                    st.push_raw(self.transport.reset(reason, None));
                    self.go_live(&mut st);
                }
                Err(e) => {
                    // The client keeps what it got and comes back after the last event of it.
                    tracing::debug!(error = %e, "a replay page failed; the client reconnects");
                    st.push_raw(self.transport.retry(retry));
                    st.close(CloseReason::BrokerLost, false);
                }
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}
