//! Redis broker for ssehub: fan-out across servers over pub/sub, resume from stream history.
//!
//! [`RedisBroker`] publishes each event with one Lua script that appends it to a per-topic
//! stream (trimmed to `MAXLEN ~ history`) and publishes it to the topic's pub/sub channel, so
//! every node sees the same [`EventId`]. Each broker keeps **one** subscriber connection,
//! subscribes per topic on demand, fans events out locally to every subscription of the topic,
//! and unsubscribes when the topic's last subscription is dropped. When the subscriber connection
//! drops, it reconnects with backoff, re-subscribes, and fills what it missed from the streams,
//! or yields [`Delivery::Gap`] when that is impossible (history trimmed, Redis restarted without
//! persistence).
//!
//! Ids are `<epoch>-<ms>-<seq>`: the epoch is a random value stored per topic the first time the
//! topic is published to, so an id from before a Redis flush or restart without persistence
//! answers a gap, never a wrong replay.
//!
//! Keys (with the default prefix `ssehub`) are `ssehub:{topic}:stream`, `ssehub:{topic}:epoch`
//! and `ssehub:{topic}:presence*`; the channel is `ssehub:{topic}:events`. Topics cannot contain
//! braces, colons inside a part, or glob characters, so one topic never reaches another's keys.
//!
//! This crate re-exports [`redis`], so users need one dependency only.
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use ssehub_core::{Broker, Delivery, Message, Topic};
//! use ssehub_redis::RedisBroker;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let broker = RedisBroker::builder("redis://127.0.0.1:6379")?
//!     .key_prefix("myapp")
//!     .history(500)
//!     .connect()
//!     .await?;
//! let topic = Topic::new("discussion:1:comments")?;
//! let mut sub = broker.subscribe(&topic).await?;
//! let id = broker.publish(&topic, Message::new("hello")).await?;
//! if let Some(Delivery::Event(env)) = sub.next().await {
//!     assert_eq!(env.id, id);
//! }
//! # Ok(()) }
//! ```

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, PushInfo,
    PushKind, Script, Value,
};
use ssehub_core::{
    Broker, Capabilities, Delivery, Envelope, Error, EventId, EventName, Message, Replay, Result,
    Subscription, Topic,
};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use redis;

const BACKEND: &str = "redis";

/// The private error of this backend, mapped into [`ssehub_core::Error::Broker`].
#[derive(Debug, thiserror::Error)]
enum RedisError {
    #[error("{what}: {source}")]
    Redis {
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("unexpected reply from redis: {0}")]
    Protocol(&'static str),
    #[error("subscriber connection is down, reconnecting")]
    Disconnected,
}

impl RedisError {
    fn redis(what: &'static str) -> impl FnOnce(redis::RedisError) -> RedisError {
        move |source| RedisError::Redis { what, source }
    }

    fn is_temporary(&self) -> bool {
        match self {
            RedisError::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || matches!(
                        source.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::MasterDown
                                | redis::ServerErrorKind::ClusterDown
                        )
                    )
            }
            RedisError::Timeout(_) | RedisError::Disconnected => true,
            RedisError::Protocol(_) => false,
        }
    }
}

impl From<RedisError> for Error {
    fn from(err: RedisError) -> Self {
        let temporary = err.is_temporary();
        let message = match &err {
            RedisError::Redis { what, .. } => format!("{what} failed"),
            other => other.to_string(),
        };
        Error::broker(BACKEND, temporary, message, Some(Box::new(err)))
    }
}

type RResult<T> = std::result::Result<T, RedisError>;

async fn timed<T>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> RResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(res) => res.map_err(RedisError::redis(what)),
        Err(_) => Err(RedisError::Timeout(what)),
    }
}

/// Settings of a [`RedisBroker`]; consuming setters document their defaults.
///
/// `Debug` never shows the password of the URL.
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    info: ConnectionInfo,
    key_prefix: String,
    history: usize,
    max_payload: usize,
    key_ttl: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
    health_timeout: Duration,
    presence_ttl: Duration,
    subscriber_buffer: usize,
    reconnect_max_delay: Duration,
    ping_interval: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redis = self.info.redis_settings();
        f.debug_struct("RedisConfig")
            .field("addr", &format_args!("{}", self.info.addr()))
            .field("db", &redis.db())
            .field("username", &redis.username())
            .field(
                "password",
                &format_args!(
                    "{}",
                    if redis.password().is_some() {
                        "<hidden>"
                    } else {
                        "none"
                    }
                ),
            )
            .field("key_prefix", &self.key_prefix)
            .field("history", &self.history)
            .field("max_payload", &self.max_payload)
            .field("key_ttl", &self.key_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("health_timeout", &self.health_timeout)
            .field("presence_ttl", &self.presence_ttl)
            .field("subscriber_buffer", &self.subscriber_buffer)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://[user:password@]host:port[/db]`,
    /// `rediss://…` needs a TLS feature of [`redis`]), with every other setting at its default.
    ///
    /// The URL is parsed here; an invalid URL is refused without echoing it (it may hold a
    /// password).
    pub fn new(url: &str) -> Result<Self> {
        let info = url.into_connection_info().map_err(|_| {
            Error::broker(
                BACKEND,
                false,
                "invalid redis url (not echoed, it may hold a password)",
                None,
            )
        })?;
        Ok(Self::from_connection_info(info))
    }

    /// Settings for an already-built [`redis::ConnectionInfo`].
    pub fn from_connection_info(info: ConnectionInfo) -> Self {
        RedisConfig {
            info,
            key_prefix: "ssehub".to_owned(),
            history: 1000,
            max_payload: 1024 * 1024,
            key_ttl: Duration::from_secs(24 * 3600),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(60),
            subscriber_buffer: 4096,
            reconnect_max_delay: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
        }
    }

    /// Prefix of every Redis key and channel this broker uses. Default: `ssehub`. Brokers with
    /// different prefixes share nothing. Each `:`-separated part must be a valid key part
    /// (letters, digits, `- _ . ~ @ + =`); checked by [`connect`](Self::connect).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Events kept per topic for replay (`XADD … MAXLEN ~ history`; Redis may keep somewhat
    /// more). Default: 1,000. At least 1.
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// Largest payload accepted, in bytes. Default: 1 MiB.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// How long a topic's stream and epoch live after its last publish, so abandoned topics do
    /// not hold Redis memory forever. Default: 24 hours. Zero keeps them forever.
    pub fn key_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl;
        self
    }

    /// Time allowed to open a connection. Default: 2 seconds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for one command's answer. Default: 5 seconds.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Time [`Broker::health`] waits for its probe to come back. Default: 2 seconds.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// How long a node's presence count counts after it was last written. Default: 60 seconds.
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// Events one subscription may fall behind before it receives a gap. Default: 4,096.
    pub fn subscriber_buffer(mut self, events: usize) -> Self {
        self.subscriber_buffer = events.max(1);
        self
    }

    /// Longest wait between two reconnect attempts of the subscriber connection (the wait
    /// doubles from 50 ms up to this). Default: 2 seconds.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay.max(Duration::from_millis(50));
        self
    }

    /// How often the subscriber connection, which otherwise only receives, pings the server. A
    /// server that stops answering (frozen process, half-open connection, silent network) is
    /// noticed within this interval plus the connect and response timeouts; the subscriber
    /// then reconnects and fills what it missed from the stream. Default: 5 seconds.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Connect: open the command connection and the subscriber connection.
    pub async fn connect(self) -> Result<RedisBroker> {
        RedisBroker::with_config(self).await
    }

    fn op_timeout(&self) -> Duration {
        self.connect_timeout + self.response_timeout
    }
}

/// A [`Broker`] over Redis pub/sub and streams. Cheap to clone (clones share connections).
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    keys: Keys,
    node_id: String,
    cmd: ConnectionManager,
    publish_script: Script,
    presence_script: Script,
    actor: mpsc::UnboundedSender<Command>,
    subscriptions: Arc<AtomicUsize>,
    probes: Probes,
}

type Probes = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.inner.config)
            .field("node_id", &self.inner.node_id)
            .field("active_subscriptions", &self.active_subscriptions())
            .finish_non_exhaustive()
    }
}

/// Key and channel names; the topic sits in a `{hash tag}` so a script's keys share a slot.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn key(&self, topic: &str, kind: &str) -> String {
        format!("{}:{{{topic}}}:{kind}", self.prefix)
    }
    fn stream(&self, topic: &str) -> String {
        self.key(topic, "stream")
    }
    fn epoch(&self, topic: &str) -> String {
        self.key(topic, "epoch")
    }
    fn channel(&self, topic: &str) -> String {
        self.key(topic, "events")
    }
    fn probe_channel(&self, node: &str) -> String {
        format!("{}:health:{node}", self.prefix)
    }
}

const PUBLISH_LUA: &str = r"
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[3], 'd', ARGV[4])
redis.call('PUBLISH', ARGV[5], epoch .. '\n' .. id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {epoch, id}
";

const PRESENCE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, n in ipairs(dead) do redis.call('HDEL', KEYS[1], n) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + (tonumber(v) or 0) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return total
";

fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn check_prefix(prefix: &str) -> Result<()> {
    Topic::new(prefix).map(|_| ()).map_err(|_| {
        Error::broker(
            BACKEND,
            false,
            "invalid key prefix: use letters, digits and - _ . ~ @ + = in `:`-separated parts",
            None,
        )
    })
}

impl RedisBroker {
    /// Connect to `url` with the default settings (see [`RedisConfig`]).
    pub async fn connect(url: &str) -> Result<Self> {
        RedisConfig::new(url)?.connect().await
    }

    /// Start configuring a broker for `url`.
    pub fn builder(url: &str) -> Result<RedisConfig> {
        RedisConfig::new(url)
    }

    /// Connect with these settings.
    pub async fn with_config(config: RedisConfig) -> Result<Self> {
        check_prefix(&config.key_prefix)?;
        let keys = Keys {
            prefix: config.key_prefix.clone(),
        };
        let client = Client::open(config.info.clone())
            .map_err(|e| RedisError::redis("opening client")(e))?;
        let cm_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let cmd = timed(
            config.op_timeout(),
            "connecting",
            client.get_connection_manager_with_config(cm_config),
        )
        .await?;

        let node_id = random_hex();
        let probes: Probes = Arc::default();
        let subscriptions = Arc::new(AtomicUsize::new(0));
        let (actor_tx, actor_rx) = mpsc::unbounded_channel();
        let mut actor = Actor {
            config: config.clone(),
            keys: keys.clone(),
            cmd: cmd.clone(),
            sub_client: Client::open(
                config.info.clone().set_redis_settings(
                    config
                        .info
                        .redis_settings()
                        .clone()
                        .set_protocol(ProtocolVersion::RESP3),
                ),
            )
            .map_err(RedisError::redis("opening client"))?,
            probe_channel: keys.probe_channel(&node_id),
            probes: probes.clone(),
            topics: HashMap::new(),
            rx: actor_rx,
        };
        let first = actor.open().await?;
        tokio::spawn(actor.run(first));

        Ok(RedisBroker {
            inner: Arc::new(Inner {
                config,
                keys,
                node_id,
                cmd,
                publish_script: Script::new(PUBLISH_LUA),
                presence_script: Script::new(PRESENCE_LUA),
                actor: actor_tx,
                subscriptions,
                probes,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// This broker's random node id (used for presence and health probes).
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    async fn replay_inner(&self, topic: &Topic, after: &EventId) -> RResult<Replay> {
        let Some(pos) = ParsedId::parse(after.as_str()) else {
            return Ok(Replay::Gap);
        };
        let t = topic.as_str();
        let stream_id = pos.stream_id();
        let mut con = self.inner.cmd.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(self.inner.keys.epoch(t))
            .cmd("XRANGE")
            .arg(self.inner.keys.stream(t))
            .arg(&stream_id)
            .arg(&stream_id)
            .cmd("XRANGE")
            .arg(self.inner.keys.stream(t))
            .arg(format!("({stream_id}"))
            .arg("+");
        let replies: Vec<Value> = timed(
            self.inner.config.op_timeout(),
            "replay",
            pipe.query_async(&mut con),
        )
        .await?;
        let [epoch, exact, after_entries] = <[Value; 3]>::try_from(replies)
            .map_err(|_| RedisError::Protocol("replay reply of the wrong length"))?;
        let Some(epoch) = bulk_string(&epoch)? else {
            return Ok(Replay::Gap);
        };
        if epoch != pos.epoch {
            return Ok(Replay::Gap);
        }
        // Redis answers the entries after a trimmed id silently: the id must still be there.
        if parse_entries(exact)?.is_empty() {
            return Ok(Replay::Gap);
        }
        let entries = parse_entries(after_entries)?;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry.into_envelope(&epoch) {
                Some(env) => events.push(env),
                // A malformed entry cannot be told: a gap, never a silent skip.
                None => return Ok(Replay::Gap),
            }
        }
        Ok(Replay::Events(events))
    }

    async fn subscribe_inner(&self, topic: &Topic) -> RResult<Subscription> {
        let (reply, answer) = oneshot::channel();
        let channel = self.inner.keys.channel(topic.as_str());
        self.inner
            .actor
            .send(Command::Subscribe {
                topic: topic.clone(),
                channel: channel.clone(),
                reply,
            })
            .map_err(|_| RedisError::Disconnected)?;
        let rx = match tokio::time::timeout(self.inner.config.op_timeout(), answer).await {
            Ok(Ok(res)) => res?,
            Ok(Err(_)) => return Err(RedisError::Disconnected),
            Err(_) => return Err(RedisError::Timeout("subscribe")),
        };
        // The actor counted this subscription; the guard releases it when the stream drops.
        let guard = SubscriptionGuard::new(
            self.inner.subscriptions.clone(),
            self.inner.actor.clone(),
            channel,
        );
        Ok(Box::pin(futures_util::stream::unfold(
            (rx, guard),
            |(mut rx, guard)| async move {
                match rx.recv().await {
                    Ok(d) => Some((d, (rx, guard))),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Some((Delivery::Gap, (rx, guard)))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        )))
    }

    async fn health_inner(&self) -> RResult<()> {
        let token = random_hex();
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.probes).insert(token.clone(), tx);
        let res = async {
            let mut con = self.inner.cmd.clone();
            let channel = self.inner.keys.probe_channel(&self.inner.node_id);
            let _: i64 = timed(
                self.inner.config.op_timeout(),
                "health probe publish",
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(&token)
                    .query_async(&mut con),
            )
            .await?;
            match tokio::time::timeout(self.inner.config.health_timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(RedisError::Timeout("health probe")),
            }
        }
        .await;
        lock(&self.inner.probes).remove(&token);
        res
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        let max = self.inner.config.max_payload;
        if message.data.len() > max {
            return Err(Error::PayloadTooLarge {
                size: message.data.len(),
                max,
            });
        }
        let t = topic.as_str();
        let keys = &self.inner.keys;
        let mut con = self.inner.cmd.clone();
        let ttl_ms = u64::try_from(self.inner.config.key_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.inner.publish_script.prepare_invoke();
        invocation
            .key(keys.stream(t))
            .key(keys.epoch(t))
            .arg(random_hex())
            .arg(self.inner.config.history)
            .arg(message.event.as_str())
            .arg(&message.data[..])
            .arg(keys.channel(t))
            .arg(ttl_ms);
        let reply: Value = timed(
            self.inner.config.op_timeout(),
            "publish",
            invocation.invoke_async(&mut con),
        )
        .await?;
        let Value::Array(parts) = reply else {
            return Err(RedisError::Protocol("publish script reply is not an array").into());
        };
        let [epoch, id] = <[Value; 2]>::try_from(parts)
            .map_err(|_| RedisError::Protocol("publish script reply of the wrong length"))?;
        let epoch = bulk_string(&epoch)?.ok_or(RedisError::Protocol("publish: no epoch"))?;
        let id = bulk_string(&id)?.ok_or(RedisError::Protocol("publish: no entry id"))?;
        let (ms, seq) =
            parse_stream_id(&id).ok_or(RedisError::Protocol("publish: bad entry id"))?;
        make_id(&epoch, ms, seq).ok_or_else(|| RedisError::Protocol("publish: bad epoch").into())
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription> {
        Ok(self.subscribe_inner(topic).await?)
    }

    async fn replay(&self, topic: &Topic, after: &EventId) -> Result<Replay> {
        Ok(self.replay_inner(topic, after).await?)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_history(Some(self.inner.config.history))
            .with_presence(true)
            .with_max_payload(self.inner.config.max_payload)
            .with_durable(true)
    }

    fn id_order(&self, a: &EventId, b: &EventId) -> Option<CmpOrdering> {
        let a = ParsedId::parse(a.as_str())?;
        let b = ParsedId::parse(b.as_str())?;
        (a.epoch == b.epoch).then(|| (a.ms, a.seq).cmp(&(b.ms, b.seq)))
    }

    fn active_subscriptions(&self) -> usize {
        self.inner.subscriptions.load(Ordering::Acquire)
    }

    async fn cluster_sessions(&self, topic: &Topic, local: usize) -> Result<usize> {
        let t = topic.as_str();
        let keys = &self.inner.keys;
        let mut con = self.inner.cmd.clone();
        let ttl_ms = u64::try_from(self.inner.config.presence_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.inner.presence_script.prepare_invoke();
        invocation
            .key(keys.key(t, "presence"))
            .key(keys.key(t, "presence-expiry"))
            .arg(&self.inner.node_id)
            .arg(local)
            .arg(ttl_ms);
        let total: i64 = timed(
            self.inner.config.op_timeout(),
            "presence",
            invocation.invoke_async(&mut con),
        )
        .await?;
        Ok(usize::try_from(total).unwrap_or(0))
    }

    async fn health(&self) -> Result<()> {
        Ok(self.health_inner().await?)
    }
}

// ---------------------------------------------------------------------------------------------
// Ids and replies

/// `<epoch>-<ms>-<seq>`, parsed from untrusted text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParsedId {
    epoch: String,
    ms: u64,
    seq: u64,
}

fn is_epoch(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_stream_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    Some((parse_u64(ms)?, parse_u64(seq)?))
}

fn make_id(epoch: &str, ms: u64, seq: u64) -> Option<EventId> {
    if !is_epoch(epoch) {
        return None;
    }
    EventId::parse(&format!("{epoch}-{ms}-{seq}")).ok()
}

impl ParsedId {
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '-');
        let epoch = parts.next()?;
        let ms = parse_u64(parts.next()?)?;
        let seq = parse_u64(parts.next()?)?;
        is_epoch(epoch).then(|| ParsedId {
            epoch: epoch.to_owned(),
            ms,
            seq,
        })
    }

    fn stream_id(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }
}

fn bulk_string(v: &Value) -> RResult<Option<String>> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|_| RedisError::Protocol("string is not utf-8")),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::VerbatimString { text, .. } => Ok(Some(text.clone())),
        _ => Err(RedisError::Protocol("expected a string")),
    }
}

/// One stream entry, not yet validated.
struct Entry {
    ms: u64,
    seq: u64,
    event: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
}

impl Entry {
    fn into_envelope(self, epoch: &str) -> Option<Envelope> {
        let event = String::from_utf8(self.event?).ok()?;
        Some(Envelope {
            id: make_id(epoch, self.ms, self.seq)?,
            event: EventName::from_wire(&event).ok()?,
            data: Bytes::from(self.data?),
        })
    }
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Parse an `XRANGE` / `XREVRANGE` reply (RESP2 or RESP3 shapes).
fn parse_entries(v: Value) -> RResult<Vec<Entry>> {
    let items = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => items,
        _ => return Err(RedisError::Protocol("stream range is not an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(RedisError::Protocol("stream entry is not an array"));
        };
        let [id, fields] = <[Value; 2]>::try_from(pair)
            .map_err(|_| RedisError::Protocol("stream entry of the wrong length"))?;
        let id = bulk_string(&id)?.ok_or(RedisError::Protocol("stream entry without id"))?;
        let (ms, seq) =
            parse_stream_id(&id).ok_or(RedisError::Protocol("stream entry id malformed"))?;
        let pairs: Vec<(Value, Value)> = match fields {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            Value::Map(map) => map,
            _ => return Err(RedisError::Protocol("stream entry fields malformed")),
        };
        let mut entry = Entry {
            ms,
            seq,
            event: None,
            data: None,
        };
        for (k, v) in pairs {
            match into_bytes(k).as_deref() {
                Some(b"e") => entry.event = into_bytes(v),
                Some(b"d") => entry.data = into_bytes(v),
                _ => {}
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// A pub/sub message: `epoch \n ms-seq \n event \n data`.
fn parse_message(payload: &[u8]) -> Option<(String, u64, u64, EventName, Bytes)> {
    let mut parts = payload.splitn(4, |b| *b == b'\n');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let id = std::str::from_utf8(parts.next()?).ok()?;
    let event = std::str::from_utf8(parts.next()?).ok()?;
    let data = parts.next()?;
    if !is_epoch(epoch) {
        return None;
    }
    let (ms, seq) = parse_stream_id(id)?;
    let event = EventName::from_wire(event).ok()?;
    Some((
        epoch.to_owned(),
        ms,
        seq,
        event,
        Bytes::copy_from_slice(data),
    ))
}

// ---------------------------------------------------------------------------------------------
// The subscriber actor: owns the one pub/sub connection and the per-topic fan-out.

enum Command {
    Subscribe {
        topic: Topic,
        channel: String,
        reply: oneshot::Sender<RResult<broadcast::Receiver<Delivery>>>,
    },
    Release {
        channel: String,
    },
}

struct SubscriptionGuard {
    count: Arc<AtomicUsize>,
    actor: mpsc::UnboundedSender<Command>,
    channel: Option<String>,
}

impl SubscriptionGuard {
    fn new(
        count: Arc<AtomicUsize>,
        actor: mpsc::UnboundedSender<Command>,
        channel: String,
    ) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        SubscriptionGuard {
            count,
            actor,
            channel: Some(channel),
        }
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(channel) = self.channel.take() {
            let _ = self.actor.send(Command::Release { channel });
        }
    }
}

/// Where a topic's delivery stands: the last id delivered (or the stream's tail when it was
/// subscribed), used to drop duplicates and to fill after a reconnect.
#[derive(Clone, Debug, Default)]
struct Position {
    epoch: Option<String>,
    last: Option<(u64, u64)>,
}

struct TopicSub {
    topic: Topic,
    tx: broadcast::Sender<Delivery>,
    refs: usize,
    pos: Position,
}

impl TopicSub {
    fn gap(&mut self, pos: Position) {
        let _ = self.tx.send(Delivery::Gap);
        self.pos = pos;
    }

    /// Deliver one event unless it was already delivered; a new epoch means a gap first.
    fn deliver(&mut self, epoch: &str, ms: u64, seq: u64, event: EventName, data: Bytes) {
        match &self.pos.epoch {
            Some(e) if e == epoch => {
                let seen = self.pos.last.is_some_and(|last| (ms, seq) <= last);
                if seen {
                    return;
                }
            }
            Some(_) => {
                // The topic's history was reset under us (flush, restart, expiry).
                let _ = self.tx.send(Delivery::Gap);
            }
            None => {}
        }
        let Some(id) = make_id(epoch, ms, seq) else {
            let _ = self.tx.send(Delivery::Gap);
            return;
        };
        self.pos = Position {
            epoch: Some(epoch.to_owned()),
            last: Some((ms, seq)),
        };
        let _ = self.tx.send(Delivery::Event(Envelope { id, event, data }));
    }
}

struct Actor {
    config: RedisConfig,
    keys: Keys,
    cmd: ConnectionManager,
    sub_client: Client,
    probe_channel: String,
    probes: Probes,
    topics: HashMap<String, TopicSub>,
    rx: mpsc::UnboundedReceiver<Command>,
}

type Conn = (MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>);

enum Outcome {
    /// The connection failed: reconnect.
    Reconnect,
    /// Every handle is gone: stop.
    Stop,
}

impl Actor {
    /// Open the subscriber connection and subscribe the probe channel.
    async fn open(&mut self) -> RResult<Conn> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout))
            .set_push_sender(tx);
        let mut con = timed(
            self.config.op_timeout(),
            "connecting the subscriber",
            self.sub_client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await?;
        timed(
            self.config.op_timeout(),
            "subscribe",
            con.subscribe(&self.probe_channel),
        )
        .await?;
        Ok((con, rx))
    }

    async fn run(mut self, first: Conn) {
        let mut conn = Some(first);
        let mut delay = Duration::from_millis(50);
        loop {
            let (mut con, mut pushes) = match conn.take() {
                Some(c) => c,
                None => match self.reconnect().await {
                    Ok(Some(c)) => {
                        delay = Duration::from_millis(50);
                        ssehub_core::metrics::broker_reconnected("redis");
                        c
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "redis subscriber reconnect failed");
                        if self.wait(delay).await.is_none() {
                            return;
                        }
                        delay = (delay * 2).min(self.config.reconnect_max_delay);
                        continue;
                    }
                },
            };
            match self.serve(&mut con, &mut pushes).await {
                Outcome::Stop => return,
                Outcome::Reconnect => {
                    tracing::warn!("redis subscriber connection lost, reconnecting");
                }
            }
        }
    }

    /// Sleep, answering commands meanwhile (subscribes fail: the connection is down).
    /// `None` when every handle is gone.
    async fn wait(&mut self, delay: Duration) -> Option<()> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Some(()),
                cmd = self.rx.recv() => match cmd? {
                    Command::Subscribe { reply, .. } => {
                        let _ = reply.send(Err(RedisError::Disconnected));
                    }
                    Command::Release { channel } => {
                        self.release_local(&channel);
                    }
                },
            }
        }
    }

    /// Drop one reference; `true` when the topic has no subscription left (and was removed).
    fn release_local(&mut self, channel: &str) -> bool {
        let Some(t) = self.topics.get_mut(channel) else {
            return false;
        };
        t.refs = t.refs.saturating_sub(1);
        if t.refs == 0 {
            self.topics.remove(channel);
            true
        } else {
            false
        }
    }

    /// Open a new connection, re-subscribe every live topic, and fill what was missed.
    async fn reconnect(&mut self) -> RResult<Option<Conn>> {
        // Forget topics whose subscriptions were all dropped while down.
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(RedisError::Disconnected));
                }
                Command::Release { channel } => {
                    self.release_local(&channel);
                }
            }
        }
        if self.rx.is_closed() && self.topics.is_empty() {
            return Ok(None);
        }
        let (mut con, pushes) = self.open().await?;
        let channels: Vec<String> = self.topics.keys().cloned().collect();
        if !channels.is_empty() {
            timed(
                self.config.op_timeout(),
                "re-subscribe",
                con.subscribe(&channels),
            )
            .await?;
        }
        for channel in channels {
            self.fill(&channel).await?;
        }
        Ok(Some((con, pushes)))
    }

    /// After a reconnect: deliver the events the topic missed from its stream, or a gap.
    async fn fill(&mut self, channel: &str) -> RResult<()> {
        let Some(t) = self.topics.get(channel) else {
            return Ok(());
        };
        let topic = t.topic.as_str().to_owned();
        let pos = t.pos.clone();
        let stream = self.keys.stream(&topic);
        let history = self.config.history;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("GET").arg(self.keys.epoch(&topic));
        match pos.last {
            Some((ms, seq)) => {
                let id = format!("{ms}-{seq}");
                pipe.cmd("XRANGE")
                    .arg(&stream)
                    .arg(&id)
                    .arg(&id)
                    .cmd("XRANGE")
                    .arg(&stream)
                    .arg(format!("({id}"))
                    .arg("+");
            }
            None => {
                pipe.cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("-")
                    .cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(history + 1);
            }
        }
        pipe.cmd("XREVRANGE")
            .arg(&stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut con = self.cmd.clone();
        let replies: Vec<Value> =
            timed(self.config.op_timeout(), "fill", pipe.query_async(&mut con)).await?;
        let [epoch, exact, entries, tail] = <[Value; 4]>::try_from(replies)
            .map_err(|_| RedisError::Protocol("fill reply of the wrong length"))?;
        let epoch = bulk_string(&epoch)?;
        let exact = parse_entries(exact)?;
        let entries = parse_entries(entries)?;
        let tail = parse_entries(tail)?.first().map(|e| (e.ms, e.seq));
        let now = Position {
            epoch: epoch.clone(),
            last: tail,
        };
        let Some(t) = self.topics.get_mut(channel) else {
            return Ok(());
        };
        let lost = match (&pos.epoch, &epoch) {
            (Some(before), Some(now)) if before != now => true,
            (Some(_), None) => true,
            _ => match pos.last {
                Some(_) => exact.is_empty(),
                // Nothing was in the stream when we subscribed: all of it is new, unless it
                // grew past the window (trimming may have removed some).
                None => entries.len() >= history,
            },
        };
        if lost {
            t.gap(now);
            return Ok(());
        }
        let Some(epoch) = epoch else {
            return Ok(());
        };
        for entry in entries {
            let (ms, seq) = (entry.ms, entry.seq);
            match (entry.event, entry.data) {
                (Some(event), Some(data)) => {
                    match String::from_utf8(event)
                        .ok()
                        .and_then(|e| EventName::from_wire(&e).ok())
                    {
                        Some(event) => t.deliver(&epoch, ms, seq, event, Bytes::from(data)),
                        None => t.gap(now.clone()),
                    }
                }
                _ => t.gap(now.clone()),
            }
        }
        Ok(())
    }

    /// Serve commands and pushes until the connection fails or every handle is gone.
    async fn serve(
        &mut self,
        con: &mut MultiplexedConnection,
        pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
    ) -> Outcome {
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    None => return Outcome::Reconnect,
                    Some(p) if p.kind == PushKind::Disconnection => return Outcome::Reconnect,
                    Some(p) => self.on_push(p),
                },
                cmd = self.rx.recv() => match cmd {
                    None => return Outcome::Stop,
                    Some(Command::Subscribe { topic, channel, reply }) => {
                        if let Err(e) = self.on_subscribe(con, topic, channel, reply).await
                            && e.is_temporary()
                        {
                            return Outcome::Reconnect;
                        }
                    }
                    Some(Command::Release { channel }) => {
                        if self.release_local(&channel) {
                            let res = timed(
                                self.config.op_timeout(),
                                "unsubscribe",
                                con.unsubscribe(&channel),
                            )
                            .await;
                            if res.is_err() {
                                return Outcome::Reconnect;
                            }
                        }
                    }
                },
                _ = ping.tick() => {
                    let res: RResult<Value> = timed(
                        self.config.op_timeout(),
                        "ping",
                        redis::cmd("PING").query_async(con),
                    )
                    .await;
                    if res.is_err() {
                        return Outcome::Reconnect;
                    }
                }
            }
        }
    }

    async fn on_subscribe(
        &mut self,
        con: &mut MultiplexedConnection,
        topic: Topic,
        channel: String,
        reply: oneshot::Sender<RResult<broadcast::Receiver<Delivery>>>,
    ) -> RResult<()> {
        if let Some(t) = self.topics.get_mut(&channel) {
            t.refs += 1;
            if reply.send(Ok(t.tx.subscribe())).is_err() {
                // The caller gave up: nobody will release this reference.
                self.release_local(&channel);
            }
            return Ok(());
        }
        let res: RResult<Position> = async {
            // The stream's tail before subscribing: events after it arrive live (or are filled
            // from the stream after a reconnect).
            let pos = self.position(topic.as_str()).await?;
            timed(
                self.config.op_timeout(),
                "subscribe",
                con.subscribe(&channel),
            )
            .await?;
            Ok(pos)
        }
        .await;
        match res {
            Ok(pos) => {
                let (tx, rx) = broadcast::channel(self.config.subscriber_buffer);
                self.topics.insert(
                    channel.clone(),
                    TopicSub {
                        topic,
                        tx,
                        refs: 1,
                        pos,
                    },
                );
                if reply.send(Ok(rx)).is_err() && self.release_local(&channel) {
                    let _ = timed(
                        self.config.op_timeout(),
                        "unsubscribe",
                        con.unsubscribe(&channel),
                    )
                    .await;
                }
                Ok(())
            }
            Err(e) => {
                let temporary = e.is_temporary();
                let _ = reply.send(Err(e));
                if temporary {
                    Err(RedisError::Disconnected)
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn position(&self, topic: &str) -> RResult<Position> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(self.keys.epoch(topic))
            .cmd("XREVRANGE")
            .arg(self.keys.stream(topic))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut con = self.cmd.clone();
        let replies: Vec<Value> = timed(
            self.config.op_timeout(),
            "reading the stream tail",
            pipe.query_async(&mut con),
        )
        .await?;
        let [epoch, tail] = <[Value; 2]>::try_from(replies)
            .map_err(|_| RedisError::Protocol("tail reply of the wrong length"))?;
        let epoch = bulk_string(&epoch)?;
        let last = parse_entries(tail)?.first().map(|e| (e.ms, e.seq));
        Ok(Position { epoch, last })
    }

    fn on_push(&mut self, push: PushInfo) {
        if push.kind != PushKind::Message {
            return;
        }
        let mut data = push.data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
            return;
        };
        let (Some(channel), Some(payload)) = (into_bytes(channel), into_bytes(payload)) else {
            return;
        };
        let Ok(channel) = String::from_utf8(channel) else {
            return;
        };
        if channel == self.probe_channel {
            if let Ok(token) = std::str::from_utf8(&payload)
                && let Some(tx) = lock(&self.probes).remove(token)
            {
                let _ = tx.send(());
            }
            return;
        }
        let Some(t) = self.topics.get_mut(&channel) else {
            return;
        };
        match parse_message(&payload) {
            Some((epoch, ms, seq, event, data)) => t.deliver(&epoch, ms, seq, event, data),
            None => {
                tracing::warn!(channel, "malformed message on a redis channel");
                let _ = t.tx.send(Delivery::Gap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = make_id("00ab", 1700, 3).expect("id");
        assert_eq!(id.as_str(), "00ab-1700-3");
        let p = ParsedId::parse(id.as_str()).expect("parse");
        assert_eq!((p.epoch.as_str(), p.ms, p.seq), ("00ab", 1700, 3));
        for bad in [
            "0-0", "zzz", "a-1", "a-1-2-3", "a-+1-2", "a--1", "-1-2", "a.b-1-2",
        ] {
            assert!(ParsedId::parse(bad).is_none(), "{bad}");
        }
        assert!(ParsedId::parse("a-99999999999999999999999-1").is_none());
    }

    #[test]
    fn messages_parse_binary_data() {
        let mut m = b"abc\n12-3\nmessage\n".to_vec();
        m.extend_from_slice(b"x\ny\r\0\xff");
        let (epoch, ms, seq, event, data) = parse_message(&m).expect("parse");
        assert_eq!((epoch.as_str(), ms, seq), ("abc", 12, 3));
        assert_eq!(event, EventName::MESSAGE);
        assert_eq!(&data[..], b"x\ny\r\0\xff");
        assert!(parse_message(b"abc\n12-3\nreset\n").is_none());
        assert!(parse_message(b"abc\n12-3").is_none());
        assert!(parse_message(b"a-c\n12-3\nm\n").is_none());
    }

    #[test]
    fn debug_hides_password() {
        let c = RedisConfig::new("redis://user:secret@localhost:6379/2").expect("config");
        let s = format!("{c:?}");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("<hidden>"));
    }

    #[test]
    fn bad_url_not_echoed() {
        let err = RedisConfig::new("nope://user:secret@").expect_err("bad url");
        assert!(!err.to_string().contains("secret"));
    }
}
