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
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;

use crate::broker::{Broker, Envelope, Replay};
use crate::hub::Registration;
use crate::id::{EventId, Topic};
use crate::transport::{ResetReason, Transport};

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
    /// The broker subscription ended, or a replay page could not be read; the client should
    /// reconnect.
    BrokerLost,
    /// The application revoked it ([`ChannelManager::close_channel`](crate::ChannelManager::close_channel)):
    /// the client reconnects and is authorized again.
    Revoked,
    /// It reached its maximum lifetime; the client reconnects and is authorized again.
    Lifetime,
}

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

pub(crate) struct SessionShared {
    state: Mutex<SessionState>,
    limits: QueueLimits,
    policy: OverflowPolicy,
    replay_limits: ReplayLimits,
    /// Orders event ids, to drop live events the client already has after a resume.
    broker: Arc<dyn Broker>,
    /// Frames the resets and replayed events this session queues itself.
    transport: Arc<dyn Transport>,
}

struct SessionState {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// `Some` until the session is live (while it joins, and while it replays page by page):
    /// live frames wait here, with their ids.
    pending: Option<Pending>,
    /// While a replay goes on: where the next page starts, and what is left of the budget.
    replay: Option<Cursor>,
    /// After a resume, the last id the client has (replayed, or the one it resumed from). The
    /// hub's feed may lag the broker, so live events up to it are dropped; the first later one
    /// clears it (live order is publish order).
    seen_up_to: Option<EventId>,
    closed: Option<CloseReason>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Pending {
    frames: Vec<(Option<EventId>, Bytes)>,
    bytes: usize,
    /// Set once more live events arrived than the queue holds: they were dropped, and this is
    /// the newest one's id. The session then starts live with a `reset` at that id instead.
    overflow: Option<Option<EventId>>,
}

struct Cursor {
    after: EventId,
    events_left: usize,
    bytes_left: usize,
}

/// What the session needs to read the next page of its replay.
pub(crate) struct Replayer {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) topic: Topic,
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
}

type PageFuture = Pin<Box<dyn Future<Output = crate::error::Result<Replay>> + Send>>;

impl SessionShared {
    pub(crate) fn new(
        limits: QueueLimits,
        policy: OverflowPolicy,
        replay_limits: ReplayLimits,
        broker: Arc<dyn Broker>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        SessionShared {
            state: Mutex::new(SessionState {
                frames: VecDeque::new(),
                bytes: 0,
                pending: Some(Pending::default()),
                replay: None,
                seen_up_to: None,
                closed: None,
                waker: None,
            }),
            limits,
            policy,
            replay_limits,
            broker,
            transport,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        crate::backend::lock(&self.state)
    }

    pub(crate) fn replay_limits(&self) -> ReplayLimits {
        self.replay_limits
    }

    /// Queue one frame (a live event when `id` is set, a control frame otherwise).
    pub(crate) fn push(&self, id: Option<&EventId>, frame: &Bytes) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            if let Some(pending) = st.pending.as_mut() {
                if let Some(newest) = pending.overflow.as_mut() {
                    if id.is_some() {
                        *newest = id.cloned();
                    }
                    return;
                }
                pending.frames.push((id.cloned(), frame.clone()));
                pending.bytes += frame.len();
                if pending.frames.len() > self.limits.max_events
                    || pending.bytes > self.limits.max_bytes
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
                && self.already_sent(&mut st.seen_up_to, id)
            {
                return;
            }
            self.enqueue(&mut st, frame.clone());
            st.waker.take()
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
        st.frames.push_back(frame);
    }

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
            st.seen_up_to = resumed_from.clone();
            let cursor = resumed_from.map(|after| Cursor {
                after,
                events_left: self.replay_limits.max_events,
                bytes_left: self.replay_limits.max_bytes,
            });
            st.replay = cursor;
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
            let Some(cursor) = st.replay.as_mut() else {
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
            st.seen_up_to = Some(env.id);
        }
        let overflowed = st.pending.as_ref().is_some_and(|p| p.overflow.is_some());
        if spent && !overflowed {
            // (With overflowed live events, going live below sends the one reset, at their id.)
            crate::metrics::resets_sent(ResetReason::Overflow, 1);
            tracing::debug!("a replay went past its budget: the session gets a reset");
            st.push_raw(self.transport.reset(ResetReason::Overflow, None));
        }
        if spent || !more {
            self.go_live(st);
        }
    }

    /// End the replay: queue the live frames that waited (or the reset that replaced them).
    fn go_live(&self, st: &mut SessionState) {
        st.replay = None;
        let Some(pending) = st.pending.take() else {
            return;
        };
        let mut seen_up_to = st.seen_up_to.take();
        match pending.overflow {
            Some(newest) => {
                // The replay reads the broker's history, which holds the dropped live events
                // too: when it reached the newest of them, the client has them all.
                let covered = match (&newest, &seen_up_to) {
                    (Some(n), Some(seen)) => matches!(
                        self.broker.id_order(n, seen),
                        Some(Ordering::Less | Ordering::Equal)
                    ),
                    _ => false,
                };
                if !covered {
                    crate::metrics::resets_sent(ResetReason::Overflow, 1);
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
        st.seen_up_to = seen_up_to;
    }

    /// Where the next page of the replay starts, when one is due.
    fn next_page(&self) -> Option<EventId> {
        let st = self.lock();
        if st.closed.is_some() {
            return None;
        }
        st.replay.as_ref().map(|c| c.after.clone())
    }

    /// Apply the broker's answer for the next page.
    fn apply_page(&self, answer: crate::error::Result<Replay>, retry: Duration) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() || st.replay.is_none() {
                return;
            }
            match answer {
                Ok(Replay::Events(events)) => {
                    let more = events.len() >= self.replay_limits.page;
                    self.queue_page(&mut st, events, more);
                }
                Ok(Replay::Gap) => {
                    // History was trimmed past the cursor while the client read.
                    crate::metrics::resets_sent(ResetReason::OutOfWindow, 1);
                    st.push_raw(self.transport.reset(ResetReason::OutOfWindow, None));
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

    /// Close the session. With `drain`, frames already queued (and `last`) are still delivered.
    pub(crate) fn close(&self, reason: CloseReason, last: Option<Bytes>, drain: bool) {
        let waker = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            if let Some(f) = last {
                // A final frame is always delivered, bound or not: it is tiny and the last one.
                if st.pending.is_none() || st.replay.is_some() {
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
    /// Queue a frame past the bounds: control frames, and replay pages (bounded by the page).
    fn push_raw(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

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
        self.replay = None;
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
    /// Reads the next replay page when the queue has drained.
    replayer: Option<Replayer>,
    fetch: Option<PageFuture>,
    /// The retry hint sent when a replay page fails or the lifetime ends.
    retry: Duration,
    /// The end of the stream's lifetime, when it has one.
    lifetime: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How a [`Session`] runs, besides its queue.
pub(crate) struct SessionRun {
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) replayer: Option<Replayer>,
    pub(crate) retry: Duration,
    pub(crate) max_lifetime: Option<Duration>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<SessionShared>,
        registration: Registration,
        transport: Arc<dyn Transport>,
        run: SessionRun,
    ) -> Self {
        let keep_alive = run
            .keep_alive
            .filter(|d| !d.is_zero())
            .map(|d| (d, Box::pin(tokio::time::sleep(d))));
        Session {
            shared,
            registration,
            transport,
            keep_alive,
            replayer: run.replayer,
            fetch: None,
            retry: run.retry,
            lifetime: run.max_lifetime.map(|d| Box::pin(tokio::time::sleep(d))),
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

    /// Start reading the next replay page, when one is due and none is being read.
    fn start_fetch(&mut self) -> bool {
        if self.fetch.is_some() {
            return false;
        }
        let (Some(r), Some(after)) = (self.replayer.as_ref(), self.shared.next_page()) else {
            return false;
        };
        let (broker, topic, permits) = (r.broker.clone(), r.topic.clone(), r.permits.clone());
        let page = self.shared.replay_limits().page();
        self.fetch = Some(Box::pin(async move {
            // At most so many replays read at once on this node; the rest wait their turn.
            let _permit = permits.acquire_owned().await;
            broker.replay(&topic, &after, page).await
        }));
        true
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
        loop {
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
            // The queue is empty: the client has taken everything. Time for the next page.
            if let Some(fetch) = this.fetch.as_mut() {
                if let Poll::Ready(answer) = fetch.as_mut().poll(cx) {
                    this.fetch = None;
                    this.shared.apply_page(answer, this.retry);
                    continue;
                }
            } else if this.start_fetch() {
                continue;
            }
            break;
        }
        if let Some(lifetime) = this.lifetime.as_mut()
            && lifetime.as_mut().poll(cx).is_ready()
        {
            this.lifetime = None;
            let retry = this.transport.retry(this.retry);
            this.shared.close(CloseReason::Lifetime, Some(retry), true);
            return this.shared.poll_frames(cx);
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
