//! A session's queue: frames waiting for the client, bounded; live frames held back while the
//! session is not live yet.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::replay::{Cursor, ReplayLimits};
use super::{CloseReason, OverflowPolicy, QueueLimits};
use crate::broker::Broker;
use crate::id::EventId;
use crate::transport::Transport;

pub(crate) struct SessionShared {
    pub(super) state: Mutex<SessionState>,
    /// The bounds and broker every session of the hub shares (one allocation per hub, not
    /// per session).
    pub(super) config: Arc<SessionConfig>,
    /// Frames the resets and replayed events this session queues itself, and its keep-alives.
    pub(crate) transport: Arc<dyn Transport>,
}

/// What every session of one hub shares.
pub(crate) struct SessionConfig {
    pub(crate) limits: QueueLimits,
    pub(crate) policy: OverflowPolicy,
    pub(crate) replay_limits: ReplayLimits,
    /// Orders event ids, to drop live events the client already has after a resume.
    pub(crate) broker: Arc<dyn Broker>,
}

pub(super) struct SessionState {
    pub(super) frames: FrameQueue,
    pub(super) bytes: usize,
    /// How the session starts: `Some` while it joins and replays, and after a resume until the
    /// first live event the client does not have. Boxed: most of a session's life it is `None`.
    pub(super) start: Option<Box<Start>>,
    pub(super) closed: Option<CloseReason>,
    pub(super) waker: Option<Waker>,
    /// With a keep-alive: when the client was last handed a chunk.
    pub(super) last_write: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Start {
    /// `Some` until the session is live (while it joins, and while it replays page by page):
    /// live frames wait here, with their ids.
    pub(super) pending: Option<Pending>,
    /// While a replay goes on: where the next page starts, and what is left of the budget.
    pub(super) replay: Option<Cursor>,
    /// After a resume, the last id the client has (replayed, or the one it resumed from). The
    /// hub's feed may lag the broker, so live events up to it are dropped; the first later one
    /// clears it (live order is publish order).
    pub(super) seen_up_to: Option<EventId>,
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) frames: Vec<(Option<EventId>, Bytes)>,
    pub(super) bytes: usize,
    /// Set once more live events arrived than the queue holds: they were dropped, and this is
    /// the newest one's id. The session then starts live with a `reset` at that id instead.
    pub(super) overflow: Option<Option<EventId>>,
}

impl SessionShared {
    pub(crate) fn new(config: Arc<SessionConfig>, transport: Arc<dyn Transport>) -> Self {
        SessionShared {
            state: Mutex::new(SessionState {
                frames: FrameQueue::Empty,
                bytes: 0,
                start: Some(Box::new(Start {
                    pending: Some(Pending::default()),
                    ..Start::default()
                })),
                closed: None,
                waker: None,
                last_write: None,
            }),
            config,
            transport,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SessionState> {
        crate::backend::lock(&self.state)
    }

    pub(crate) fn replay_limits(&self) -> ReplayLimits {
        self.config.replay_limits
    }

    /// Queue one frame (a live event when `id` is set, a control frame otherwise).
    pub(crate) fn push(&self, id: Option<&EventId>, frame: &Bytes) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            if let Some(pending) = st.start.as_mut().and_then(|s| s.pending.as_mut()) {
                if let Some(newest) = pending.overflow.as_mut() {
                    if id.is_some() {
                        *newest = id.cloned();
                    }
                    return;
                }
                pending.frames.push((id.cloned(), frame.clone()));
                pending.bytes += frame.len();
                if pending.frames.len() > self.config.limits.max_events
                    || pending.bytes > self.config.limits.max_bytes
                {
                    // More live events than the queue holds arrived while the session was not
                    // live yet (a slow replay on a busy channel). Closing would lock the client
                    // out: it would come back with the same id and overflow again. Instead it
                    // gets a reset at the newest of them, and goes live after it.
                    let newest = pending.frames.iter().rev().find_map(|(id, _)| id.clone());
                    *pending = Pending {
                        overflow: Some(newest),
                        ..Pending::default()
                    };
                    tracing::debug!("live events overflowed a resuming session: it gets a reset");
                }
                return;
            }
            if let Some(id) = id
                && let Some(start) = st.start.as_mut()
            {
                if self.already_sent(&mut start.seen_up_to, id) {
                    return;
                }
                // Live, and past what the client had: nothing left of the start.
                st.start = None;
            }
            self.enqueue(&mut st, frame.clone());
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the client already has live event `id`; clears the filter at the first newer one.
    pub(super) fn already_sent(&self, seen_up_to: &mut Option<EventId>, id: &EventId) -> bool {
        let Some(last) = seen_up_to.as_ref() else {
            return false;
        };
        match self.config.broker.id_order(id, last) {
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
            st.frames.len() + 1 > self.config.limits.max_events
                || st.bytes + len > self.config.limits.max_bytes
        };
        if full(st) {
            match self.config.policy {
                OverflowPolicy::Disconnect => {
                    // What is queued is still delivered, then the stream ends: the client
                    // resumes after the last event it got. Discarding the queue instead would
                    // livelock a client that resumed from far back: its replay would be thrown
                    // away at the next live event, every time.
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
        st.push_frame(frame);
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
                if st
                    .start
                    .as_ref()
                    .is_none_or(|s| s.pending.is_none() || s.replay.is_some())
                {
                    st.push_raw(f);
                }
            }
            st.close(reason, !drain);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Start timing keep-alives from `now` (see [`KeepAlives`](super::keep_alive::KeepAlives)).
    pub(super) fn keep_alive_from(&self, now: Instant) {
        self.lock().last_write = Some(now);
    }

    /// A keep-alive visit at `now`: queue a keep-alive comment if nothing was handed to the
    /// client for `every` and nothing waits to be. Returns the time the next period counts
    /// from, or `None` once the session is closed.
    pub(super) fn keep_alive_due(&self, now: Instant, every: Duration) -> Option<Instant> {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return None;
            }
            let last = st.last_write.unwrap_or(now);
            if last.checked_add(every).is_some_and(|due| due > now) {
                return Some(last);
            }
            if !st.frames.is_empty() {
                // Bytes are waiting for the client already: they keep the stream alive.
                return Some(now);
            }
            st.push_raw(self.transport.keep_alive());
            st.last_write = Some(now);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Some(now)
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Take everything queued as one chunk, or register the waker.
    pub(super) fn poll_frames(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut st = self.lock();
        if !st.frames.is_empty() {
            let bytes = st.bytes;
            let chunk = st.frames.take_all(bytes);
            st.bytes = 0;
            if let Some(at) = st.last_write.as_mut() {
                *at = Instant::now();
            }
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

/// A session's frames waiting for the client. Most sessions are idle most of the time with one
/// frame at most queued (a keep-alive, an event): that one is held inline, with no allocation.
/// A session that once had two queued has a buffer, grows it as needed and keeps it.
pub(super) enum FrameQueue {
    Empty,
    One(Bytes),
    Many(VecDeque<Bytes>),
}

impl FrameQueue {
    pub(super) fn len(&self) -> usize {
        match self {
            FrameQueue::Empty => 0,
            FrameQueue::One(_) => 1,
            FrameQueue::Many(q) => q.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_back(&mut self, frame: Bytes) {
        match self {
            FrameQueue::Empty => *self = FrameQueue::One(frame),
            FrameQueue::One(_) => {
                let FrameQueue::One(first) = std::mem::replace(self, FrameQueue::Empty) else {
                    return;
                };
                let mut q = VecDeque::with_capacity(2);
                q.push_back(first);
                q.push_back(frame);
                *self = FrameQueue::Many(q);
            }
            FrameQueue::Many(q) => q.push_back(frame),
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        match self {
            FrameQueue::Empty => None,
            FrameQueue::One(_) => match std::mem::replace(self, FrameQueue::Empty) {
                FrameQueue::One(f) => Some(f),
                _ => None,
            },
            FrameQueue::Many(q) => q.pop_front(),
        }
    }

    /// Everything queued as one chunk (`bytes` long).
    fn take_all(&mut self, bytes: usize) -> Bytes {
        match self {
            FrameQueue::Many(q) if q.len() > 1 => {
                let mut buf = BytesMut::with_capacity(bytes);
                for f in q.drain(..) {
                    buf.extend_from_slice(&f);
                }
                buf.freeze()
            }
            _ => self.pop_front().unwrap_or_default(),
        }
    }

    fn clear(&mut self) {
        match self {
            FrameQueue::Many(q) => q.clear(),
            _ => *self = FrameQueue::Empty,
        }
    }
}

impl SessionState {
    /// Queue a frame past the bounds: control frames, and replay pages (bounded by the page).
    pub(super) fn push_raw(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.push_frame(frame);
    }

    fn push_frame(&mut self, frame: Bytes) {
        self.frames.push_back(frame);
    }

    pub(super) fn close(&mut self, reason: CloseReason, discard: bool) {
        if reason == CloseReason::Overflow {
            metrics::counter!(crate::metric_names::SLOW_CONSUMER_DISCONNECTS).increment(1);
            tracing::debug!("session queue overflowed: disconnecting a slow consumer");
        }
        self.closed = Some(reason);
        if discard {
            self.frames.clear();
            self.bytes = 0;
        }
        self.start = None;
    }
}
