//! The local fan-out hub: one broker subscription per topic per process, shared by every local
//! session of that topic.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use slab::Slab;
use tokio::sync::Notify;

use crate::backend::lock;
use crate::broker::{Broker, Delivery, Envelope};
use crate::error::{Error, Result};
use crate::id::{EventName, PRESENCE_EVENT, Topic};
use crate::presence::{Presence, PresenceConfig};
use crate::session::{
    CloseReason, OverflowPolicy, QueueLimits, ReplayLimits, SessionConfig, SessionShared,
};
use crate::transport::{ResetReason, Transport};

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
    /// Signalled when the last session leaves, or when the channel is removed.
    idle: Notify,
    removed: AtomicBool,
}

struct SessionEntry {
    shared: Arc<SessionShared>,
    transport: Arc<dyn Transport>,
}

/// A session's place in a channel; dropping it leaves the channel.
pub(crate) struct Registration {
    channel: Arc<ChannelInner>,
    hub: Weak<HubShared>,
    key: usize,
}

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
            }),
        };
        if config.presence_events {
            let weak = Arc::downgrade(&hub.shared);
            hub.shared.presence.watch(Arc::new(move |topic, sessions| {
                let Some(shared) = weak.upgrade() else { return };
                let data = format!("{{\"sessions\":{sessions}}}");
                let name = EventName::from_static(PRESENCE_EVENT).unwrap_or_default();
                shared.push_control(topic, &|t| t.event(None, &name, data.as_bytes()));
            }));
        }
        hub
    }

    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.shared.broker
    }

    /// Join `topic`'s channel, creating it (and the broker subscription) when it is the first.
    /// Returns once the broker subscription is live, so a replay made afterwards misses nothing.
    pub(crate) async fn join(
        &self,
        topic: &Topic,
        transport: Arc<dyn Transport>,
    ) -> Result<(Arc<SessionShared>, Registration)> {
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
                    let c = ChannelInner::new(topic.clone());
                    channels.insert(topic.clone(), c.clone());
                    metrics::gauge!(crate::metrics::CHANNELS).increment(1.0);
                    tokio::spawn(pump(
                        Arc::downgrade(shared),
                        c.clone(),
                        shared.broker.clone(),
                    ));
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
            let key = sessions.insert(SessionEntry {
                shared: session.clone(),
                transport,
            });
            shared.presence.set_local(topic, sessions.len());
            drop(sessions);
            shared.sessions.fetch_add(1, Ordering::AcqRel);
            metrics::gauge!(crate::metrics::SESSIONS).increment(1.0);
            (channel, key)
        };
        let registration = Registration {
            channel: channel.clone(),
            hub: Arc::downgrade(shared),
            key,
        };
        loop {
            // Registered before the state is read, so a change in between still wakes it.
            let changed = channel.ready_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match &*lock(&channel.ready) {
                Ready::Connecting => {}
                Ready::Live => return Ok((session, registration)),
                Ready::Failed(e) => return Err(clone_error(e)),
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
                entry.shared.close(CloseReason::Shutdown, frame, true);
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
                if entry.shared.close_reason().is_none() {
                    closed += 1;
                }
                entry.shared.close(CloseReason::Revoked, None, false);
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
        // The hub's owner is gone: stop every pump (dropping its broker subscription).
        let channels: Vec<_> = lock(&self.shared.channels)
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in channels {
            c.mark_removed();
            c.idle.notify_one();
        }
    }
}

fn clone_error(e: &Error) -> Error {
    Error::broker("hub", e.is_temporary(), e.to_string(), None)
}

impl HubShared {
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
        if channel.mark_removed() {
            channel.idle.notify_one();
        }
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
    fn new(topic: Topic) -> Arc<Self> {
        Arc::new(ChannelInner {
            topic,
            sessions: Mutex::new(Slab::new()),
            ready: Mutex::new(Ready::Connecting),
            ready_changed: Notify::new(),
            idle: Notify::new(),
            removed: AtomicBool::new(false),
        })
    }

    fn set_ready(&self, ready: Ready) {
        *lock(&self.ready) = ready;
        self.ready_changed.notify_waiters();
    }

    /// Set the removed flag; `true` the first time (the channel gauge counts it once).
    fn mark_removed(&self) -> bool {
        let first = !self.removed.swap(true, Ordering::AcqRel);
        if first {
            metrics::gauge!(crate::metrics::CHANNELS).decrement(1.0);
        }
        first
    }

    /// Frame `env` once per transport in use and share the bytes with every session.
    fn deliver(&self, env: &Envelope) {
        let sessions = lock(&self.sessions);
        let _span = tracing::trace_span!("ssehub.deliver", topic = %self.topic, id = %env.id, sessions = sessions.len()).entered();
        metrics::counter!(crate::metrics::EVENTS_DELIVERED).increment(sessions.len() as u64);
        fan_out(&sessions, Some(&env.id), |t| {
            t.event(Some(&env.id), &env.event, &env.data)
        });
    }

    fn deliver_reset(&self, reason: ResetReason) {
        metrics::counter!(crate::metrics::BROKER_GAPS).increment(1);
        let sessions = lock(&self.sessions);
        crate::metrics::resets_sent(reason, sessions.len());
        fan_out(&sessions, None, |t| t.reset(reason, None));
    }

    fn close_all(&self, reason: CloseReason) {
        for (_, s) in lock(&self.sessions).iter() {
            s.shared.close(reason, None, true);
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
        s.shared.push(id, &frame);
    }
}

impl Registration {
    pub(crate) fn topic(&self) -> &Topic {
        &self.channel.topic
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (empty, left) = {
            let mut sessions = lock(&self.channel.sessions);
            sessions.try_remove(self.key);
            (sessions.is_empty(), sessions.len())
        };
        if let Some(hub) = self.hub.upgrade() {
            hub.sessions.fetch_sub(1, Ordering::AcqRel);
            hub.presence.set_local(&self.channel.topic, left);
        }
        metrics::gauge!(crate::metrics::SESSIONS).decrement(1.0);
        if empty {
            self.channel.idle.notify_one();
        }
    }
}

/// One task per channel: subscribe, fan out, and remove the channel after it has been idle for
/// the linger time.
async fn pump(hub: Weak<HubShared>, channel: Arc<ChannelInner>, broker: Arc<dyn Broker>) {
    let mut sub = match broker.subscribe(&channel.topic).await {
        Ok(sub) => {
            channel.set_ready(Ready::Live);
            sub
        }
        Err(e) => {
            tracing::warn!(topic = %channel.topic, error = %e, "broker subscription failed");
            if let Some(hub) = hub.upgrade() {
                hub.remove(&channel);
            }
            channel.set_ready(Ready::Failed(Arc::new(e)));
            return;
        }
    };
    let linger = match hub.upgrade() {
        Some(h) => h.config.linger,
        None => return,
    };
    // Boxed, and only while the channel lingers: an idle channel's task stays small.
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        if channel.removed.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            biased;
            () = channel.idle.notified() => {
                if channel.removed.load(Ordering::Acquire) {
                    return;
                }
                if lock(&channel.sessions).is_empty() {
                    deadline = Some(Box::pin(tokio::time::sleep(linger)));
                }
            }
            () = async {
                match deadline.as_mut() {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            } => {
                deadline = None;
                match hub.upgrade() {
                    Some(h) => if h.remove_if_idle(&channel) { return; },
                    None => return,
                }
            }
            item = sub.next() => match item {
                Some(Delivery::Event(env)) => channel.deliver(&env),
                Some(Delivery::Gap) => channel.deliver_reset(ResetReason::BrokerGap),
                None => {
                    tracing::warn!(topic = %channel.topic, "broker subscription ended");
                    if let Some(h) = hub.upgrade() {
                        h.remove(&channel);
                    }
                    channel.close_all(CloseReason::BrokerLost);
                    return;
                }
            },
        }
    }
}
