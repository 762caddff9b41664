//! The local fan-out hub: one broker subscription per topic per process, shared by every local
//! session of that topic.
//!
//! A channel costs no task of its own: its broker subscription is a [`Feed`] polled by one of a
//! few pump tasks per hub (one per runtime worker), which also time the linger of idle channels
//! (one timer per pump, not one per channel).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use slab::Slab;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::backend::lock;
use crate::broker::{Broker, Delivery, Envelope, Subscription};
use crate::error::{Error, Result};
use crate::id::{EventName, PRESENCE_EVENT, Topic};
use crate::presence::{Presence, PresenceConfig};
use crate::session::{
    CloseReason, KeepAlives, OverflowPolicy, QueueLimits, ReplayLimits, SessionConfig,
    SessionShared,
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

/// A session's place in a channel; dropping it leaves the channel.
pub(crate) struct Registration {
    channel: Arc<ChannelInner>,
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
                pumps: Mutex::new(Vec::new()),
                next_pump: AtomicUsize::new(0),
                keep_alives: KeepAlives::new(),
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
                    let pump = shared.next_pump.fetch_add(1, Ordering::Relaxed);
                    let pump = pump % shared.pump_count();
                    let c = ChannelInner::new(topic.clone(), pump, Arc::downgrade(shared));
                    channels.insert(topic.clone(), c.clone());
                    metrics::gauge!(crate::metrics::CHANNELS).increment(1.0);
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
            metrics::gauge!(crate::metrics::SESSIONS).increment(1.0);
            (channel, key)
        };
        let registration = Registration {
            channel: channel.clone(),
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

fn clone_error(e: &Error) -> Error {
    Error::broker("hub", e.is_temporary(), e.to_string(), None)
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
            metrics::gauge!(crate::metrics::CHANNELS).decrement(1.0);
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

impl Registration {
    pub(crate) fn topic(&self) -> &Topic {
        &self.channel.topic
    }

    /// Send `session` a keep-alive comment after every `every` without a write (from the hub's
    /// one keep-alive timer).
    pub(crate) fn keep_alive(&self, session: &Arc<SessionShared>, every: Duration) {
        if let Some(hub) = self.channel.hub.upgrade() {
            hub.keep_alives.add(session, every);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (empty, left) = {
            let mut sessions = lock(&self.channel.sessions);
            sessions.try_remove(self.key);
            (sessions.is_empty(), sessions.len())
        };
        if let Some(hub) = self.channel.hub.upgrade() {
            hub.sessions.fetch_sub(1, Ordering::AcqRel);
            hub.presence.set_local(&self.channel.topic, left);
            if empty {
                hub.idle(&self.channel);
            }
        }
        metrics::gauge!(crate::metrics::SESSIONS).decrement(1.0);
    }
}

/// What a pump is told.
enum Command {
    /// Poll this new channel's feed.
    Open(Feed),
    /// The channel became idle (the `idle_since` count it reached): remove it after the linger
    /// unless it has been joined since.
    Idle(Arc<ChannelInner>, u64),
}

/// Start a pump on the current runtime; returns its command queue.
fn spawn_pump(hub: &Arc<HubShared>) -> mpsc::UnboundedSender<Command> {
    let (tx, commands) = mpsc::unbounded_channel();
    tokio::spawn(Pump {
        hub: Arc::downgrade(hub),
        commands,
        feeds: FuturesUnordered::new(),
        lingering: VecDeque::new(),
        linger: hub.config.linger,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        armed: None,
    });
    tx
}

/// Deliveries one feed hands out per poll before it lets the pump's other feeds go.
const FEED_BUDGET: usize = 64;

/// One task that polls the feeds of many channels and times their lingers. It ends when the
/// hub is gone (its command queue closes), dropping every feed left.
struct Pump {
    hub: Weak<HubShared>,
    commands: mpsc::UnboundedReceiver<Command>,
    feeds: FuturesUnordered<Feed>,
    /// Idle channels in the order their lingers end (every channel lingers the same time).
    lingering: VecDeque<(Instant, Arc<ChannelInner>, u64)>,
    linger: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The deadline `timer` is set to.
    armed: Option<Instant>,
}

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            while let Poll::Ready(command) = this.commands.poll_recv(cx) {
                match command {
                    Some(Command::Open(feed)) => this.feeds.push(feed),
                    Some(Command::Idle(channel, since)) => {
                        let at = crate::session::after(this.linger);
                        this.lingering.push_back((at, channel, since));
                    }
                    None => return Poll::Ready(()),
                }
            }
            let now = Instant::now();
            while let Some((at, ..)) = this.lingering.front()
                && *at <= now
            {
                let Some((_, channel, since)) = this.lingering.pop_front() else {
                    break;
                };
                if channel.idle_since.load(Ordering::Acquire) == since
                    && let Some(hub) = this.hub.upgrade()
                {
                    hub.remove_if_idle(&channel);
                }
            }
            if let Some(&(at, ..)) = this.lingering.front() {
                if this.armed != Some(at) {
                    this.timer.as_mut().reset(at);
                    this.armed = Some(at);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            match this.feeds.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => {}
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A channel's broker subscription as its pump polls it: subscribing, then handing every
/// delivery to the channel's sessions. It ends when the channel is removed or the subscription
/// fails or ends.
struct Feed {
    channel: Arc<ChannelInner>,
    state: FeedState,
}

enum FeedState {
    Subscribing(Pin<Box<dyn Future<Output = Result<Subscription>> + Send>>),
    Live(Subscription),
}

impl Feed {
    fn new(channel: Arc<ChannelInner>, broker: Arc<dyn Broker>) -> Self {
        let topic = channel.topic.clone();
        Feed {
            channel,
            state: FeedState::Subscribing(Box::pin(async move { broker.subscribe(&topic).await })),
        }
    }
}

impl Future for Feed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let channel = &this.channel;
        channel.feed.register(cx.waker());
        loop {
            if channel.is_removed() {
                return Poll::Ready(());
            }
            match &mut this.state {
                FeedState::Subscribing(subscribing) => match subscribing.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(sub)) => {
                        this.state = FeedState::Live(sub);
                        channel.set_ready(Ready::Live);
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::warn!(topic = %channel.topic, error = %e, "broker subscription failed");
                        if let Some(hub) = channel.hub.upgrade() {
                            hub.remove(channel);
                        }
                        channel.set_ready(Ready::Failed(Arc::new(e)));
                        return Poll::Ready(());
                    }
                },
                FeedState::Live(sub) => {
                    for _ in 0..FEED_BUDGET {
                        match sub.as_mut().poll_next(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Some(Delivery::Event(env))) => channel.deliver(&env),
                            Poll::Ready(Some(Delivery::Gap)) => {
                                channel.deliver_reset(ResetReason::BrokerGap);
                            }
                            Poll::Ready(None) => {
                                tracing::warn!(topic = %channel.topic, "broker subscription ended");
                                if let Some(hub) = channel.hub.upgrade() {
                                    hub.remove(channel);
                                }
                                channel.close_all(CloseReason::BrokerLost);
                                return Poll::Ready(());
                            }
                        }
                        if channel.is_removed() {
                            return Poll::Ready(());
                        }
                    }
                    // Many deliveries at once: let the pump's other feeds go first.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}
