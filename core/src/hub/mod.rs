//! The local fan-out hub: one broker subscription per topic per process, shared by every local
//! session of that topic.
//!
//! A channel costs no task of its own: its broker subscription is a [`Feed`] polled by one of a
//! few pump tasks per hub (one per runtime worker), which also time the linger of idle channels
//! (one timer per pump, not one per channel).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use slab::Slab;
use tokio::sync::{Notify, mpsc};

use crate::backend::lock;
use crate::broker::{Broker, Envelope};
use crate::error::{Error, Result};
use crate::id::{EventName, PRESENCE_EVENT, Topic};
use crate::presence::{Presence, PresenceConfig};
use crate::session::{
    CloseReason, Joined, KeepAlives, Membership, OverflowPolicy, QueueLimits, ReplayLimits,
    SessionConfig, SessionShared,
};

mod pump;

use crate::transport::{ResetReason, Transport};
use pump::{Command, Feed, spawn_pump};

/// Settings of the hub, set through the [`ChannelManager`](crate::ChannelManager) builder.
#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    pub(crate) linger: Duration,
    pub(crate) queue: QueueLimits,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) max_sessions: Option<usize>,
    pub(crate) max_sessions_per_channel: Option<usize>,
    pub(crate) max_channels: Option<usize>,
    pub(crate) replay: ReplayLimits,
    pub(crate) max_concurrent_replays: usize,
    pub(crate) presence: PresenceConfig,
    pub(crate) presence_events: bool,
}

pub(crate) struct Hub {
    shared: Arc<HubShared>,
}

struct HubShared {
    broker: Arc<dyn Broker>,
    config: HubConfig,
    session_config: Arc<SessionConfig>,
    channels: Mutex<HashMap<Topic, Arc<ChannelInner>>>,
    sessions: AtomicUsize,
    shutting_down: AtomicBool,
    /// Replay pages read at once on this node.
    replay_permits: Arc<tokio::sync::Semaphore>,
    /// Session counts across the cluster.
    presence: Arc<Presence>,
    /// The pump tasks' command queues, started with the first channel (one per runtime worker).
    pumps: Mutex<Vec<mpsc::UnboundedSender<Command>>>,
    /// Assigns new channels to pumps, round robin.
    next_pump: AtomicUsize,
    /// One timer for every session's keep-alive.
    keep_alives: Arc<KeepAlives>,
}

#[derive(Clone, Debug)]
enum Ready {
    Connecting,
    Live,
    Failed(Arc<Error>),
}

pub(crate) struct ChannelInner {
    topic: Topic,
    sessions: Mutex<Slab<SessionEntry>>,
    /// Whether the broker subscription is live; `ready_changed` is signalled when it is set.
    /// (A mutex and a `Notify`, not a `watch` channel: this is per channel, and a `watch`
    /// allocates eight wait lists.)
    ready: Mutex<Ready>,
    ready_changed: Notify,
    /// Wakes the channel's [`Feed`] in its pump, to end it once the channel is removed.
    feed: AtomicWaker,
    /// Counts the times the channel became idle: a linger ends the channel only if it has not
    /// been joined and left again since.
    idle_since: AtomicU64,
    /// The pump polling this channel's feed (an index into the hub's pumps).
    pump: usize,
    removed: AtomicBool,
    /// The hub it belongs to (held here once, not by each of its sessions and feeds).
    hub: Weak<HubShared>,
}

/// A session as its channel holds it (its transport is in its shared state).
type SessionEntry = Arc<SessionShared>;

impl Hub {
    pub(crate) fn new(broker: Arc<dyn Broker>, config: HubConfig) -> Self {
        let hub = Hub {
            shared: Arc::new(HubShared {
                broker: broker.clone(),
                config: config.clone(),
                session_config: Arc::new(SessionConfig {
                    limits: config.queue,
                    policy: config.overflow,
                    replay_limits: config.replay,
                    broker: broker.clone(),
                }),
                channels: Mutex::new(HashMap::new()),
                sessions: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                replay_permits: Arc::new(tokio::sync::Semaphore::new(
                    config.max_concurrent_replays.max(1),
                )),
                presence: Presence::new(broker, config.presence),
                pumps: Mutex::new(Vec::new()),
                next_pump: AtomicUsize::new(0),
                keep_alives: KeepAlives::new(),
            }),
        };
        if config.presence_events {
            let weak = Arc::downgrade(&hub.shared);
            hub.shared.presence.watch(
                true,
                Arc::new(move |topic, change| {
                    let Some(shared) = weak.upgrade() else { return };
                    let data = change.to_json();
                    let name = EventName::from_static(PRESENCE_EVENT).unwrap_or_default();
                    shared.push_control(topic, &|t| t.event(None, &name, data.as_bytes()));
                }),
            );
        }
        hub
    }

    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.shared.broker
    }

    /// Send `session` a keep-alive comment after every `every` without a write (from the hub's
    /// one keep-alive timer).
    pub(crate) fn keep_alive(&self, session: &Arc<SessionShared>, every: Duration) {
        self.shared.keep_alives.add(session, every);
    }

    /// Join `topic`'s channel, creating it (and the broker subscription) when it is the first.
    /// Returns once the broker subscription is live, so a replay made afterwards misses nothing.
    pub(crate) async fn join(
        &self,
        topic: &Topic,
        transport: Arc<dyn Transport>,
    ) -> Result<(Arc<SessionShared>, Membership)> {
        let shared = &self.shared;
        let session = Arc::new(SessionShared::new(
            shared.session_config.clone(),
            transport.clone(),
        ));
        let (channel, key) = {
            let mut channels = lock(&shared.channels);
            if shared.shutting_down.load(Ordering::Acquire) {
                return Err(Error::Shutdown);
            }
            if let Some(max) = shared.config.max_sessions
                && shared.sessions.load(Ordering::Acquire) >= max
            {
                return Err(Error::TooManySessions("server limit reached".into()));
            }
            let channel = match channels.get(topic) {
                Some(c) => c.clone(),
                None if shared
                    .config
                    .max_channels
                    .is_some_and(|max| channels.len() >= max) =>
                {
                    let max = shared.config.max_channels.unwrap_or_default();
                    return Err(Error::TooManyChannels { max });
                }
                None => {
                    let pump = shared.next_pump.fetch_add(1, Ordering::Relaxed);
                    let pump = pump % shared.pump_count();
                    let c = ChannelInner::new(topic.clone(), pump, Arc::downgrade(shared));
                    channels.insert(topic.clone(), c.clone());
                    metrics::gauge!(crate::metric_names::CHANNELS).increment(1.0);
                    shared.open_feed(Feed::new(c.clone(), shared.broker.clone()));
                    c
                }
            };
            let mut sessions = lock(&channel.sessions);
            if let Some(max) = shared.config.max_sessions_per_channel
                && sessions.len() >= max
            {
                return Err(Error::TooManySessions("channel limit reached".into()));
            }
            if sessions.capacity() == 0 {
                // Most channels have one session or a few: room for one, growing as needed.
                sessions.reserve_exact(1);
            }
            let key = sessions.insert(session.clone());
            shared.presence.set_local(topic, sessions.len());
            drop(sessions);
            shared.sessions.fetch_add(1, Ordering::AcqRel);
            metrics::gauge!(crate::metric_names::SESSIONS).increment(1.0);
            (channel, key)
        };
        let membership = Membership::new(channel.clone(), key);
        loop {
            // Registered before the state is read, so a change in between still wakes it.
            let changed = channel.ready_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match &*lock(&channel.ready) {
                Ready::Connecting => {}
                Ready::Live => return Ok((session, membership)),
                Ready::Failed(e) => return Err(e.replicate()),
            }
            changed.await;
        }
    }

    pub(crate) fn session_count(&self, topic: &Topic) -> usize {
        lock(&self.shared.channels)
            .get(topic)
            .map_or(0, |c| lock(&c.sessions).len())
    }

    pub(crate) fn total_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::Acquire)
    }

    pub(crate) fn channel_count(&self) -> usize {
        lock(&self.shared.channels).len()
    }

    /// Remove the channel now if it has no session; `true` when it is gone (or never existed).
    pub(crate) fn cleanup_if_empty(&self, topic: &Topic) -> bool {
        let channel = lock(&self.shared.channels).get(topic).cloned();
        match channel {
            None => true,
            Some(c) => self.shared.remove_if_idle(&c),
        }
    }

    /// Stop accepting sessions and end every stream: queued frames drain, then `last(i)` (a
    /// retry hint, say) is the final frame of the i-th session.
    pub(crate) fn shutdown(&self, last: &dyn Fn(&dyn Transport, u64) -> Option<Bytes>) {
        self.shared.shutting_down.store(true, Ordering::Release);
        let channels: Vec<_> = lock(&self.shared.channels).values().cloned().collect();
        let seed = std::collections::hash_map::RandomState::new();
        for c in channels {
            for (key, entry) in lock(&c.sessions).iter() {
                let mut h = seed.build_hasher();
                h.write_usize(key);
                h.write_usize(Arc::as_ptr(&c) as usize);
                let frame = last(entry.transport.as_ref(), h.finish());
                entry.close(CloseReason::Shutdown, frame, true);
            }
        }
    }

    /// Session counts across the cluster.
    pub(crate) fn presence(&self) -> &Arc<Presence> {
        &self.shared.presence
    }

    /// The permits a replay page takes while it is read (at most so many at once).
    pub(crate) fn replay_permits(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.shared.replay_permits
    }

    /// End the streams of every channel whose topic `revoked` selects, at once (what is queued
    /// is dropped); returns how many sessions were closed. Their clients reconnect and are
    /// authorized again.
    pub(crate) fn revoke(&self, revoked: &dyn Fn(&Topic) -> bool) -> usize {
        let channels: Vec<_> = lock(&self.shared.channels)
            .values()
            .filter(|c| revoked(&c.topic))
            .cloned()
            .collect();
        let mut closed = 0;
        for c in channels {
            for (_, entry) in lock(&c.sessions).iter() {
                if entry.close_reason().is_none() {
                    closed += 1;
                }
                entry.close(CloseReason::Revoked, None, false);
            }
        }
        closed
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // The hub's owner is gone: end every feed (dropping its broker subscription).
        let channels: Vec<_> = lock(&self.shared.channels)
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in channels {
            c.mark_removed();
        }
        self.shared.keep_alives.close();
    }
}

impl HubShared {
    /// How many pumps this hub runs: one per worker of the runtime that opens its first channel.
    fn pump_count(self: &Arc<Self>) -> usize {
        let mut pumps = lock(&self.pumps);
        if pumps.is_empty() {
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            for _ in 0..workers.clamp(1, 64) {
                pumps.push(spawn_pump(self));
            }
        }
        pumps.len()
    }

    /// Hand a new channel's feed to its pump (restarting the pump if its runtime went away).
    fn open_feed(self: &Arc<Self>, feed: Feed) {
        let mut pumps = lock(&self.pumps);
        let i = feed.channel.pump;
        if let Err(mpsc::error::SendError(Command::Open(feed))) = pumps[i].send(Command::Open(feed))
        {
            pumps[i] = spawn_pump(self);
            let _ = pumps[i].send(Command::Open(feed));
        }
    }

    /// Tell `channel`'s pump that it became idle (its linger starts).
    fn idle(&self, channel: &Arc<ChannelInner>) {
        let since = channel.idle_since.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(pump) = lock(&self.pumps).get(channel.pump) {
            let _ = pump.send(Command::Idle(channel.clone(), since));
        }
    }

    /// Push a control frame (no id) to every session of `topic` on this node, framed once per
    /// transport.
    fn push_control(&self, topic: &Topic, frame_for: &dyn Fn(&dyn Transport) -> Bytes) {
        let channel = lock(&self.channels).get(topic).cloned();
        if let Some(c) = channel {
            fan_out(&lock(&c.sessions), None, frame_for);
        }
    }

    /// Remove `channel` from the map if it still has no session. Race-free against joins: both
    /// take the map lock, then the channel's session lock.
    fn remove_if_idle(&self, channel: &Arc<ChannelInner>) -> bool {
        let mut channels = lock(&self.channels);
        if !lock(&channel.sessions).is_empty() {
            return false;
        }
        if channels
            .get(&channel.topic)
            .is_some_and(|c| Arc::ptr_eq(c, channel))
        {
            channels.remove(&channel.topic);
        }
        drop(channels);
        channel.mark_removed();
        true
    }

    /// Remove `channel` whatever its sessions (its broker subscription failed or ended).
    fn remove(&self, channel: &Arc<ChannelInner>) {
        let mut channels = lock(&self.channels);
        if channels
            .get(&channel.topic)
            .is_some_and(|c| Arc::ptr_eq(c, channel))
        {
            channels.remove(&channel.topic);
        }
        channel.mark_removed();
    }
}

impl ChannelInner {
    fn new(topic: Topic, pump: usize, hub: Weak<HubShared>) -> Arc<Self> {
        Arc::new(ChannelInner {
            topic,
            sessions: Mutex::new(Slab::new()),
            ready: Mutex::new(Ready::Connecting),
            ready_changed: Notify::new(),
            feed: AtomicWaker::new(),
            idle_since: AtomicU64::new(0),
            pump,
            removed: AtomicBool::new(false),
            hub,
        })
    }

    fn set_ready(&self, ready: Ready) {
        *lock(&self.ready) = ready;
        self.ready_changed.notify_waiters();
    }

    /// Set the removed flag (the channel gauge counts it once) and wake the feed, which then
    /// ends and drops the broker subscription.
    fn mark_removed(&self) {
        if !self.removed.swap(true, Ordering::AcqRel) {
            metrics::gauge!(crate::metric_names::CHANNELS).decrement(1.0);
        }
        self.feed.wake();
    }

    fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Frame `env` once per transport in use and share the bytes with every session.
    fn deliver(&self, env: &Envelope) {
        let sessions = lock(&self.sessions);
        let _span = tracing::trace_span!("ssehub.deliver", topic = %self.topic, id = %env.id, sessions = sessions.len()).entered();
        metrics::counter!(crate::metric_names::EVENTS_DELIVERED).increment(sessions.len() as u64);
        fan_out(&sessions, Some(&env.id), |t| {
            t.event(Some(&env.id), &env.event, &env.data)
        });
    }

    fn deliver_reset(&self, reason: ResetReason) {
        metrics::counter!(crate::metric_names::BROKER_GAPS).increment(1);
        let sessions = lock(&self.sessions);
        crate::metric_names::resets_sent(reason, sessions.len());
        fan_out(&sessions, None, |t| t.reset(reason, None));
    }

    fn close_all(&self, reason: CloseReason) {
        for (_, s) in lock(&self.sessions).iter() {
            s.close(reason, None, true);
        }
    }
}

/// Push one frame to every session, framing it once per transport in use (not per session).
fn fan_out(
    sessions: &Slab<SessionEntry>,
    id: Option<&crate::id::EventId>,
    frame_for: impl Fn(&dyn Transport) -> Bytes,
) {
    let mut frames: Vec<(&'static str, Bytes)> = Vec::with_capacity(1);
    for (_, s) in sessions.iter() {
        let name = s.transport.name();
        let frame = match frames.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => f.clone(),
            None => {
                let f = frame_for(s.transport.as_ref());
                frames.push((name, f.clone()));
                f
            }
        };
        s.push(id, &frame);
    }
}

impl Joined for ChannelInner {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    fn leave(self: Arc<Self>, key: usize) {
        let (empty, left) = {
            let mut sessions = lock(&self.sessions);
            sessions.try_remove(key);
            (sessions.is_empty(), sessions.len())
        };
        if let Some(hub) = self.hub.upgrade() {
            hub.sessions.fetch_sub(1, Ordering::AcqRel);
            hub.presence.set_local(&self.topic, left);
            if empty {
                hub.idle(&self);
            }
        }
        metrics::gauge!(crate::metric_names::SESSIONS).decrement(1.0);
    }
}
