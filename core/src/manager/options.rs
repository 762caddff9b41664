//! [`SubscribeOptions`]: how one session starts; [`PublishOptions`]: how one publish goes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::id::EventName;
use crate::idempotency::IdempotencyKey;
use crate::transport::{Sse, Transport};

type InitialFuture<E> = Pin<Box<dyn Future<Output = Option<E>> + Send>>;

/// The first event of a session: given, or computed after the session joined the live feed.
pub(super) enum Initial<E> {
    Value(E),
    Compute(Arc<dyn Fn() -> InitialFuture<E> + Send + Sync>),
}

impl<E: Clone> Clone for Initial<E> {
    fn clone(&self) -> Self {
        match self {
            Initial::Value(e) => Initial::Value(e.clone()),
            Initial::Compute(f) => Initial::Compute(f.clone()),
        }
    }
}

impl<E> Initial<E> {
    pub(super) async fn get(self) -> Option<E> {
        match self {
            Initial::Value(e) => Some(e),
            Initial::Compute(f) => f().await,
        }
    }
}

/// How a session starts: which transport, where to resume, what to send first.
#[derive(Clone)]
#[must_use]
pub struct SubscribeOptions<E> {
    pub(super) transport: Arc<dyn Transport>,
    pub(super) last_event_id: Option<String>,
    pub(super) initial_event: Option<Initial<E>>,
    pub(super) retry: Option<Duration>,
    pub(super) keep_alive: Option<Duration>,
    pub(super) from_tail: bool,
    pub(super) user: Option<crate::presence::PresenceUser>,
}

impl<E> fmt::Debug for SubscribeOptions<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("transport", &self.transport.name())
            .field("last_event_id", &self.last_event_id)
            .field("retry", &self.retry)
            .field("keep_alive", &self.keep_alive)
            .field("from_tail", &self.from_tail)
            .field("user", &self.user.as_ref().map(|u| &u.id))
            .finish_non_exhaustive()
    }
}

impl<E> Default for SubscribeOptions<E> {
    fn default() -> Self {
        SubscribeOptions {
            transport: Arc::new(Sse),
            last_event_id: None,
            initial_event: None,
            retry: None,
            keep_alive: None,
            from_tail: false,
            user: None,
        }
    }
}

impl<E> SubscribeOptions<E> {
    /// SSE framing, no resume, no initial event, no retry hint, no keep-alive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frame with this transport. Default: [`Sse`].
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
    }

    /// Open this session as one channel of a
    /// [`MultiplexedSession`](crate::multiplex::MultiplexedSession), which re-frames its events
    /// with the channel's label and the connection's id. Replaces [`transport`](Self::transport):
    /// the session's own frames are an internal record format, never sent to a client as they
    /// are.
    pub fn for_multiplex(self) -> Self {
        self.transport(Arc::new(crate::multiplex::Tagged))
    }

    /// Resume after this untrusted id (a `Last-Event-ID`). A malformed, unknown or too old id
    /// starts the stream with a `reset` event instead. Default: none (live events only).
    pub fn last_event_id(mut self, id: Option<impl Into<String>>) -> Self {
        self.last_event_id = id.map(Into::into);
        self
    }

    /// Send this event first (without an id, so it never moves the client's resume point),
    /// unless the session resumes exactly (see [`ChannelManager::subscribe`](crate::ChannelManager::subscribe)).
    pub fn initial_event(mut self, event: Option<E>) -> Self {
        self.initial_event = event.map(Initial::Value);
        self
    }

    /// Compute the first event once the session has joined the live feed (so nothing published
    /// meanwhile is lost, and the snapshot is never older than what follows it), unless the
    /// session resumes exactly. `None` sends none.
    pub fn initial_with<F, Fut>(mut self, compute: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<E>> + Send + 'static,
    {
        self.initial_event = Some(Initial::Compute(Arc::new(move || Box::pin(compute()))));
        self
    }

    /// Send a `retry:` hint first. Default: none.
    pub fn retry(mut self, retry: Option<Duration>) -> Self {
        self.retry = retry;
        self
    }

    /// When the session does not resume exactly, start its position at the topic's newest
    /// event ([`Broker::tail`](crate::Broker::tail), one more broker read) instead of nowhere:
    /// [`Session::start_position`](crate::Session::start_position) then names a point a
    /// later resume can replay from, although this stream may deliver no event before it
    /// ends. Live events up to that point are covered by the initial event and not sent again.
    /// Multiplexed streams use it for every channel. Default: off.
    pub fn from_tail(mut self, on: bool) -> Self {
        self.from_tail = on;
        self
    }

    /// Count this session for the user `id` in presence, with `info` (any JSON, for example a
    /// display name) shown beside it: [`ChannelManager::presence`](crate::ChannelManager::presence)
    /// then lists the channel's users with their session counts, across every node. The id and
    /// info travel in the nodes' presence signals, so keep them small. Default: no user (the
    /// session counts in [`ChannelPresence::sessions`](crate::ChannelPresence::sessions) only).
    pub fn user(mut self, id: impl Into<String>, info: Option<serde_json::Value>) -> Self {
        self.user = Some(crate::presence::PresenceUser {
            id: id.into(),
            info,
        });
        self
    }

    /// Send a keep-alive comment after this long without output. Default: none.
    pub fn keep_alive(mut self, every: Option<Duration>) -> Self {
        self.keep_alive = every;
        self
    }
}

/// How one publish goes ([`ChannelManager::publish_with`](crate::ChannelManager::publish_with),
/// [`publish_many_with`](crate::ChannelManager::publish_many_with)): its SSE event name and its
/// idempotency key.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct PublishOptions {
    pub(crate) event: Option<String>,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
}

impl PublishOptions {
    /// The manager's event name, a fresh idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publish with this SSE event name, whatever the builder's
    /// [`event_name`](crate::ChannelManagerBuilder::event_name) would say. Validated when
    /// published ([`EventName::new`]: no control characters, not `reset`).
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event = Some(name.into());
        self
    }

    /// Publish under this key: a publish of the same key to the same resource within the
    /// broker's window ([`Capabilities::idempotency`](crate::Capabilities::idempotency), 2
    /// minutes by default) stores nothing and answers the first one's id, on any node. For a
    /// batch, event `i` gets [`key.part(i)`](IdempotencyKey::part). Default: a fresh key per
    /// publish ([`IdempotencyKey::generate`]), which makes a client library's own resends within
    /// the call safe; to retry a publish yourself, make a key with [`IdempotencyKey::new`] and
    /// pass it on every try.
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    pub(crate) fn event_name(&self) -> Result<Option<EventName>> {
        self.event.as_deref().map(EventName::new).transpose()
    }
}
