//! [`RedisBrokerBuilder`]: the settings of a [`RedisBroker`], each setter with its default.

use std::fmt;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo};
use ssehub_core::{Result, Topic};

use crate::RedisBroker;
use crate::error::config_error;
use crate::target::{Target, parse_cluster_url};

/// Builds a [`RedisBroker`]; every setter documents its default, [`build`](Self::build)
/// connects.
///
/// A server that stops answering is noticed by the subscriber's ping within `ping_interval`
/// plus the connect and response timeouts (5 + 2 + 5 s by default); the subscriber then
/// reconnects and fills what it missed from the streams.
///
/// `Debug` never shows the password of the URL.
#[derive(Clone)]
#[must_use]
pub struct RedisBrokerBuilder {
    /// `None` when the URL did not parse; [`build`](Self::build) says so.
    pub(crate) target: Option<Target>,
    pub(crate) prefix: String,
    pub(crate) history: usize,
    pub(crate) max_payload: usize,
    pub(crate) history_ttl: Duration,
    pub(crate) idempotency_window: Duration,
    pub(crate) replica_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) health_timeout: Duration,
    pub(crate) subscriber_buffer: usize,
    pub(crate) push_buffer: usize,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) ping_interval: Duration,
}

impl fmt::Debug for RedisBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RedisBrokerBuilder");
        if let Some(Target::Cluster(nodes)) = &self.target {
            d.field("cluster_nodes", &nodes.len());
        }
        match self.target.as_ref().and_then(Target::first) {
            Some(info) => {
                let redis = info.redis_settings();
                let password = if redis.password().is_some() {
                    "<hidden>"
                } else {
                    "none"
                };
                d.field("addr", &format_args!("{}", info.addr()))
                    .field("db", &redis.db())
                    .field("username", &redis.username())
                    .field("password", &format_args!("{password}"))
            }
            None => d.field("url", &format_args!("<invalid>")),
        };
        d.field("prefix", &self.prefix)
            .field("history", &self.history)
            .field("max_payload", &self.max_payload)
            .field("history_ttl", &self.history_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("health_timeout", &self.health_timeout)
            .field("subscriber_buffer", &self.subscriber_buffer)
            .field("push_buffer", &self.push_buffer)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

impl RedisBrokerBuilder {
    /// Settings for the server at `url` (`redis://[user:password@]host:port[/db]`; `rediss://…`
    /// needs a TLS feature of [`redis`]), or for a **Redis Cluster** reached through any of its
    /// nodes (`redis+cluster://[user:password@]host:port[,host:port…]`: the rest of the cluster is
    /// discovered; live messages use sharded pub/sub, see the crate docs), every other setting
    /// at its default. An invalid URL is refused by [`build`](Self::build) without echoing it (it
    /// may hold a password).
    pub fn new(url: &str) -> Self {
        let target = match parse_cluster_url(url) {
            Some(nodes) => nodes.map(Target::Cluster),
            None => url.into_connection_info().ok().map(Target::Server),
        };
        Self::with_target(target)
    }

    /// Settings for an already-built [`redis::ConnectionInfo`] of one server.
    pub fn from_connection_info(info: ConnectionInfo) -> Self {
        Self::with_target(Some(Target::Server(info)))
    }

    /// Settings for a Redis Cluster reached through any of `nodes`.
    pub fn from_cluster_nodes(nodes: Vec<ConnectionInfo>) -> Self {
        Self::with_target(Some(Target::Cluster(nodes)).filter(|t| t.first().is_some()))
    }

    /// Whether this is a Redis Cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Some(Target::Cluster(_)))
    }

    fn with_target(target: Option<Target>) -> Self {
        RedisBrokerBuilder {
            target,
            prefix: "ssehub".to_owned(),
            history: 1000,
            max_payload: 1024 * 1024,
            history_ttl: Duration::from_secs(24 * 3600),
            idempotency_window: ssehub_core::DEFAULT_IDEMPOTENCY_WINDOW,
            replica_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            subscriber_buffer: 4096,
            push_buffer: 16_384,
            reconnect_max_delay: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
        }
    }

    /// Prefix of every Redis key and channel this broker uses. Default: `ssehub`. Brokers with
    /// different prefixes share nothing. Each `:`-separated part must be a valid key part
    /// (letters, digits, `- _ . ~ @ + =`); checked by [`build`](Self::build).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Events kept per topic for replay (`XADD … MAXLEN ~ history`; Redis may keep somewhat
    /// more). Default: 1,000. At least 1.
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// How long a topic's history (its stream and epoch keys) lives after its last publish, so
    /// abandoned topics do not hold Redis memory forever. Default: 24 hours. Zero keeps them
    /// forever.
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// How long a publish's idempotency key is remembered (a key `{topic}:idem:<key>` holding
    /// the first id, set in the publish script, in the topic's slot): a repeat within it, from
    /// any node, stores nothing and answers the first id. Default: 2 minutes. Zero remembers
    /// none.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// On a master that has replicas (one server or a cluster's shard), how long a publish
    /// waits for one of them to hold its events (`WAIT 1`) before it fails with a temporary
    /// error (the events may be stored on the master only; retrying with the same idempotency
    /// keys stores them once). Redis replicates asynchronously: without the wait, a master that
    /// dies, or is paused past the cluster's node timeout and replaced, after answering loses
    /// what its replica had not copied, silently. A master without replicas is not waited on.
    /// Default: 1 s. Zero: never wait (faster publishes; a failover may lose the last
    /// acknowledged events).
    pub fn replica_timeout(mut self, timeout: Duration) -> Self {
        self.replica_timeout = timeout;
        self
    }

    /// Messages the subscriber connection may hold for the broker's subscriber task while that
    /// task is busy (subscribing a topic, filling after a reconnect), over all topics. When a
    /// burst overflows it, the connection is replaced and every topic is filled from its stream,
    /// as after any reconnect: nothing is lost (a topic whose history no longer reaches back
    /// gets a gap, as always), and memory stays bounded by this many messages. Default: 16,384.
    /// At least 1.
    pub fn push_buffer(mut self, messages: usize) -> Self {
        self.push_buffer = messages.max(1);
        self
    }

    ssehub_core::broker_builder_setters! {
        max_payload = "1 MiB",
        subscriber_buffer = "4,096",
        connect_timeout = "2 seconds",
        response_timeout = "5 seconds",
        health_timeout = "2 seconds",
        reconnect_max_delay = "2 seconds",
        ping_interval = "5 seconds",
    }

    /// Connect: check the settings, open the command connection and the subscriber connection.
    pub async fn build(self) -> Result<RedisBroker> {
        if self.target.is_none() {
            return Err(config_error(
                "invalid redis url (not echoed, it may hold a password)",
            ));
        }
        if Topic::new(&self.prefix).is_err() {
            return Err(config_error(
                "invalid prefix: use letters, digits and - _ . ~ @ + = in `:`-separated parts",
            ));
        }
        RedisBroker::open(self).await
    }

    /// The deadline of one operation: connecting plus answering.
    pub(crate) fn op_timeout(&self) -> Duration {
        self.connect_timeout + self.response_timeout
    }
}
