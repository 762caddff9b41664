//! Where the demo keeps its numbers (comment counts, vote totals) — in this process, in Redis or
//! in a NATS key-value bucket — and the broker `--backend` names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
#[cfg(feature = "nats")]
use std::time::Duration;

#[cfg(feature = "nats")]
use serde::Serialize;
#[cfg(feature = "nats")]
use ssehub::backends::nats::async_nats::{self, jetstream::kv};
#[cfg(feature = "redis")]
use ssehub::backends::redis::{RedisConnection, redis};
use ssehub::{BoxError, Broker};

use super::events::{Vote, Votes};

/// Where the demo's numbers live — comment counts and vote totals — so that every node of a
/// cluster answers the same ones: a map in this process (`memory`), Redis keys under
/// `ssehub-demo:` (`INCR`, `HINCRBY`), or the JetStream key-value bucket `ssehub-demo`
/// (compare-and-set updates).
#[derive(Clone)]
pub enum Store {
    /// In this process only.
    Memory(Arc<Mutex<MemoryData>>),
    /// Redis: `ssehub-demo:{comments:ID}` (a counter) and `ssehub-demo:{votes:ID}` (a hash with
    /// the fields `up` and `down`); what a request with an idempotency key counted under
    /// `ssehub-demo:{comments:ID}:once:KEY` (in the counter's cluster slot).
    #[cfg(feature = "redis")]
    Redis(RedisConnection),
    /// NATS: the keys `comments.{id}` (a number) and `votes.{id}` (`{"up":n,"down":m}`) in the
    /// bucket `ssehub-demo`, the id escaped to the characters keys allow.
    #[cfg(feature = "nats")]
    Nats(Arc<kv::Store>),
}

/// The in-memory store's data.
#[derive(Debug, Default)]
pub struct MemoryData {
    pub(super) comments: HashMap<String, u64>,
    pub(super) votes: HashMap<String, Votes>,
    /// What requests with an idempotency key counted (`kind:id:key`), and when.
    once: HashMap<String, (std::time::Instant, String)>,
}

impl MemoryData {
    /// What the request with this key counted, if within `window`.
    pub(super) fn seen(&mut self, key: &str, window: std::time::Duration) -> Option<String> {
        self.once.retain(|_, (at, _)| at.elapsed() < window);
        self.once.get(key).map(|(_, counted)| counted.clone())
    }

    /// Remember what the request with this key counted.
    pub(super) fn remember(&mut self, key: String, counted: String) {
        self.once.insert(key, (std::time::Instant::now(), counted));
    }
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
            return Ok(Store::Redis(RedisConnection::open(url).await?));
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
            Store::Redis(con) => Ok(redis::cmd("INCR")
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
                let count: Option<u64> = redis::cmd("GET")
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
                let ((up, down),): ((Option<u64>, Option<u64>),) = redis::pipe()
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
                let (up, down): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
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

/// The counter of `kind` for `id`, in the `{kind:id}` hash tag's slot.
#[cfg(feature = "redis")]
pub(super) fn redis_key(kind: &str, id: &str) -> String {
    format!("{STORE_PREFIX}:{{{kind}:{id}}}")
}

/// What the request with idempotency key `key` counted, in the counter's slot.
#[cfg(feature = "redis")]
pub(super) fn redis_once_key(kind: &str, id: &str, key: &str) -> String {
    format!("{}:once:{key}", redis_key(kind, id))
}

/// `kind.id`, the id escaped to what NATS keys allow (`-/_=.a-zA-Z0-9`, no `.` at either end):
/// letters, digits, `-` and `_` stay, every other byte becomes `=XX`.
#[cfg(feature = "nats")]
pub(super) fn nats_key(kind: &str, id: &str) -> String {
    let mut key = format!("{kind}.");
    escape_nats(id, &mut key);
    key
}

/// `once.kind.id.key`: what the request with idempotency key `key` counted.
#[cfg(feature = "nats")]
pub(super) fn nats_once_key(kind: &str, id: &str, key: &str) -> String {
    let mut out = format!("once.{kind}.");
    escape_nats(id, &mut out);
    out.push('.');
    escape_nats(key, &mut out);
    out
}

#[cfg(feature = "nats")]
fn escape_nats(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
}

/// Find or create the bucket [`STORE_PREFIX`]. The bucket's stream is set up directly, as a
/// key-value bucket's stream with a history of one, because `create_key_value` first queries
/// the account, which fails on older servers (Debian's 2.9); nodes starting together race to
/// create it, and the loser finds the winner's.
#[cfg(feature = "nats")]
async fn open_bucket(url: &str) -> Result<kv::Store, BoxError> {
    use async_nats::jetstream::stream;
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
    kv: &kv::Store,
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
pub(super) async fn nats_update<T>(
    kv: &kv::Store,
    key: &str,
    change: impl Fn(&mut T),
) -> Result<T, BoxError>
where
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    use kv::{CreateErrorKind, Operation, UpdateErrorKind};
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
