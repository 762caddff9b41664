//! The comments demo as a runnable app: live comment counts and votes per discussion.
//!
//! ```text
//! cargo run --example comments                      # memory backend, http://127.0.0.1:3000
//! cargo run --example comments -- --addr 127.0.0.1:3001
//! cargo run --example comments --features redis -- --backend redis://127.0.0.1:6379
//! cargo run --example comments --features redis -- --backend redis+cluster://127.0.0.1:7000,127.0.0.1:7001
//! cargo run --example comments --features nats -- --backend nats://127.0.0.1:4222
//! SSEHUB_ADDR=0.0.0.0:8080 SSEHUB_BACKEND=redis://127.0.0.1:6379 cargo run --example comments --features redis
//! cargo run --example comments -- --help
//! ```
//!
//! `--addr HOST:PORT` (default `127.0.0.1:3000`, environment `SSEHUB_ADDR`) is where it listens;
//! `--backend memory|redis://…|redis+cluster://HOST:PORT[,HOST:PORT…]|nats://…` (default `memory`,
//! environment `SSEHUB_BACKEND`; a cluster is reached through any of its nodes) is both
//! the broker and where the demo keeps its numbers (comment counts, votes): in this process for
//! `memory`, in Redis keys under `ssehub-demo:` or in the JetStream key-value bucket
//! `ssehub-demo` otherwise. Two processes on different addresses with the same Redis or NATS URL
//! share events and numbers: a comment posted on one reaches browsers connected to the other,
//! both answer the same count, and a browser may reconnect to either.
//!
//! - `GET /` — a page with one native `EventSource` on the multiplexing endpoint: the live
//!   count, votes, "N viewing" and a connection badge.
//! - `GET /api/sse/comments/{discussionId}` — the SSE stream; its initial event has the count.
//! - `POST /api/comments/{discussionId}` — adds a comment and publishes `comment-added`.
//! - `GET /api/comments/{discussionId}` — the current count as JSON (what a page refetches
//!   after a `reset`).
//! - `POST /api/votes/{discussionId}` with `{"vote":"up"}` or `{"vote":"down"}` — counts the
//!   vote and publishes `vote-cast` with the running totals; 400 for any other body.
//! - `GET /api/votes/{discussionId}` — the current totals as JSON.
//! - `GET /api/sse/votes/{discussionId}` — the votes stream; its initial event has the totals.
//! - `GET /api/sessions/{discussionId}` — `{"sessions": n}`, the streams open on the
//!   discussion's comments across the cluster, as presence reports them.
//! - `GET /api/sse/presence/{discussionId}` — the viewers stream: `{"type":"presence",
//!   "discussionId","sessions","timestamp"}` whenever the cluster-wide number of streams on the
//!   discussion's comments changes (coalesced), the current number first.
//! - `GET /api/sse?channel=comments/{id}&channel=votes/{id}&channel=presence/{id}` — any of
//!   those streams together on one connection (the multiplexing endpoint): each event's
//!   `event:` field names its channel, and its id resumes every channel exactly.
//! - `GET /healthz` — the broker's health: 200 `{"status":"ok","backend":"memory"}`, or 503
//!   with `"status":"error"` and the `"error"`.
//! - `GET /metrics` — ssehub's metrics in the Prometheus text format, every one from startup.
//! - `GET /react/` — the React + TanStack Query demo (`@ssehub/client`'s hooks), served from
//!   `clients/typescript/demo/dist` once built (`cd clients/typescript && npm ci &&
//!   npm run build:demo`); `SSEHUB_REACT_DIST` points elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use ssehub::{BoxError, Broker, ChannelManager, MultiplexEndpoint, PathParams, SseEndpoint};

// Its TypeScript twin, `clients/typescript/demo/generated/CommentEvent.ts`, is generated from
// this definition by `tests/ts_types.rs` (`SSEHUB_WRITE_TS=1 cargo test --test ts_types`). ts-rs
// names the type after serde's `rename` (it is also the tag's value); the test renames it.
/// 1. The event type — serialized as `{type, discussionId, commentCount, timestamp}`.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename = "comment-added", rename_all = "camelCase")]
pub struct CommentEvent {
    /// The discussion the comment was added to.
    pub discussion_id: String,
    /// The discussion's comment count after the addition.
    #[ts(type = "number")]
    pub comment_count: u64,
    /// When, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

// Generated like `CommentEvent`, into `clients/typescript/demo/generated/VoteEvent.ts`.
/// The votes stream's event — serialized as `{type: "vote-cast", discussionId, up, down,
/// timestamp}`.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename = "vote-cast", rename_all = "camelCase")]
pub struct VoteEvent {
    /// The discussion voted on.
    pub discussion_id: String,
    /// Up votes so far.
    #[ts(type = "number")]
    pub up: u64,
    /// Down votes so far.
    #[ts(type = "number")]
    pub down: u64,
    /// When, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

// Generated like `CommentEvent`, into `clients/typescript/demo/generated/PresenceEvent.ts`.
/// The viewers stream's event — serialized as `{type: "presence", discussionId, sessions,
/// timestamp}`: how many streams are open on the discussion's comments, on every node.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename = "presence", rename_all = "camelCase")]
pub struct PresenceEvent {
    /// The discussion watched.
    pub discussion_id: String,
    /// Streams open on its comments, cluster-wide.
    #[ts(type = "number")]
    pub sessions: u64,
    /// When, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

/// One vote: the body of `POST /api/votes/{discussionId}` is `{"vote":"up"}` or
/// `{"vote":"down"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    /// `"up"`.
    Up,
    /// `"down"`.
    Down,
}

impl Vote {
    /// The vote a request body holds: exactly `{"vote":"up"}` or `{"vote":"down"}`, nothing
    /// else (no other field, no array standing for the object).
    pub fn from_body(body: &serde_json::Value) -> Option<Vote> {
        let fields = body.as_object().filter(|o| o.len() == 1)?;
        match fields.get("vote")?.as_str()? {
            "up" => Some(Vote::Up),
            "down" => Some(Vote::Down),
            _ => None,
        }
    }
}

/// A discussion's running vote totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Votes {
    /// Up votes.
    pub up: u64,
    /// Down votes.
    pub down: u64,
}

impl Votes {
    fn add(&mut self, vote: Vote) {
        match vote {
            Vote::Up => self.up += 1,
            Vote::Down => self.down += 1,
        }
    }
}

/// Where the demo's numbers live — comment counts and vote totals — so that every node of a
/// cluster answers the same ones: a map in this process (`memory`), Redis keys under
/// `ssehub-demo:` (`INCR`, `HINCRBY`), or the JetStream key-value bucket `ssehub-demo`
/// (compare-and-set updates).
#[derive(Clone)]
pub enum Store {
    /// In this process only.
    Memory(Arc<Mutex<MemoryData>>),
    /// Redis: `ssehub-demo:comments:{id}` (a counter) and `ssehub-demo:votes:{id}` (a hash with
    /// the fields `up` and `down`).
    #[cfg(feature = "redis")]
    Redis(ssehub::redis::RedisConnection),
    /// NATS: the keys `comments.{id}` (a number) and `votes.{id}` (`{"up":n,"down":m}`) in the
    /// bucket `ssehub-demo`, the id escaped to the characters keys allow.
    #[cfg(feature = "nats")]
    Nats(Arc<ssehub::nats::async_nats::jetstream::kv::Store>),
}

/// The in-memory store's data.
#[derive(Debug, Default)]
pub struct MemoryData {
    comments: HashMap<String, u64>,
    votes: HashMap<String, Votes>,
}

/// The prefix of the demo's Redis keys, and the name of its NATS key-value bucket.
pub const STORE_PREFIX: &str = "ssehub-demo";

impl Store {
    /// A store in this process.
    pub fn memory() -> Self {
        Store::Memory(Arc::default())
    }

    /// The store for a `--backend` value: `memory`, `redis://…` (or `redis+cluster://…`) or
    /// `nats://…` (the last two when
    /// the `redis` / `nats` features are compiled in). It opens its own connection.
    pub async fn open(url: &str) -> Result<Self, BoxError> {
        if url == "memory" {
            return Ok(Store::memory());
        }
        #[cfg(feature = "redis")]
        if is_redis(url) {
            return Ok(Store::Redis(
                ssehub::redis::RedisConnection::open(url).await?,
            ));
        }
        #[cfg(feature = "nats")]
        if url.starts_with("nats://") {
            return Ok(Store::Nats(Arc::new(open_bucket(url).await?)));
        }
        Err(format!("backend {url:?} is not compiled in (see the crate's features)").into())
    }

    /// Which kind of store this is: `memory`, `redis` or `nats`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Store::Redis(_) => "redis",
            #[cfg(feature = "nats")]
            Store::Nats(_) => "nats",
        }
    }

    /// Count one more comment on `id`; the new count.
    pub async fn add_comment(&self, id: &str) -> Result<u64, BoxError> {
        match self {
            Store::Memory(data) => {
                let mut data = data.lock().unwrap_or_else(|e| e.into_inner());
                let count = data.comments.entry(id.to_owned()).or_insert(0);
                *count += 1;
                Ok(*count)
            }
            #[cfg(feature = "redis")]
            Store::Redis(con) => Ok(ssehub::redis::redis::cmd("INCR")
                .arg(redis_key("comments", id))
                .query_async(&mut con.clone())
                .await?),
            #[cfg(feature = "nats")]
            Store::Nats(kv) => {
                nats_update(kv, &nats_key("comments", id), |c: &mut u64| *c += 1).await
            }
        }
    }

    /// The comment count of `id` (0 when it has none).
    pub async fn comment_count(&self, id: &str) -> Result<u64, BoxError> {
        match self {
            Store::Memory(data) => {
                let data = data.lock().unwrap_or_else(|e| e.into_inner());
                Ok(data.comments.get(id).copied().unwrap_or(0))
            }
            #[cfg(feature = "redis")]
            Store::Redis(con) => {
                let count: Option<u64> = ssehub::redis::redis::cmd("GET")
                    .arg(redis_key("comments", id))
                    .query_async(&mut con.clone())
                    .await?;
                Ok(count.unwrap_or(0))
            }
            #[cfg(feature = "nats")]
            Store::Nats(kv) => nats_read(kv, &nats_key("comments", id)).await,
        }
    }

    /// Count one vote on `id`; the new totals.
    pub async fn vote(&self, id: &str, vote: Vote) -> Result<Votes, BoxError> {
        match self {
            Store::Memory(data) => {
                let mut data = data.lock().unwrap_or_else(|e| e.into_inner());
                let votes = data.votes.entry(id.to_owned()).or_default();
                votes.add(vote);
                Ok(*votes)
            }
            #[cfg(feature = "redis")]
            Store::Redis(con) => {
                let field = match vote {
                    Vote::Up => "up",
                    Vote::Down => "down",
                };
                let key = redis_key("votes", id);
                // One transaction, so the totals answered are the ones this vote made.
                let ((up, down),): ((Option<u64>, Option<u64>),) = ssehub::redis::redis::pipe()
                    .atomic()
                    .cmd("HINCRBY")
                    .arg(&key)
                    .arg(field)
                    .arg(1)
                    .ignore()
                    .cmd("HMGET")
                    .arg(&key)
                    .arg("up")
                    .arg("down")
                    .query_async(&mut con.clone())
                    .await?;
                Ok(Votes {
                    up: up.unwrap_or(0),
                    down: down.unwrap_or(0),
                })
            }
            #[cfg(feature = "nats")]
            Store::Nats(kv) => {
                nats_update(kv, &nats_key("votes", id), |v: &mut Votes| v.add(vote)).await
            }
        }
    }

    /// The vote totals of `id`.
    pub async fn votes(&self, id: &str) -> Result<Votes, BoxError> {
        match self {
            Store::Memory(data) => {
                let data = data.lock().unwrap_or_else(|e| e.into_inner());
                Ok(data.votes.get(id).copied().unwrap_or_default())
            }
            #[cfg(feature = "redis")]
            Store::Redis(con) => {
                let (up, down): (Option<u64>, Option<u64>) = ssehub::redis::redis::cmd("HMGET")
                    .arg(redis_key("votes", id))
                    .arg("up")
                    .arg("down")
                    .query_async(&mut con.clone())
                    .await?;
                Ok(Votes {
                    up: up.unwrap_or(0),
                    down: down.unwrap_or(0),
                })
            }
            #[cfg(feature = "nats")]
            Store::Nats(kv) => nats_read(kv, &nats_key("votes", id)).await,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.kind())
    }
}

/// A Redis URL: one server (`redis://`, `rediss://`) or a cluster (`redis+cluster://host:port,…`).
#[cfg(feature = "redis")]
fn is_redis(url: &str) -> bool {
    [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
}

#[cfg(feature = "redis")]
fn redis_key(kind: &str, id: &str) -> String {
    format!("{STORE_PREFIX}:{kind}:{id}")
}

/// `kind.id`, the id escaped to what NATS keys allow (`-/_=.a-zA-Z0-9`, no `.` at either end):
/// letters, digits, `-` and `_` stay, every other byte becomes `=XX`.
#[cfg(feature = "nats")]
fn nats_key(kind: &str, id: &str) -> String {
    let mut key = format!("{kind}.");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

/// Find or create the bucket [`STORE_PREFIX`]. The bucket's stream is set up directly, as a
/// key-value bucket's stream with a history of one, because `create_key_value` first queries
/// the account, which fails on older servers (Debian's 2.9); nodes starting together race to
/// create it, and the loser finds the winner's.
#[cfg(feature = "nats")]
async fn open_bucket(
    url: &str,
) -> Result<ssehub::nats::async_nats::jetstream::kv::Store, BoxError> {
    use ssehub::nats::async_nats::{self, jetstream::stream};
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let config = stream::Config {
        name: format!("KV_{STORE_PREFIX}"),
        subjects: vec![format!("$KV.{STORE_PREFIX}.>")],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut tries = 0;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => return Ok(js.get_key_value(STORE_PREFIX).await?),
            Err(_) if tries < 3 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The JSON value under `key`, or the default when there is none.
#[cfg(feature = "nats")]
async fn nats_read<T: Default + serde::de::DeserializeOwned>(
    kv: &ssehub::nats::async_nats::jetstream::kv::Store,
    key: &str,
) -> Result<T, BoxError> {
    match kv.get(key).await? {
        Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
        None => Ok(T::default()),
    }
}

/// Change the JSON value under `key` with `change`, compare-and-set: read it with its revision,
/// write it only if the revision is still the latest, else read again. The value written.
#[cfg(feature = "nats")]
async fn nats_update<T>(
    kv: &ssehub::nats::async_nats::jetstream::kv::Store,
    key: &str,
    change: impl Fn(&mut T),
) -> Result<T, BoxError>
where
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    use ssehub::nats::async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
    for _ in 0..100 {
        let (mut value, revision) = match kv.entry(key).await? {
            Some(e) if e.operation == Operation::Put => {
                (serde_json::from_slice(&e.value)?, Some(e.revision))
            }
            // Deleted or purged: starts again from the default, after that revision.
            Some(e) => (T::default(), Some(e.revision)),
            None => (T::default(), None),
        };
        change(&mut value);
        let bytes = bytes::Bytes::from(serde_json::to_vec(&value)?);
        match revision {
            Some(revision) => match kv.update(key, bytes, revision).await {
                Ok(_) => return Ok(value),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(e.into()),
            },
            None => match kv.create(key, bytes).await {
                Ok(_) => return Ok(value),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            },
        }
    }
    Err(format!("{key}: too many concurrent updates").into())
}

/// The demo's state: the channel managers, the SSE endpoints and the store.
#[derive(Clone)]
pub struct AppState {
    /// The typed channel manager of the comments (`discussion:{id}:comments`).
    pub comments: ChannelManager<CommentEvent>,
    /// The SSE endpoint serving those channels.
    pub endpoint: SseEndpoint<CommentEvent>,
    /// The typed channel manager of the votes (`discussion:{id}:votes`).
    pub votes: ChannelManager<VoteEvent>,
    /// The SSE endpoint serving the votes channels.
    pub votes_endpoint: SseEndpoint<VoteEvent>,
    /// The typed channel manager of the viewer counts (`discussion:{id}:presence`), over a
    /// broker of this node's own: every node learns the cluster-wide counts from presence and
    /// tells its own clients.
    pub presence: ChannelManager<PresenceEvent>,
    /// The SSE endpoint serving the viewer counts.
    pub presence_endpoint: SseEndpoint<PresenceEvent>,
    /// `GET /api/sse?channel=…`: comments, votes and viewers on one connection.
    pub multiplex: MultiplexEndpoint,
    /// Where the comment counts and votes live.
    pub store: Store,
    backend: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The broker's name for `/healthz`, from its type: `MemoryBroker` is `memory`.
fn backend_label(broker: &dyn Broker) -> String {
    let debug = format!("{broker:?}");
    let ty: String = debug
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    ty.strip_suffix("Broker").unwrap_or(&ty).to_lowercase()
}

impl AppState {
    /// Build the state over any broker, with the numbers kept in this process.
    pub fn new(broker: Arc<dyn Broker>) -> ssehub::Result<Self> {
        Self::with_store(broker, Store::memory())
    }

    /// Build the state over any broker, with the numbers kept in `store` (shared by every node
    /// when it is Redis or NATS).
    pub fn with_store(broker: Arc<dyn Broker>, store: Store) -> ssehub::Result<Self> {
        let backend = backend_label(broker.as_ref());
        let comments = ChannelManager::<CommentEvent>::builder_dyn(broker.clone())
            .key_prefix("discussion")
            .key_suffix("comments")
            .build()?;
        // 2. The SSE route: its initial event carries the current count.
        let endpoint = discussion_endpoint(
            &comments,
            "/api/sse/comments/{discussionId}",
            &store,
            |store, id| async move {
                let count = store
                    .comment_count(&id)
                    .await
                    .inspect_err(|e| tracing::warn!("no initial count for {id}: {e}"))
                    .ok()?;
                Some(CommentEvent {
                    discussion_id: id,
                    comment_count: count,
                    timestamp: now_ms(),
                })
            },
        )?;
        let votes = ChannelManager::<VoteEvent>::builder_dyn(broker)
            .key_prefix("discussion")
            .key_suffix("votes")
            .build()?;
        let votes_endpoint = discussion_endpoint(
            &votes,
            "/api/sse/votes/{discussionId}",
            &store,
            |store, id| async move {
                let votes = store
                    .votes(&id)
                    .await
                    .inspect_err(|e| tracing::warn!("no initial votes for {id}: {e}"))
                    .ok()?;
                Some(VoteEvent {
                    discussion_id: id,
                    up: votes.up,
                    down: votes.down,
                    timestamp: now_ms(),
                })
            },
        )?;
        // The viewers: presence tells every node the cluster-wide count of the comments
        // streams; each node republishes it to its own viewers' streams, through a broker of
        // its own (the count is already cluster-wide, so it must not cross nodes again).
        let presence = ChannelManager::<PresenceEvent>::builder(ssehub::MemoryBroker::new())
            .key_prefix("discussion")
            .key_suffix("presence")
            .build()?;
        let counts = comments.clone();
        let presence_endpoint = discussion_endpoint(
            &presence,
            "/api/sse/presence/{discussionId}",
            &store,
            move |_store, id| {
                let counts = counts.clone();
                async move {
                    let sessions = counts.cluster_session_count(&id).await.ok()?;
                    Some(PresenceEvent {
                        discussion_id: id,
                        sessions: sessions as u64,
                        timestamp: now_ms(),
                    })
                }
            },
        )?;
        republish_presence(&comments, &presence);
        let multiplex = MultiplexEndpoint::new("/api/sse")
            .channel("comments", endpoint.clone())?
            .channel("votes", votes_endpoint.clone())?
            .channel("presence", presence_endpoint.clone())?;
        Ok(AppState {
            comments,
            endpoint,
            votes,
            votes_endpoint,
            presence,
            presence_endpoint,
            multiplex,
            store,
            backend,
            metrics: None,
        })
    }

    /// Serve `/metrics` from this Prometheus recorder handle.
    #[must_use]
    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The broker's name as `/healthz` reports it (`memory`, `redis`, `nats`).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// End every stream of every endpoint (graceful shutdown); the multiplexed streams end
    /// with their channels.
    pub fn shutdown(&self) {
        self.endpoint.shutdown();
        self.votes_endpoint.shutdown();
        self.presence_endpoint.shutdown();
    }
}

/// Publish a `presence` event to `presence`'s channel of a discussion whenever the cluster-wide
/// count of `comments` streams on it changes. Presence already coalesces the changes; the
/// latest count per discussion waits in a map for one task to publish, so a burst costs one
/// entry per discussion, never a queue.
fn republish_presence(
    comments: &ChannelManager<CommentEvent>,
    presence: &ChannelManager<PresenceEvent>,
) {
    let latest: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let wake = Arc::new(tokio::sync::Notify::new());
    {
        let (latest, wake) = (latest.clone(), wake.clone());
        comments.on_presence(move |id, sessions| {
            if let Ok(mut map) = latest.lock() {
                map.insert(id.to_owned(), sessions);
            }
            wake.notify_one();
        });
    }
    let presence = presence.clone();
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            let batch: Vec<(String, usize)> = match latest.lock() {
                Ok(mut map) => map.drain().collect(),
                Err(_) => return,
            };
            for (id, sessions) in batch {
                let event = PresenceEvent {
                    discussion_id: id.clone(),
                    sessions: sessions as u64,
                    timestamp: now_ms(),
                };
                if let Err(e) = presence.publish(&id, &event).await {
                    tracing::debug!("presence of {id} not published: {e}");
                }
            }
        }
    });
}

/// Install the Prometheus recorder globally and register every ssehub metric at zero
/// ([`ssehub::metrics::describe`]), so `/metrics` lists them all from startup.
pub fn install_metrics()
-> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    ssehub::metrics::describe();
    Ok(handle)
}

/// An SSE endpoint for one kind of discussion channel: the discussion id names the channel, the
/// initial event comes from `initial(store, id)`, and the channel goes with its last session.
fn discussion_endpoint<E, F, Fut>(
    manager: &ChannelManager<E>,
    pattern: &str,
    store: &Store,
    initial: F,
) -> ssehub::Result<SseEndpoint<E>>
where
    E: Serialize + Send + Sync + 'static,
    F: Fn(Store, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<E>> + Send + 'static,
{
    let store = store.clone();
    let initial = Arc::new(initial);
    let cleanup = manager.clone();
    Ok(SseEndpoint::new(manager.clone(), pattern)?
        .resource(|p: &PathParams| p.get("discussionId").unwrap_or_default().to_owned())
        .validate(|p: &PathParams| p.get("discussionId").is_some_and(|id| !id.is_empty()))
        .initial_event(move |p: PathParams| {
            let id = p.get("discussionId").map(str::to_owned);
            let (store, initial) = (store.clone(), initial.clone());
            async move { initial(store, id?).await }
        })
        .on_disconnect(move |p: &PathParams| {
            if let Some(id) = p.get("discussionId") {
                cleanup.cleanup_if_empty(id);
            }
        }))
}

/// The whole app as a router (used by `main` and by the end-to-end tests).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route(
            "/api/comments/{discussion_id}",
            post(add_comment).get(get_count),
        )
        .route("/api/votes/{discussion_id}", post(cast_vote).get(get_votes))
        .route("/api/sessions/{discussion_id}", get(get_sessions))
        .route("/metrics", get(render_metrics))
        .route_service(state.endpoint.pattern(), state.endpoint.clone())
        .route_service(state.votes_endpoint.pattern(), state.votes_endpoint.clone())
        .route_service(
            state.presence_endpoint.pattern(),
            state.presence_endpoint.clone(),
        )
        .route_service(state.multiplex.path(), state.multiplex.clone())
        .merge(react_demo())
        .with_state(state)
}

/// Where the built React demo lives: `SSEHUB_REACT_DIST`, else `clients/typescript/demo/dist`.
pub fn react_dist() -> std::path::PathBuf {
    std::env::var_os("SSEHUB_REACT_DIST").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript/demo/dist"),
        Into::into,
    )
}

/// `GET /react/…`: the built React demo, or a page saying how to build it.
fn react_demo<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let dist = react_dist();
    if dist.join("index.html").is_file() {
        return Router::new().nest_service("/react", tower_http::services::ServeDir::new(dist));
    }
    let msg = format!(
        "The React demo has not been built: {} is missing.\n\n\
         Build it with:\n  cd clients/typescript && npm ci && npm run build:demo\n",
        dist.join("index.html").display()
    );
    let not_built = get(move || async move { (StatusCode::NOT_FOUND, msg) });
    Router::new()
        .route("/react", not_built.clone())
        .route("/react/", not_built.clone())
        .route("/react/{*rest}", not_built)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    match &state.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (StatusCode::NOT_FOUND, "no metrics recorder\n".to_owned()),
    }
}

/// How long `/healthz` waits for the broker's answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /healthz`: 200 `{"status":"ok","backend":…}`, or 503 with the error.
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let check = tokio::time::timeout(HEALTH_TIMEOUT, state.comments.broker().health()).await;
    let error = match check {
        Ok(Ok(())) => {
            return (
                StatusCode::OK,
                Json(serde_json::json!({ "status": "ok", "backend": state.backend })),
            );
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {HEALTH_TIMEOUT:?}"),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "error", "backend": state.backend, "error": error })),
    )
}

/// An error answer: `{"error": "…"}` with its status.
type ApiError = (StatusCode, Json<serde_json::Value>);

fn api_error(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
}

/// 400 for what the client sent wrong (an invalid id), 503 for what may pass.
fn hub_error(e: ssehub::Error) -> ApiError {
    let status = if e.is_temporary() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_REQUEST
    };
    api_error(status, e)
}

fn store_error(e: BoxError) -> ApiError {
    tracing::warn!("store: {e}");
    api_error(StatusCode::SERVICE_UNAVAILABLE, e)
}

async fn get_count(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let count = state.store.comment_count(&id).await.map_err(store_error)?;
    Ok(Json(
        serde_json::json!({ "discussionId": id, "commentCount": count }),
    ))
}

/// 3. Publish: add a comment, then tell every connected client.
async fn add_comment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CommentEvent>, (StatusCode, String)> {
    let text = |(status, Json(body)): ApiError| {
        let msg = body["error"].as_str().unwrap_or_default().to_owned();
        (status, format!("{msg}\n"))
    };
    state.comments.topic(&id).map_err(hub_error).map_err(text)?;
    let count = state
        .store
        .add_comment(&id)
        .await
        .map_err(store_error)
        .map_err(text)?;
    let event = CommentEvent {
        discussion_id: id.clone(),
        comment_count: count,
        timestamp: now_ms(),
    };
    state
        .comments
        .publish(&id, &event)
        .await
        .map_err(hub_error)
        .map_err(text)?;
    Ok(Json(event))
}

/// `POST /api/votes/{id}`: count the vote, then publish the totals on the votes channel.
async fn cast_vote(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<VoteEvent>, ApiError> {
    // Every other body is a 400: not `application/json`, not JSON, or not one of the two.
    const EXPECTED: &str = r#"expected {"vote":"up"} or {"vote":"down"}"#;
    let Json(body) = body.map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            format!("{EXPECTED}: {}", e.body_text()),
        )
    })?;
    let vote =
        Vote::from_body(&body).ok_or_else(|| api_error(StatusCode::BAD_REQUEST, EXPECTED))?;
    state.votes.topic(&id).map_err(hub_error)?;
    let totals = state.store.vote(&id, vote).await.map_err(store_error)?;
    let event = VoteEvent {
        discussion_id: id.clone(),
        up: totals.up,
        down: totals.down,
        timestamp: now_ms(),
    };
    state.votes.publish(&id, &event).await.map_err(hub_error)?;
    Ok(Json(event))
}

/// `GET /api/votes/{id}`: the current totals (what a page refetches after a `reset`).
async fn get_votes(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let votes = state.store.votes(&id).await.map_err(store_error)?;
    Ok(Json(
        serde_json::json!({ "discussionId": id, "up": votes.up, "down": votes.down }),
    ))
}

/// `GET /api/sessions/{id}`: `{"sessions": n}`, the comments streams open on the discussion on
/// every node (a look-up in this node's presence table).
async fn get_sessions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sessions = state
        .comments
        .cluster_session_count(&id)
        .await
        .map_err(hub_error)?;
    Ok(Json(serde_json::json!({ "sessions": sessions })))
}

/// The command line of the comments demo: live comment counts and votes per discussion over
/// Server-Sent Events.
#[derive(Debug, clap::Parser)]
#[command(
    name = "comments",
    about = "The ssehub comments demo: live comment counts and votes per discussion over \
             Server-Sent Events."
)]
pub struct Cli {
    /// Where to listen
    #[arg(
        long,
        env = "SSEHUB_ADDR",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:3000",
        value_parser = parse_addr
    )]
    pub addr: String,
    /// The broker, which also keeps the demo's counts and votes: memory (this process only), or
    /// a Redis or NATS URL that several processes share (with the redis / nats feature)
    #[arg(
        long,
        env = "SSEHUB_BACKEND",
        value_name = "memory|redis://…|redis+cluster://…|nats://…",
        default_value = "memory",
        hide_env_values = true,
        value_parser = parse_backend
    )]
    pub backend: String,
}

/// `HOST:PORT`, the host a name or an address (`[::1]` for IPv6).
fn parse_addr(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err("expected HOST:PORT, for example 127.0.0.1:3000".to_owned()),
    }
}

/// `memory`, `redis://…`, `rediss://…`, `redis+cluster://…`, `rediss+cluster://…` or `nats://…`.
fn parse_backend(s: &str) -> Result<String, String> {
    let known = [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
        "nats://",
    ];
    if s == "memory" || known.iter().any(|scheme| s.starts_with(scheme)) {
        Ok(s.to_owned())
    } else {
        Err(
            "expected memory, redis://HOST:PORT, redis+cluster://HOST:PORT[,HOST:PORT…] or nats://HOST:PORT"
                .to_owned(),
        )
    }
}

/// The broker named by `--backend`: `memory`, `redis://…` (or `redis+cluster://…`) or `nats://…`
/// (the last two when the
/// `redis` / `nats` features are compiled in).
pub async fn broker(url: &str) -> Result<Arc<dyn Broker>, BoxError> {
    if url == "memory" {
        return Ok(Arc::new(ssehub::MemoryBroker::new()));
    }
    #[cfg(feature = "redis")]
    if is_redis(url) {
        return Ok(Arc::new(ssehub::RedisBroker::connect(url).await?));
    }
    #[cfg(feature = "nats")]
    if url.starts_with("nats://") {
        return Ok(Arc::new(ssehub::NatsBroker::connect(url).await?));
    }
    Err(format!("backend {url:?} is not compiled in (see the crate's features)").into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let cli = <Cli as clap::Parser>::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let recorder = install_metrics()?;
    let broker = broker(&cli.backend).await?;
    let store = Store::open(&cli.backend).await?;
    let state = AppState::with_store(broker, store)?.with_metrics(recorder);
    let listener = tokio::net::TcpListener::bind(&cli.addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "comments demo on http://{addr} (backend: {})",
        state.backend()
    );
    // Close connections of clients that stop reading (after their stream was cut off).
    let listener = ssehub::axum::WriteTimeoutListener::new(listener, Duration::from_secs(30));
    let streams = state.clone();
    // Routes turned into services once: `axum::serve(listener, router)` would rebuild them for
    // every connection and hold a boxed copy of each route's service per connection.
    let app = app(state).with_state::<()>(()).into_make_service();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: ending every stream");
            streams.shutdown();
            tokio::time::sleep(Duration::from_millis(100)).await;
        })
        .await?;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ssehub comments demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; }
  .badge { padding: .2rem .6rem; border-radius: 1rem; color: white; background: #b91c1c; }
  .badge.on { background: #15803d; }
  #count { font-size: 3rem; font-weight: bold; }
</style>
</head>
<body>
<h1>Discussion <span id="discussion"></span></h1>
<p>Status: <span id="status" class="badge">disconnected</span></p>
<p>Comments: <span id="count">–</span></p>
<button id="add">Add a comment</button>
<p>Votes: <button id="up">Up</button> <span id="up-count">–</span>
  <button id="down">Down</button> <span id="down-count">–</span></p>
<p id="viewers"><span id="sessions">–</span> viewing</p>
<pre id="log"></pre>
<script>
  // One EventSource for the three widgets: the multiplexing endpoint carries the comments,
  // votes and viewers channels of this discussion, and each event's name says which. Its ids
  // hold every channel's position, so a reconnect resumes all three exactly.
  const id = new URLSearchParams(location.search).get('discussion') || '123';
  document.getElementById('discussion').textContent = id;
  const status = document.getElementById('status');
  const count = document.getElementById('count');
  const log = document.getElementById('log');
  const enc = encodeURIComponent(id);
  const channels = { comments: `comments/${id}`, votes: `votes/${id}`, presence: `presence/${id}` };
  const query = Object.values(channels).map((c) => `channel=${encodeURIComponent(c)}`).join('&');
  const es = new EventSource(`/api/sse?${query}`);
  es.onopen = () => { status.textContent = 'connected'; status.className = 'badge on'; };
  es.onerror = () => { status.textContent = 'disconnected'; status.className = 'badge'; };
  const on = (channel, handle) => es.addEventListener(channel, (e) => {
    handle(JSON.parse(e.data));
    log.textContent = `${channel} ${e.lastEventId ? 'id ' + e.lastEventId : '(initial)'}\n` + log.textContent;
  });

  const show = (n) => { count.textContent = String(n); };
  on(channels.comments, (event) => show(event.commentCount));
  document.getElementById('add').onclick = () => fetch(`/api/comments/${enc}`, { method: 'POST' });

  const up = document.getElementById('up-count');
  const down = document.getElementById('down-count');
  const showVotes = (v) => { up.textContent = String(v.up); down.textContent = String(v.down); };
  on(channels.votes, showVotes);
  const vote = (v) => fetch(`/api/votes/${enc}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ vote: v }),
  });
  document.getElementById('up').onclick = () => vote('up');
  document.getElementById('down').onclick = () => vote('down');

  const sessions = document.getElementById('sessions');
  on(channels.presence, (p) => { sessions.textContent = String(p.sessions); });

  // A channel the server could not replay gets its own reset, naming it: refetch its state.
  es.addEventListener('reset', (e) => {
    const channel = JSON.parse(e.data).channel;
    log.textContent = `reset ${channel}\n` + log.textContent;
    if (channel === channels.comments) {
      fetch(`/api/comments/${enc}`).then((r) => r.json()).then((j) => show(j.commentCount));
    } else if (channel === channels.votes) {
      fetch(`/api/votes/${enc}`).then((r) => r.json()).then(showVotes);
    } else if (channel === channels.presence) {
      fetch(`/api/sessions/${enc}`).then((r) => r.json())
        .then((j) => { sessions.textContent = String(j.sessions); });
    }
  });
</script>
</body>
</html>
"#;
