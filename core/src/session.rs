//! One client's stream: a bounded queue of framed bytes, fed by the hub, drained by the HTTP body.
//!
//! # Example
//!
//! ```
//! use ssehub_core::{QueueLimits, OverflowPolicy};
//!
//! // At most 256 events or 1 MiB waiting per client; a client that falls further behind is
//! // disconnected (it reconnects with Last-Event-ID and resumes from history).
//! let limits = QueueLimits::new(256, 1024 * 1024);
//! assert_eq!(limits.max_events(), 256);
//! assert_eq!(OverflowPolicy::default(), OverflowPolicy::Disconnect);
//! ```

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;

use crate::broker::Broker;
use crate::hub::Registration;
use crate::id::{EventId, Topic};
use crate::transport::Transport;

/// Bounds of one session's queue of frames not yet written to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    max_events: usize,
    max_bytes: usize,
}

impl QueueLimits {
    /// At most `max_events` frames and `max_bytes` bytes (each at least 1).
    #[must_use]
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        QueueLimits {
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// The bound on queued frames.
    #[must_use]
    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// The bound on queued bytes.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl Default for QueueLimits {
    /// 1,024 frames or 8 MiB, whichever is reached first.
    fn default() -> Self {
        QueueLimits::new(1024, 8 * 1024 * 1024)
    }
}

/// What happens when a session's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// End the session's stream (the default): the frames already queued are still written, then
    /// the stream ends. A browser reconnects with its `Last-Event-ID` and resumes from history,
    /// so nothing is lost silently, and a client far behind makes progress on every reconnect.
    #[default]
    Disconnect,
    /// Drop the oldest queued frames to make room. The client silently misses events: use it only
    /// for channels where the latest state is all that matters.
    DropOldest,
}

/// Why a session's stream ended (other than the client going away).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client read too slowly and its queue overflowed.
    Overflow,
    /// The server is shutting down.
    Shutdown,
    /// The broker subscription ended; the client should reconnect.
    BrokerLost,
}

pub(crate) struct SessionShared {
    state: Mutex<SessionState>,
    limits: QueueLimits,
    policy: OverflowPolicy,
    /// Orders event ids, to drop live events the client already has after a resume.
    broker: Arc<dyn Broker>,
}

struct SessionState {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// `Some` while the session resumes: live frames wait here, with their ids.
    pending: Option<Vec<(Option<EventId>, Bytes)>>,
    pending_bytes: usize,
    /// After a resume, the last id the client has (replayed, or the one it resumed from). The
    /// hub's feed may lag the broker, so live events up to it are dropped; the first later one
    /// clears it (live order is publish order).
    seen_up_to: Option<EventId>,
    closed: Option<CloseReason>,
    /// Whether `closed` drops what is queued (overflow) or lets it drain first (shutdown).
    waker: Option<Waker>,
}

impl SessionShared {
    pub(crate) fn new(
        limits: QueueLimits,
        policy: OverflowPolicy,
        broker: Arc<dyn Broker>,
    ) -> Self {
        SessionShared {
            state: Mutex::new(SessionState {
                frames: VecDeque::new(),
                bytes: 0,
                pending: Some(Vec::new()),
                pending_bytes: 0,
                seen_up_to: None,
                closed: None,
                waker: None,
            }),
            limits,
            policy,
            broker,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        crate::backend::lock(&self.state)
    }

    /// Queue one frame (a live event when `id` is set, a control frame otherwise).
    pub(crate) fn push(&self, id: Option<&EventId>, frame: &Bytes) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            if let Some(pending) = st.pending.as_mut() {
                pending.push((id.cloned(), frame.clone()));
                st.pending_bytes += frame.len();
                let over = st.pending.as_ref().map_or(0, Vec::len) > self.limits.max_events
                    || st.pending_bytes > self.limits.max_bytes;
                if over {
                    st.close(CloseReason::Overflow, true);
                    st.waker.take()
                } else {
                    None
                }
            } else {
                if let Some(id) = id
                    && self.already_sent(&mut st.seen_up_to, id)
                {
                    return;
                }
                self.enqueue(&mut st, frame.clone());
                st.waker.take()
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the client already has live event `id`; clears the filter at the first newer one.
    fn already_sent(&self, seen_up_to: &mut Option<EventId>, id: &EventId) -> bool {
        let Some(last) = seen_up_to.as_ref() else {
            return false;
        };
        match self.broker.id_order(id, last) {
            Some(Ordering::Less | Ordering::Equal) => true,
            _ => {
                *seen_up_to = None;
                false
            }
        }
    }

    fn enqueue(&self, st: &mut SessionState, frame: Bytes) {
        let len = frame.len();
        let full = |st: &SessionState| {
            st.frames.len() + 1 > self.limits.max_events || st.bytes + len > self.limits.max_bytes
        };
        if full(st) {
            match self.policy {
                OverflowPolicy::Disconnect => {
                    // What is queued is still delivered, then the stream ends: the client
                    // resumes after the last event it got. Discarding the queue instead would
                    // livelock a client that resumed from far back: its replay (which may exceed
                    // the bound) would be thrown away at the next live event, every time.
                    st.close(CloseReason::Overflow, false);
                    return;
                }
                OverflowPolicy::DropOldest => {
                    while full(st) {
                        match st.frames.pop_front() {
                            Some(old) => st.bytes -= old.len(),
                            None => break,
                        }
                    }
                }
            }
        }
        st.bytes += len;
        st.frames.push_back(frame);
    }

    /// End the resume phase: queue `head` (retry hint, initial event, reset), then the replayed
    /// frames, then the live frames that arrived meanwhile minus those the client already has
    /// (`resumed_from` is the id it resumed from, when replay answered). Replay may exceed the
    /// queue bound (it is bounded by the broker's history window).
    pub(crate) fn go_live(
        &self,
        head: Vec<Bytes>,
        resumed_from: Option<EventId>,
        replayed: Vec<(EventId, Bytes)>,
    ) {
        let waker = {
            let mut st = self.lock();
            let pending = st.pending.take().unwrap_or_default();
            st.pending_bytes = 0;
            if st.closed.is_some() {
                return;
            }
            for f in head {
                st.bytes += f.len();
                st.frames.push_back(f);
            }
            let mut seen_up_to = replayed.last().map(|(id, _)| id.clone()).or(resumed_from);
            for (_, f) in replayed {
                st.bytes += f.len();
                st.frames.push_back(f);
            }
            for (id, f) in pending {
                if let Some(id) = id.as_ref()
                    && self.already_sent(&mut seen_up_to, id)
                {
                    continue;
                }
                st.bytes += f.len();
                st.frames.push_back(f);
            }
            st.seen_up_to = seen_up_to;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Close the session. With `drain`, frames already queued (and `last`) are still delivered.
    pub(crate) fn close(&self, reason: CloseReason, last: Option<Bytes>, drain: bool) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            if let Some(f) = last {
                // A final frame is always delivered, bound or not: it is tiny and the last one.
                if st.pending.is_none() {
                    st.bytes += f.len();
                    st.frames.push_back(f);
                }
            }
            st.close(reason, !drain);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Take everything queued as one chunk, or register the waker.
    fn poll_frames(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut st = self.lock();
        if !st.frames.is_empty() {
            let chunk = if st.frames.len() == 1 {
                st.frames.pop_front().unwrap_or_default()
            } else {
                let mut buf = BytesMut::with_capacity(st.bytes);
                for f in st.frames.drain(..) {
                    buf.extend_from_slice(&f);
                }
                buf.freeze()
            };
            st.bytes = 0;
            return Poll::Ready(Some(chunk));
        }
        if st.closed.is_some() {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl SessionState {
    fn close(&mut self, reason: CloseReason, discard: bool) {
        if reason == CloseReason::Overflow {
            metrics::counter!(crate::metrics::SLOW_CONSUMER_DISCONNECTS).increment(1);
            tracing::debug!("session queue overflowed: disconnecting a slow consumer");
        }
        self.closed = Some(reason);
        if discard {
            self.frames.clear();
            self.bytes = 0;
        }
        self.pending = None;
        self.pending_bytes = 0;
    }
}

/// One client's stream of framed bytes, ready to be an HTTP response body.
///
/// Made by [`ChannelManager::subscribe`](crate::ChannelManager::subscribe). Each poll yields
/// everything queued since the last one as a single chunk, so one write carries many events
/// under load. The stream ends when the server shuts down, when the client falls further behind
/// than its [`QueueLimits`], or when the broker subscription is lost. Dropping it leaves the
/// channel; the last session leaving lets the channel go after a short linger.
pub struct Session {
    shared: Arc<SessionShared>,
    registration: Registration,
    transport: Arc<dyn Transport>,
    keep_alive: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<SessionShared>,
        registration: Registration,
        transport: Arc<dyn Transport>,
        keep_alive: Option<Duration>,
    ) -> Self {
        let keep_alive = keep_alive
            .filter(|d| !d.is_zero())
            .map(|d| (d, Box::pin(tokio::time::sleep(d))));
        Session {
            shared,
            registration,
            transport,
            keep_alive,
        }
    }

    /// The topic this session listens to.
    #[must_use]
    pub fn topic(&self) -> &Topic {
        self.registration.topic()
    }

    /// The transport framing this session's bytes.
    #[must_use]
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Why the stream ended, once it has (`None` while it runs or when it ended otherwise).
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("topic", self.topic())
            .field("transport", &self.transport.name())
            .finish_non_exhaustive()
    }
}

impl Stream for Session {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        match this.shared.poll_frames(cx) {
            Poll::Ready(Some(chunk)) => {
                if let Some((every, sleep)) = this.keep_alive.as_mut() {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *every);
                }
                return Poll::Ready(Some(chunk));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if let Some((every, sleep)) = this.keep_alive.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            sleep.as_mut().reset(tokio::time::Instant::now() + *every);
            return Poll::Ready(Some(this.transport.keep_alive()));
        }
        Poll::Pending
    }
}
