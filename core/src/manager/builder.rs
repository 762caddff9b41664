//! [`ChannelManagerBuilder`]: the settings of a [`ChannelManager`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::{ChannelManager, Inner, NameFn};
use crate::broker::Broker;
use crate::error::Result;
use crate::hub::{Hub, HubConfig};
use crate::id::validate_key_part;
use crate::presence::PresenceConfig;
use crate::session::{OverflowPolicy, QueueLimits, ReplayLimits};

/// Builds a [`ChannelManager`]; every setter documents its default.
#[must_use]
pub struct ChannelManagerBuilder<E> {
    pub(super) broker: Arc<dyn Broker>,
    pub(super) key_prefix: Option<String>,
    pub(super) key_suffix: Option<String>,
    pub(super) event_name: Option<Arc<NameFn<E>>>,
    pub(super) max_event_bytes: Option<usize>,
    pub(super) hub: HubConfig,
    pub(super) max_lifetime: Option<Duration>,
}

impl<E> fmt::Debug for ChannelManagerBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelManagerBuilder")
            .field("key_prefix", &self.key_prefix)
            .field("key_suffix", &self.key_suffix)
            .finish_non_exhaustive()
    }
}

impl<E> ChannelManagerBuilder<E> {
    /// The first part of every channel key, e.g. `discussion`. Default: none.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// The last part of every channel key, e.g. `comments`. Default: none.
    pub fn key_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.key_suffix = Some(suffix.into());
        self
    }

    /// Name each event's SSE `event:` field from the event itself, e.g. an enum's variant.
    /// Default: every event is a `message` (what `EventSource.onmessage` receives).
    pub fn event_name(mut self, name: impl Fn(&E) -> &'static str + Send + Sync + 'static) -> Self {
        self.event_name = Some(Arc::new(name));
        self
    }

    /// The largest serialized event accepted by `publish`. Default: the broker's
    /// `max_payload` (1 MiB for the built-in backends); a larger value is capped to it.
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = Some(max);
        self
    }

    /// How long a channel with no session keeps its broker subscription, so a client that
    /// reconnects at once finds it warm. Default: 5 seconds.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.hub.linger = linger;
        self
    }

    /// Bounds of each session's queue. Default: [`QueueLimits::default`] (1,024 frames, 8 MiB).
    pub fn queue_limits(mut self, limits: QueueLimits) -> Self {
        self.hub.queue = limits;
        self
    }

    /// What happens when a session's queue is full. Default: [`OverflowPolicy::Disconnect`].
    pub fn overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.hub.overflow = policy;
        self
    }

    /// Most sessions on this node, all channels together. Default: unlimited.
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.hub.max_sessions = Some(max);
        self
    }

    /// Most sessions on this node for one channel. Default: unlimited.
    pub fn max_sessions_per_channel(mut self, max: usize) -> Self {
        self.hub.max_sessions_per_channel = Some(max);
        self
    }

    /// Most channels with sessions at once on this node (for this manager). Each costs a broker
    /// subscription, so without an `authorize` hook a client could otherwise make the server
    /// hold as many as it can name. Past it a new channel is refused with
    /// [`Error::TooManyChannels`](crate::Error::TooManyChannels) (the HTTP adapter answers `503` with `Retry-After`).
    /// Default: 10,000.
    pub fn max_channels(mut self, max: usize) -> Self {
        self.hub.max_channels = Some(max);
        self
    }

    /// How a resuming session reads what it missed. Default: [`ReplayLimits::default`] (pages
    /// of 32 events, at most 10,000 events or 64 MiB, then a `reset`).
    pub fn replay_limits(mut self, limits: ReplayLimits) -> Self {
        self.hub.replay = limits;
        self
    }

    /// Replay pages read from the broker at once on this node; more resuming clients wait
    /// their turn, so a burst of them does not stall publishing. Default: 16.
    pub fn max_concurrent_replays(mut self, max: usize) -> Self {
        self.hub.max_concurrent_replays = max.max(1);
        self
    }

    /// Presence timings (how fast counts travel, and the bound within which a dead node drops
    /// out). Default: [`PresenceConfig::default`] (reports coalesced to 200 ms, a heartbeat
    /// every 5 s, a dead node gone within 15 s).
    pub fn presence(mut self, config: PresenceConfig) -> Self {
        self.hub.presence = config;
        self
    }

    /// Send every session a `presence` event without an id when its channel's cluster-wide
    /// session count changes or a user joins or leaves it (at most once per
    /// [`PresenceConfig::coalesce`]): `{"sessions":n}`, with `"joined":[ids]` and
    /// `"left":[ids]` when users (see [`SubscribeOptions::user`](crate::SubscribeOptions::user))
    /// came or went: a user joins with their first session and leaves with their last.
    /// Default: off.
    pub fn presence_events(mut self, on: bool) -> Self {
        self.hub.presence_events = on;
        self
    }

    /// End every stream after this long with a retry hint: the client reconnects (resuming
    /// where it was) and is authorized again, so access that was revoked elsewhere ends within
    /// this bound. Default: none.
    pub fn max_session_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime).filter(|d| !d.is_zero());
        self
    }

    /// Validate the key parts and build the manager.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the key prefix or suffix is
    /// not a valid key part ([`validate_key_part`](crate::validate_key_part)).
    pub fn build(self) -> Result<ChannelManager<E>> {
        let key_prefix = self.key_prefix.filter(|p| !p.is_empty());
        let key_suffix = self.key_suffix.filter(|s| !s.is_empty());
        for (which, part) in key_prefix
            .iter()
            .map(|p| ("key prefix", p))
            .chain(key_suffix.iter().map(|s| ("key suffix", s)))
        {
            validate_key_part(part).map_err(|e| crate::Error::InvalidConfig {
                reason: format!("{which}: {e}").into(),
            })?;
        }
        let broker_max = self.broker.capabilities().max_payload;
        let max_event_bytes = self.max_event_bytes.unwrap_or(broker_max).min(broker_max);
        Ok(ChannelManager {
            inner: Arc::new(Inner {
                hub: Hub::new(self.broker, self.hub),
                key_prefix,
                key_suffix,
                event_name: self.event_name,
                max_event_bytes,
                max_lifetime: self.max_lifetime,
                _event: PhantomData,
            }),
        })
    }
}
