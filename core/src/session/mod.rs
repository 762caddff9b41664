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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;

use crate::id::{EventId, Topic};
use crate::transport::Transport;

mod keep_alive;
mod queue;
mod replay;

pub(crate) use keep_alive::KeepAlives;
pub(crate) use queue::{SessionConfig, SessionShared};
use replay::PageFuture;
pub use replay::ReplayLimits;
pub(crate) use replay::Replayer;

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

/// One client's stream of framed bytes, ready to be an HTTP response body.
///
/// Made by [`ChannelManager::subscribe`](crate::ChannelManager::subscribe). Each poll yields
/// everything queued since the last one as a single chunk, so one write carries many events
/// under load. The stream ends when the server shuts down, when the client falls further behind
/// than its [`QueueLimits`], or when the broker subscription is lost. Dropping it leaves the
/// channel; the last session leaving lets the channel go after a short linger.
pub struct Session {
    shared: Arc<SessionShared>,
    membership: Membership,
    /// What only some sessions have (a replay to read, a lifetime, a start position): one
    /// allocation for those, none for a plain live session.
    more: Option<Box<SessionMore>>,
}

struct SessionMore {
    /// Reads the next replay page when the queue has drained.
    replayer: Option<Replayer>,
    fetch: Option<PageFuture>,
    /// The retry hint sent when a replay page fails or the lifetime ends.
    retry: Duration,
    /// The end of the stream's lifetime, when it has one.
    lifetime: Option<Pin<Box<tokio::time::Sleep>>>,
    start_position: Option<EventId>,
    /// Counts the session for its user in presence while it lives.
    _user: Option<crate::presence::UserGuard>,
}

/// The channel a session belongs to, as the session sees it: its topic, and how to leave it.
/// The hub's channels implement it, so a session knows nothing of the hub.
pub(crate) trait Joined: Send + Sync {
    /// The channel's topic.
    fn topic(&self) -> &Topic;
    /// The session at `key` is gone: take it out of the channel.
    fn leave(self: Arc<Self>, key: usize);
}

/// A session's place in its channel; dropping it leaves the channel.
pub(crate) struct Membership {
    channel: Arc<dyn Joined>,
    key: usize,
}

impl Membership {
    pub(crate) fn new(channel: Arc<dyn Joined>, key: usize) -> Self {
        Membership { channel, key }
    }

    fn topic(&self) -> &Topic {
        self.channel.topic()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.channel.clone().leave(self.key);
    }
}

/// How a [`Session`] runs, besides its queue.
pub(crate) struct SessionRun {
    pub(crate) replayer: Option<Replayer>,
    pub(crate) retry: Duration,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) start_position: Option<EventId>,
    pub(crate) user: Option<crate::presence::UserGuard>,
}

impl Session {
    pub(crate) fn new(shared: Arc<SessionShared>, membership: Membership, run: SessionRun) -> Self {
        let more = (run.replayer.is_some()
            || run.max_lifetime.is_some()
            || run.start_position.is_some()
            || run.user.is_some())
        .then(|| {
            Box::new(SessionMore {
                replayer: run.replayer,
                fetch: None,
                retry: run.retry,
                lifetime: run.max_lifetime.map(|d| Box::pin(tokio::time::sleep(d))),
                start_position: run.start_position,
                _user: run.user,
            })
        });
        Session {
            shared,
            membership,
            more,
        }
    }

    /// The topic this session listens to.
    #[must_use]
    pub fn topic(&self) -> &Topic {
        self.membership.topic()
    }

    /// Where this session's stream starts in its topic's history: the id it resumed from
    /// exactly (its client's `Last-Event-ID`, which the broker could replay from), or, with
    /// [`SubscribeOptions::from_tail`](crate::SubscribeOptions::from_tail), the topic's newest
    /// event when it started afresh. `None` when it has no such point (a fresh start without
    /// `from_tail`, an empty topic, a `reset`).
    #[must_use]
    pub fn start_position(&self) -> Option<&EventId> {
        self.more.as_ref()?.start_position.as_ref()
    }

    /// The transport framing this session's bytes.
    #[must_use]
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// Why the stream ended, once it has (`None` while it runs or when it ended otherwise).
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }

    /// Start reading the next replay page, when one is due and none is being read.
    fn start_fetch(shared: &SessionShared, more: &mut SessionMore) -> bool {
        if more.fetch.is_some() {
            return false;
        }
        let (Some(r), Some(after)) = (more.replayer.as_ref(), shared.next_page()) else {
            return false;
        };
        let (broker, topic, permits) = (r.broker.clone(), r.topic.clone(), r.permits.clone());
        let page = shared.replay_limits().page();
        more.fetch = Some(Box::pin(async move {
            // At most so many replays read at once on this node; the rest wait their turn.
            let _permit = permits.acquire_owned().await;
            broker.replay(&topic, &after, page).await
        }));
        true
    }
}

/// `now + every`, or as far as the clock goes (a huge keep-alive never fires, never panics).
pub(crate) fn after(every: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(every)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("topic", self.topic())
            .field("transport", &self.shared.transport.name())
            .finish_non_exhaustive()
    }
}

impl Stream for Session {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        loop {
            match this.shared.poll_frames(cx) {
                Poll::Ready(chunk) => return Poll::Ready(chunk),
                Poll::Pending => {}
            }
            let Some(more) = this.more.as_mut() else {
                return Poll::Pending;
            };
            // The queue is empty: the client has taken everything. Time for the next page.
            if let Some(fetch) = more.fetch.as_mut() {
                if let Poll::Ready(answer) = fetch.as_mut().poll(cx) {
                    more.fetch = None;
                    this.shared.apply_page(answer, more.retry);
                    continue;
                }
            } else if Self::start_fetch(&this.shared, more) {
                continue;
            }
            break;
        }
        if let Some(more) = this.more.as_mut()
            && let Some(lifetime) = more.lifetime.as_mut()
            && lifetime.as_mut().poll(cx).is_ready()
        {
            more.lifetime = None;
            let retry = this.shared.transport.retry(more.retry);
            this.shared.close(CloseReason::Lifetime, Some(retry), true);
            return this.shared.poll_frames(cx);
        }
        Poll::Pending
    }
}
