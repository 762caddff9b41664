//! Redis broker for ssehub: fan-out across servers over pub/sub, resume from stream history.
//!
//! [`RedisBroker`] publishes each event with one Lua script that appends it to a per-topic
//! stream (trimmed to `MAXLEN ~ history`) and publishes it to the topic's pub/sub channel, so
//! every node sees the same [`EventId`]. Each broker keeps **one** subscriber connection,
//! subscribes per topic on demand, fans events out locally to every subscription of the topic,
//! and unsubscribes when the topic's last subscription is dropped. When the subscriber connection
//! drops, it reconnects with backoff, re-subscribes, and fills what it missed from the streams
//! (a page at a time, several topics at once), or yields
//! [`Delivery::Gap`](ssehub_core::Delivery::Gap) when that is impossible (history trimmed, Redis
//! restarted without persistence). Messages wait for the subscriber task in a bounded queue
//! ([`RedisBrokerBuilder::push_buffer`]); a burst that overflows it is handled the same way: the
//! connection is replaced and the missed messages are filled from the streams.
//!
//! Ids are `<epoch>-<ms>-<seq>`: the epoch is a random value stored per topic the first time the
//! topic is published to, so an id from before a Redis flush or restart without persistence
//! answers a gap, never a wrong replay.
//!
//! Keys (with the default prefix `ssehub`) are `ssehub:{topic}:stream` and
//! `ssehub:{topic}:epoch`; the topic's channel is `ssehub:{topic}:events`, and the nodes'
//! signals (presence) travel on `ssehub:signals`. Topics cannot contain braces, colons inside a
//! part, or glob characters, so one topic never reaches another's keys.
//!
//! # Redis Cluster
//!
//! `RedisBroker::builder("redis+cluster://host:port[,host:port…]")` (any node; the rest is
//! discovered) runs on a Redis Cluster (Redis 7+). Every key and the channel of a topic share
//! the `{topic}` hash tag, so one topic lives in one slot: the publish script runs on that
//! slot's master and publishes with `SPUBLISH`, and the subscriber uses `SSUBSCRIBE`, so a
//! message travels only to the shard that owns the topic and to the nodes subscribed there
//! (plain `PUBLISH` in a cluster is broadcast to every node). Replays and gap fills read that
//! shard. `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN` and a read-only replica are temporary errors
//! (the client follows redirects and retries first); when a master dies, the command connection
//! is rebuilt from a live node's slot map, and the subscriber's connection (told by the dead
//! node's disconnection) reconnects, subscribes again and fills what it missed from the streams,
//! or sends a gap when the promoted replica had not received it. Presence signals and health
//! probes stay on plain pub/sub. [`RedisConnection`] is the same command connection for the
//! application's own data.
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
//! let broker = RedisBroker::builder("redis://127.0.0.1:6379")
//!     .prefix("myapp")
//!     .history(500)
//!     .build()
//!     .await?;
//! let topic = Topic::new("discussion:1:comments")?;
//! let mut sub = broker.subscribe(&topic).await?;
//! let id = broker.publish(&topic, Message::new("hello")).await?;
//! if let Some(Delivery::Event(env)) = sub.next().await {
//!     assert_eq!(env.id, id);
//! }
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! `builder` (settings), `history` (the publish script, replay and gap fill: one read),
//! `subscriber` (the actor owning the pub/sub connection), `pushes` (the bounded queue of its
//! messages), `fill` (each topic's position, and the paged, concurrent fill after a reconnect),
//! `reply` (parsing what Redis answers), `keys`, `error`. Ids, the local fan-out,
//! backoff and the payload limit come from [`ssehub_core::backend`].

mod builder;
mod connection;
mod error;
mod fill;
mod history;
mod keys;
mod pushes;
mod replicas;
mod reply;
mod subscriber;
mod target;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Client, ProtocolVersion, Value};
use ssehub_core::backend::{
    StreamPosition, SubscriptionCount, check_payload, lock, node_id, signal_stream,
};
use ssehub_core::{
    Broker, Capabilities, EventId, GapCause, Message, Replay, Result, Signals, Subscription, Topic,
};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use builder::RedisBrokerBuilder;
pub use redis;

use crate::error::{RResult, RedisError, timed};

/// The most events [`RedisBroker`]'s `publish_many` appends in one script.
pub const MAX_BATCH_EVENTS: usize = 256;
/// The most payload bytes `publish_many` appends in one script (a larger event goes alone).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
pub use crate::connection::RedisConnection;
use crate::history::History;
use crate::keys::Keys;
use crate::subscriber::{Actor, Command, Connect, NodeChannels, Probes};
use crate::target::Target;

/// A [`Broker`] over Redis pub/sub and streams. Cheap to clone (clones share connections).
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisBrokerBuilder,
    node_id: String,
    history: History,
    actor: mpsc::UnboundedSender<Command>,
    subscriptions: SubscriptionCount,
    node: NodeChannels,
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

impl RedisBroker {
    /// Connect to `url` with the default settings (see [`RedisBrokerBuilder`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// Start configuring a broker for `url`; [`RedisBrokerBuilder::build`] connects.
    pub fn builder(url: &str) -> RedisBrokerBuilder {
        RedisBrokerBuilder::new(url)
    }

    /// Open the connections of a checked configuration.
    async fn open(config: RedisBrokerBuilder) -> Result<Self> {
        let Some(target) = config.target.clone() else {
            return Err(error::config_error("invalid redis url"));
        };
        let keys = Keys {
            prefix: config.prefix.clone(),
        };
        let commands = RedisConnection::connect(&target, &config).await?;
        let subscriber = match &target {
            Target::Server(info) => {
                // The subscriber speaks RESP3, so pub/sub messages arrive as pushes on a
                // connection that can still send commands (SUBSCRIBE, PING).
                let resp3 = info.clone().set_redis_settings(
                    info.redis_settings()
                        .clone()
                        .set_protocol(ProtocolVersion::RESP3),
                );
                let sub_client =
                    Client::open(resp3).map_err(RedisError::redis("opening client"))?;
                Connect::Server(sub_client)
            }
            Target::Cluster(nodes) => Connect::Cluster(nodes.clone()),
        };
        let history = History::new(commands, keys.clone(), &config);
        let node_id = node_id();
        let node = NodeChannels {
            probe_channel: keys.probe_channel(&node_id),
            probes: Probes::default(),
            signal_channel: keys.signal_channel(),
            signals: broadcast::channel(1024).0,
        };
        let subscriptions = SubscriptionCount::new();
        let (mut actor, actor_tx) = Actor::new(
            config.clone(),
            history.clone(),
            subscriber,
            node.clone(),
            subscriptions.clone(),
        );
        let first = actor.open().await?;
        tokio::spawn(actor.run(first));

        Ok(RedisBroker {
            inner: Arc::new(Inner {
                config,
                node_id,
                history,
                actor: actor_tx,
                subscriptions,
                node,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &RedisBrokerBuilder {
        &self.inner.config
    }

    /// The broker's command connection, for the application's own data in the same Redis (or
    /// cluster): cheap to clone, reconnecting, following the cluster's topology.
    #[must_use]
    pub fn connection(&self) -> RedisConnection {
        self.inner.history.con.clone()
    }

    /// This broker's random node id (used for presence and health probes).
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    async fn subscribe_inner(&self, topic: &Topic) -> RResult<Subscription> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            topic: topic.clone(),
            reply,
        };
        self.inner
            .actor
            .send(command)
            .map_err(|_| RedisError::Disconnected)?;
        match tokio::time::timeout(self.inner.config.op_timeout(), answer).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(RedisError::Disconnected),
            Err(_) => Err(RedisError::Timeout("subscribe")),
        }
    }

    /// Publish a token to this node's probe channel and wait for the subscriber to see it.
    async fn health_inner(&self) -> RResult<()> {
        let token = node_id();
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.node.probes).insert(token.clone(), tx);
        let res = async {
            let mut con = self.inner.history.con.clone();
            let channel = self.inner.history.keys.probe_channel(&self.inner.node_id);
            let _: Value = timed(
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
        lock(&self.inner.node.probes).remove(&token);
        res
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        check_payload(&message, self.inner.config.max_payload)?;
        let mut ids = self.inner.history.append(topic, &[message]).await?;
        ids.pop()
            .ok_or_else(|| RedisError::Protocol("publish: no id").into())
    }

    /// The batch is appended in scripts of at most [`MAX_BATCH_EVENTS`] events and
    /// [`MAX_BATCH_BYTES`] of payload, each atomic; one round trip per script.
    async fn publish_many(&self, topic: &Topic, messages: Vec<Message>) -> Result<Vec<EventId>> {
        for message in &messages {
            check_payload(message, self.inner.config.max_payload)?;
        }
        let mut ids = Vec::with_capacity(messages.len());
        for batch in ssehub_core::backend::batches(&messages, MAX_BATCH_EVENTS, MAX_BATCH_BYTES) {
            match self.inner.history.append(topic, batch).await {
                Ok(more) => ids.extend(more),
                Err(e) => return Err(ssehub_core::backend::partly_published(ids, e.into())),
            }
        }
        Ok(ids)
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription> {
        Ok(self.subscribe_inner(topic).await?)
    }

    async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> Result<Replay> {
        let Some(after) = StreamPosition::from_event_id(after) else {
            return Ok(Replay::Gap(GapCause::Unknown));
        };
        Ok(self.inner.history.replay(topic, &after, limit).await?)
    }

    async fn tail(&self, topic: &Topic) -> Result<Option<EventId>> {
        let (epoch, last) = self.inner.history.tail(topic.as_str()).await?;
        Ok(epoch
            .zip(last)
            .and_then(|(epoch, offset)| StreamPosition::new(&epoch, offset))
            .map(|p| p.to_event_id()))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_history(Some(self.inner.config.history))
            .with_presence(true)
            .with_max_payload(self.inner.config.max_payload)
            .with_idempotency(Some(self.inner.config.idempotency_window).filter(|w| !w.is_zero()))
    }

    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
        StreamPosition::order_ids(a, b)
    }

    fn active_subscriptions(&self) -> usize {
        self.inner.subscriptions.get()
    }

    async fn health(&self) -> Result<()> {
        Ok(self.health_inner().await?)
    }

    async fn signal(&self, payload: Bytes) -> Result<()> {
        let mut con = self.inner.history.con.clone();
        let _: Value = timed(
            self.inner.config.op_timeout(),
            "signal",
            redis::cmd("PUBLISH")
                .arg(&self.inner.node.signal_channel)
                .arg(&payload[..])
                .query_async(&mut con),
        )
        .await?;
        Ok(())
    }

    async fn signals(&self) -> Result<Signals> {
        Ok(signal_stream(self.inner.node.signals.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_password() {
        let c = RedisBroker::builder("redis://user:secret@localhost:6379/2");
        let s = format!("{c:?}");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("<hidden>"));
    }

    #[tokio::test]
    async fn bad_url_not_echoed() {
        let err = RedisBroker::builder("nope://user:secret@")
            .build()
            .await
            .expect_err("bad url");
        assert!(!err.to_string().contains("secret"));
    }
}

// The README's Rust code blocks (the crate's page on crates.io) compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
