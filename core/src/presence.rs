//! Presence: how many sessions each channel has across every node, kept current on every node.
//!
//! Each hub is a node with a random id. It sends its local session count of a channel when the
//! count changes (coalesced: at most one message per [`PresenceConfig::coalesce`]), and all of
//! its counts again every [`PresenceConfig::heartbeat`], as small signals through the broker
//! ([`Broker::signal`]). Every node keeps what it hears in a table; an entry that is not
//! refreshed within [`PresenceConfig::window`] is dropped, so a node that dies (even by
//! `SIGKILL`) drops out of every count within that window. A channel's cluster count is this
//! node's count plus the live entries of the others: reading it is a table look-up.
//!
//! A session opened with [`SubscribeOptions::user`](crate::SubscribeOptions::user) also counts
//! for its user: each node's report of a channel carries its sessions per user (the user's id,
//! its optional info, and how many sessions), and
//! [`ChannelManager::presence`](crate::ChannelManager::presence) adds them up across nodes into
//! a [`ChannelPresence`]. A node of an older version ignores the per-user part, and its
//! sessions count as anonymous ones.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::backend::{lock, node_id};
use crate::broker::Broker;
use crate::id::Topic;

mod users;

use users::WireUser;
pub use users::{ChannelPresence, UserPresence};
pub(crate) use users::{PresenceUser, UserGuard};

/// Timings of presence; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Most often one node reports a change, and one channel's watchers are told. Default: 200 ms.
    pub coalesce: Duration,
    /// How often a node repeats all its counts. Default: 5 s.
    pub heartbeat: Duration,
    /// How long a node's count stands without being repeated; the bound within which a dead
    /// node drops out. Default: 15 s.
    pub window: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            coalesce: Duration::from_millis(200),
            heartbeat: Duration::from_secs(5),
            window: Duration::from_secs(15),
        }
    }
}

/// Called with a topic and what changed of it.
pub(crate) type Watcher = Arc<dyn Fn(&Topic, &PresenceChange) + Send + Sync>;

/// What changed of a topic's presence since the watchers were last told.
#[derive(Debug, Default)]
pub(crate) struct PresenceChange {
    /// The cluster count now.
    pub(crate) sessions: usize,
    /// Whether [`sessions`](Self::sessions) differs from the last count told.
    pub(crate) sessions_changed: bool,
    /// Users with no session before and one now, sorted (only when a watcher asked for users).
    pub(crate) joined: Vec<String>,
    /// Users with a session before and none now, sorted (only when a watcher asked for users).
    pub(crate) left: Vec<String>,
}

impl PresenceChange {
    /// The data of a `presence` event: `{"sessions":n}`, with `"joined"` and `"left"` (user
    /// ids) when any.
    pub(crate) fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Data<'a> {
            sessions: usize,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            joined: &'a [String],
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            left: &'a [String],
        }
        let data = Data {
            sessions: self.sessions,
            joined: &self.joined,
            left: &self.left,
        };
        serde_json::to_string(&data)
            .unwrap_or_else(|_| format!("{{\"sessions\":{}}}", self.sessions))
    }
}

/// One signal on the wire: a node's counts (all of them on a heartbeat, the changed ones
/// otherwise), or a newcomer's hello asking everyone for theirs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Signal {
    /// The sending node.
    n: String,
    /// Counts by topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    c: Vec<(String, usize)>,
    /// A new node: answer with a heartbeat.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hello: bool,
    /// Sessions by user, for the topics of `c` that have users (a topic of `c` missing here
    /// has none). Added later: older nodes ignore it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    u: Vec<(String, Vec<WireUser>)>,
}

pub(crate) struct Presence {
    node: String,
    config: PresenceConfig,
    broker: Arc<dyn Broker>,
    state: Mutex<State>,
    watchers: Mutex<Vec<Watcher>>,
    started: std::sync::Once,
}

#[derive(Default)]
struct State {
    local: HashMap<Topic, usize>,
    /// This node's sessions by user: topic → user id → (sessions, info).
    local_users: HashMap<Topic, HashMap<String, (usize, Option<serde_json::Value>)>>,
    /// Other nodes' sessions by user: topic → node → users (alive as long as `remote`'s entry).
    remote_users: HashMap<Topic, HashMap<String, Vec<WireUser>>>,
    /// Local counts changed since the last report.
    dirty: HashSet<Topic>,
    /// Other nodes' counts: topic → node → (count, until).
    remote: HashMap<Topic, HashMap<String, (usize, Instant)>>,
    /// Cluster counts last told to the watchers.
    told: HashMap<Topic, usize>,
    /// Topics whose cluster count may have changed since the watchers were last told.
    changed: HashSet<Topic>,
    /// Answer a newcomer at the next tick.
    heartbeat_due: bool,
    /// Whether a watcher wants joins and leaves of users (then `told_users` is kept).
    track_users: bool,
    /// Users last told to the watchers, by topic.
    told_users: HashMap<Topic, BTreeSet<String>>,
}

impl State {
    fn total(&self, topic: &Topic, now: Instant) -> usize {
        let local = self.local.get(topic).copied().unwrap_or(0);
        let remote: usize = self.remote.get(topic).map_or(0, |nodes| {
            nodes
                .values()
                .filter(|(_, until)| *until > now)
                .map(|(n, _)| *n)
                .sum()
        });
        local.saturating_add(remote)
    }

    /// The users with a session of `topic` on a live node.
    fn user_ids(&self, topic: &Topic, now: Instant) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        if let Some(nodes) = self.remote_users.get(topic) {
            for (node, list) in nodes {
                let live = self
                    .remote
                    .get(topic)
                    .and_then(|r| r.get(node))
                    .is_some_and(|(_, until)| *until > now);
                if live {
                    ids.extend(list.iter().filter(|u| u.n > 0).map(|u| u.s.clone()));
                }
            }
        }
        if let Some(local) = self.local_users.get(topic) {
            ids.extend(
                local
                    .iter()
                    .filter(|(_, (n, _))| *n > 0)
                    .map(|(id, _)| id.clone()),
            );
        }
        ids
    }

    /// This node's users of `topic`, as a signal carries them.
    fn wire_users(&self, topic: &str) -> Vec<WireUser> {
        self.local_users.get(topic).map_or_else(Vec::new, |users| {
            users
                .iter()
                .map(|(s, (n, i))| WireUser {
                    s: s.clone(),
                    i: i.clone(),
                    n: *n,
                })
                .collect()
        })
    }
}

impl Presence {
    pub(crate) fn new(broker: Arc<dyn Broker>, config: PresenceConfig) -> Arc<Self> {
        Arc::new(Presence {
            node: node_id(),
            config,
            broker,
            state: Mutex::new(State::default()),
            watchers: Mutex::new(Vec::new()),
            started: std::sync::Once::new(),
        })
    }

    /// Start the background task once, from inside a runtime.
    fn start(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.started.call_once(|| {
            tokio::spawn(run(Arc::downgrade(self), self.broker.clone(), self.config));
        });
    }

    /// This node's count of `topic` is now `count`.
    pub(crate) fn set_local(self: &Arc<Self>, topic: &Topic, count: usize) {
        self.start();
        let mut st = lock(&self.state);
        if count == 0 {
            st.local.remove(topic);
        } else {
            st.local.insert(topic.clone(), count);
        }
        st.dirty.insert(topic.clone());
        st.changed.insert(topic.clone());
    }

    /// The sessions of `topic` on every live node.
    pub(crate) fn cluster_count(self: &Arc<Self>, topic: &Topic) -> usize {
        self.start();
        lock(&self.state).total(topic, Instant::now())
    }

    /// Who is on `topic` across every live node.
    pub(crate) fn snapshot(self: &Arc<Self>, topic: &Topic) -> ChannelPresence {
        self.start();
        let now = Instant::now();
        let st = lock(&self.state);
        let mut users: std::collections::BTreeMap<String, UserPresence> = Default::default();
        let mut add = |id: &str, n: usize, info: Option<&serde_json::Value>| {
            let entry = users.entry(id.to_owned()).or_insert_with(|| UserPresence {
                user: id.to_owned(),
                info: None,
                sessions: 0,
            });
            entry.sessions = entry.sessions.saturating_add(n);
            if let Some(info) = info {
                entry.info = Some(info.clone());
            }
        };
        if let Some(nodes) = st.remote_users.get(topic) {
            for (node, list) in nodes {
                let live = st
                    .remote
                    .get(topic)
                    .and_then(|r| r.get(node))
                    .is_some_and(|(_, until)| *until > now);
                if live {
                    for u in list {
                        add(&u.s, u.n, u.i.as_ref());
                    }
                }
            }
        }
        if let Some(local) = st.local_users.get(topic) {
            for (id, (n, info)) in local {
                add(id, *n, info.as_ref());
            }
        }
        ChannelPresence {
            sessions: st.total(topic, now),
            users: users.into_values().filter(|u| u.sessions > 0).collect(),
        }
    }

    /// A session of `user` joined `topic` on this node; dropping the guard is its leaving.
    pub(crate) fn join_user(self: &Arc<Self>, topic: &Topic, user: PresenceUser) -> UserGuard {
        self.start();
        let mut st = lock(&self.state);
        let entry = st
            .local_users
            .entry(topic.clone())
            .or_default()
            .entry(user.id.clone())
            .or_insert((0, None));
        entry.0 += 1;
        if user.info.is_some() {
            entry.1 = user.info;
        }
        st.dirty.insert(topic.clone());
        st.changed.insert(topic.clone());
        UserGuard {
            presence: Arc::downgrade(self),
            topic: topic.clone(),
            user: user.id,
        }
    }

    fn leave_user(&self, topic: &Topic, user: &str) {
        let mut st = lock(&self.state);
        if let Some(users) = st.local_users.get_mut(topic) {
            if let Some(entry) = users.get_mut(user) {
                entry.0 = entry.0.saturating_sub(1);
                if entry.0 == 0 {
                    users.remove(user);
                }
            }
            if users.is_empty() {
                st.local_users.remove(topic);
            }
        }
        st.dirty.insert(topic.clone());
        st.changed.insert(topic.clone());
    }

    /// Call `watcher` with what changed of a topic when its cluster count changes, or, with
    /// `users`, when a user joins or leaves it too (at most once per `coalesce` per topic).
    pub(crate) fn watch(self: &Arc<Self>, users: bool, watcher: Watcher) {
        self.start();
        if users {
            lock(&self.state).track_users = true;
        }
        lock(&self.watchers).push(watcher);
    }

    /// Take in a signal from another node.
    fn receive(&self, payload: &[u8]) {
        let Ok(signal) = serde_json::from_slice::<Signal>(payload) else {
            tracing::debug!("ignored a malformed presence signal");
            return;
        };
        if signal.n == self.node {
            return;
        }
        let until = Instant::now() + self.config.window;
        let mut st = lock(&self.state);
        if signal.hello {
            st.heartbeat_due = true;
        }
        let mut by_topic: HashMap<String, Vec<WireUser>> = signal.u.into_iter().collect();
        for (topic, count) in signal.c {
            let users = by_topic.remove(&topic).unwrap_or_default();
            let Ok(topic) = Topic::new(&topic) else {
                continue;
            };
            let nodes = st.remote.entry(topic.clone()).or_default();
            if count == 0 {
                nodes.remove(&signal.n);
                if nodes.is_empty() {
                    st.remote.remove(&topic);
                }
            } else {
                nodes.insert(signal.n.clone(), (count, until));
            }
            let user_nodes = st.remote_users.entry(topic.clone()).or_default();
            if count == 0 || users.is_empty() {
                user_nodes.remove(&signal.n);
            } else {
                user_nodes.insert(signal.n.clone(), users);
            }
            if user_nodes.is_empty() {
                st.remote_users.remove(&topic);
            }
            st.changed.insert(topic);
        }
    }

    /// What to send now: the changed counts, or all of them on a heartbeat.
    fn report(&self, heartbeat: bool) -> Option<Bytes> {
        let mut st = lock(&self.state);
        let heartbeat = heartbeat || std::mem::take(&mut st.heartbeat_due);
        let counts: Vec<(String, usize)> = if heartbeat {
            st.dirty.clear();
            st.local
                .iter()
                .map(|(t, n)| (t.as_str().to_owned(), *n))
                .collect()
        } else {
            let dirty: Vec<Topic> = st.dirty.drain().collect();
            dirty
                .into_iter()
                .map(|t| {
                    let n = st.local.get(&t).copied().unwrap_or(0);
                    (t.as_str().to_owned(), n)
                })
                .collect()
        };
        if counts.is_empty() {
            return None;
        }
        let users = counts
            .iter()
            .filter_map(|(t, _)| {
                let users = st.wire_users(t);
                (!users.is_empty()).then(|| (t.clone(), users))
            })
            .collect();
        let signal = Signal {
            n: self.node.clone(),
            c: counts,
            hello: false,
            u: users,
        };
        serde_json::to_vec(&signal).ok().map(Bytes::from)
    }

    /// Drop the entries of nodes that went quiet; tell the watchers what changed.
    fn settle(&self) {
        let now = Instant::now();
        let mut told = Vec::new();
        {
            let mut st = lock(&self.state);
            let mut expired = Vec::new();
            st.remote.retain(|topic, nodes| {
                let before = nodes.len();
                nodes.retain(|_, (_, until)| *until > now);
                if nodes.len() != before {
                    expired.push(topic.clone());
                }
                !nodes.is_empty()
            });
            let State {
                remote,
                remote_users,
                ..
            } = &mut *st;
            remote_users.retain(|topic, nodes| {
                nodes.retain(|node, _| remote.get(topic).is_some_and(|r| r.contains_key(node)));
                !nodes.is_empty()
            });
            st.changed.extend(expired);
            let changed: Vec<Topic> = st.changed.drain().collect();
            for topic in changed {
                let total = st.total(&topic, now);
                let before = st.told.get(&topic).copied().unwrap_or(0);
                let mut change = PresenceChange {
                    sessions: total,
                    sessions_changed: total != before,
                    ..PresenceChange::default()
                };
                if change.sessions_changed {
                    if total == 0 {
                        st.told.remove(&topic);
                    } else {
                        st.told.insert(topic.clone(), total);
                    }
                }
                if st.track_users {
                    let users = st.user_ids(&topic, now);
                    let old = st.told_users.remove(&topic).unwrap_or_default();
                    change.joined = users.difference(&old).cloned().collect();
                    change.left = old.difference(&users).cloned().collect();
                    if !users.is_empty() {
                        st.told_users.insert(topic.clone(), users);
                    }
                }
                if change.sessions_changed || !change.joined.is_empty() || !change.left.is_empty() {
                    told.push((topic, change));
                }
            }
        }
        if told.is_empty() {
            return;
        }
        let watchers = lock(&self.watchers).clone();
        for (topic, change) in told {
            for w in &watchers {
                w(&topic, &change);
            }
        }
    }
}

async fn run(presence: Weak<Presence>, broker: Arc<dyn Broker>, config: PresenceConfig) {
    let mut signals = match broker.signals().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "presence: no signals from other nodes");
            Box::pin(futures_util::stream::pending())
        }
    };
    if let Some(p) = presence.upgrade() {
        let hello = Signal {
            n: p.node.clone(),
            hello: true,
            ..Signal::default()
        };
        if let Ok(bytes) = serde_json::to_vec(&hello) {
            let _ = broker.signal(Bytes::from(bytes)).await;
        }
    }
    let mut tick = tokio::time::interval(config.coalesce);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_heartbeat = Instant::now() + config.heartbeat;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(p) = presence.upgrade() else { return };
                let heartbeat = Instant::now() >= next_heartbeat;
                if heartbeat {
                    next_heartbeat = Instant::now() + config.heartbeat;
                }
                if let Some(report) = p.report(heartbeat)
                    && let Err(e) = broker.signal(report).await
                {
                    tracing::debug!(error = %e, "presence: a signal was not sent");
                }
                p.settle();
            }
            signal = signals.next() => match signal {
                Some(payload) => {
                    let Some(p) = presence.upgrade() else { return };
                    p.receive(&payload);
                }
                None => {
                    tracing::debug!("presence: the signal stream ended");
                    signals = Box::pin(futures_util::stream::pending());
                }
            },
        }
    }
}
