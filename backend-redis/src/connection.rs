//! The two ways to reach Redis, behind one interface: one server, or a Redis Cluster.
//!
//! On a cluster, commands go through redis' cluster client (it follows `MOVED` and `ASK`,
//! refreshes its slot map and retries), the publish script runs on the shard of the topic's
//! slot (every key of a topic shares the `{topic}` hash tag), and live messages use **sharded
//! pub/sub**: `SPUBLISH` from the script, `SSUBSCRIBE` by the subscriber, so a message goes to
//! the shard that owns the topic's channel and to the nodes subscribed there, not to every node
//! of the cluster as a plain `PUBLISH` would. The node's own channels (health probes, presence
//! signals) stay on plain pub/sub: they are few and every node wants the signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, Value};
use ssehub_core::backend::lock;

use crate::pushes::PushSender;
use crate::target::Target;

/// What a [`RedisConnection`] is connected to.
#[derive(Clone)]
pub(crate) enum Commands {
    Server(ConnectionManager),
    Cluster(Arc<ClusterCommands>),
}

/// A command connection to one Redis server or a Redis Cluster, as a [`RedisBroker`] uses it:
/// cheap to clone, reconnecting, and on a cluster following `MOVED`/`ASK` and failovers. Use it
/// with any [`redis`] command (`query_async(&mut con)`).
///
/// [`RedisBroker`]: crate::RedisBroker
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use ssehub_redis::RedisConnection;
/// let mut con = RedisConnection::open("redis+cluster://127.0.0.1:7000").await?;
/// let n: u64 = ssehub_redis::redis::cmd("INCR")
///     .arg("{app}:count")
///     .query_async(&mut con)
///     .await?;
/// # let _ = n; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnection(pub(crate) Commands);

impl RedisConnection {
    /// Connect to `target` with `config`'s timeouts.
    pub(crate) async fn connect(
        target: &Target,
        config: &crate::RedisBrokerBuilder,
    ) -> crate::error::RResult<RedisConnection> {
        use crate::error::{RedisError, timed};
        match target {
            Target::Server(info) => {
                let client = redis::Client::open(info.clone())
                    .map_err(RedisError::redis("opening client"))?;
                let cm_config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(std::time::Duration::from_millis(50))
                    .set_max_delay(std::time::Duration::from_millis(500));
                let cm = timed(
                    config.op_timeout(),
                    "connecting",
                    client.get_connection_manager_with_config(cm_config),
                )
                .await?;
                Ok(RedisConnection(Commands::Server(cm)))
            }
            Target::Cluster(nodes) => Ok(RedisConnection(Commands::Cluster(
                ClusterCommands::connect(nodes.clone(), config.clone()).await?,
            ))),
        }
    }

    /// Connect to `url` (any URL [`RedisBrokerBuilder::new`](crate::RedisBrokerBuilder::new)
    /// takes, `redis+cluster://…` included) with the default timeouts.
    pub async fn open(url: &str) -> ssehub_core::Result<Self> {
        let config = crate::RedisBrokerBuilder::new(url);
        let Some(target) = config.target.clone() else {
            return Err(crate::error::config_error(
                "invalid redis url (not echoed, it may hold a password)",
            ));
        };
        Ok(Self::connect(&target, &config).await?)
    }
}

impl RedisConnection {
    /// Whether this is a Redis Cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.0, Commands::Cluster(_))
    }

    /// Run `cmd` on the master that holds `key` (a keyless command such as `WAIT` goes where
    /// the key's writes went): on one server, the connection itself.
    pub(crate) async fn on_master_of(&self, key: &str, cmd: Cmd) -> redis::RedisResult<Value> {
        match &self.0 {
            Commands::Server(c) => cmd.query_async(&mut c.clone()).await,
            Commands::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::new(crate::keys::slot_of(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let result = c.get().route_command(cmd, routing).await;
                if let Err(e) = &result {
                    c.failed(e);
                }
                result
            }
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Commands::Server(_) => "server",
            Commands::Cluster(_) => "cluster",
        };
        f.debug_tuple("RedisConnection").field(&kind).finish()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Commands::Server(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => Box::pin(async move {
                let result = c.get().req_packed_command(cmd).await;
                if let Err(e) = &result {
                    c.failed(e);
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Commands::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(c) => Box::pin(async move {
                let result = c.get().req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &result {
                    c.failed(e);
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Commands::Server(c) => c.get_db(),
            Commands::Cluster(_) => 0,
        }
    }
}

/// The command connection to a cluster, replaced when its nodes stop answering.
///
/// redis' cluster client follows `MOVED` and `ASK`, but after a master dies it keeps
/// reconnecting to that address (an I/O error does not refresh its slot map), so a failover
/// would go unnoticed until something answered `MOVED`. On such an error the connection is
/// built again from the configured nodes (one rebuild at a time), which reads the slot map of a
/// live node.
pub(crate) struct ClusterCommands {
    current: Mutex<ClusterConnection>,
    nodes: Vec<ConnectionInfo>,
    config: crate::RedisBrokerBuilder,
    rebuilding: AtomicBool,
}

impl ClusterCommands {
    pub(crate) async fn connect(
        nodes: Vec<ConnectionInfo>,
        config: crate::RedisBrokerBuilder,
    ) -> crate::error::RResult<Arc<Self>> {
        let con = Self::open(&nodes, &config).await?;
        Ok(Arc::new(ClusterCommands {
            current: Mutex::new(con),
            nodes,
            config,
            rebuilding: AtomicBool::new(false),
        }))
    }

    async fn open(
        nodes: &[ConnectionInfo],
        config: &crate::RedisBrokerBuilder,
    ) -> crate::error::RResult<ClusterConnection> {
        use crate::error::{RedisError, timed};
        let client = cluster_client(nodes, config, None)
            .map_err(RedisError::redis("opening cluster client"))?;
        timed(
            config.op_timeout(),
            "connecting to the cluster",
            client.get_async_connection(),
        )
        .await
    }

    fn get(&self) -> ClusterConnection {
        lock(&self.current).clone()
    }

    /// After a failed command: rebuild when the error says a node is gone or moved.
    fn failed(self: &Arc<Self>, error: &redis::RedisError) {
        let topology = crate::error::is_outage(error);
        if !topology || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match Self::open(&this.nodes, &this.config).await {
                Ok(con) => {
                    tracing::info!("redis cluster: command connection rebuilt after a node failed");
                    *lock(&this.current) = con;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "redis cluster: rebuilding the command connection failed");
                }
            }
            // Not at once again: a cluster in failover answers errors for a while.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            this.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// A cluster client with the broker's timeouts; RESP3 with `pushes` when given.
pub(crate) fn cluster_client(
    nodes: &[ConnectionInfo],
    config: &crate::RedisBrokerBuilder,
    pushes: Option<PushSender>,
) -> redis::RedisResult<redis::cluster::ClusterClient> {
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(pushes) = pushes {
        builder = builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(pushes);
    }
    builder.build()
}

/// The subscriber's connection: RESP3, its messages arriving as pushes.
pub(crate) enum Subscriber {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// Topic channels subscribed at once on a cluster (each `SSUBSCRIBE` goes to its shard).
const CONCURRENT_SUBSCRIBES: usize = 64;

/// Whether `c` holds a connection to every master that serves slots: the masters `CLUSTER
/// SLOTS` names against those a `PING` to all masters reached (redis-rs skips the masters it
/// has no connection to).
async fn all_masters_connected(c: &mut ClusterConnection) -> redis::RedisResult<bool> {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
    let masters = cluster_slots_masters(&slots);
    let pings = c
        .route_command(
            redis::cmd("PING"),
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
        )
        .await?;
    let reached = match pings {
        Value::Map(m) => m.len(),
        _ => 1,
    };
    Ok(reached >= masters)
}

/// The distinct masters (address and port) of a `CLUSTER SLOTS` reply: each entry is `[start,
/// end, [ip, port, id, ..], replicas..]`.
fn cluster_slots_masters(slots: &Value) -> usize {
    let Value::Array(ranges) = slots else {
        return 0;
    };
    let mut seen = std::collections::HashSet::new();
    for range in ranges {
        if let Value::Array(parts) = range
            && let Some(Value::Array(master)) = parts.get(2)
        {
            seen.insert(format!("{:?}/{:?}", master.first(), master.get(1)));
        }
    }
    seen.len()
}

impl Subscriber {
    /// Subscribe the topics' channels (sharded on a cluster).
    pub(crate) async fn subscribe_topics(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Subscriber::Server(c) => c.subscribe(channels).await,
            Subscriber::Cluster(c) => {
                use futures_util::StreamExt;
                // redis-rs 1.8 answers a command for a master it has no connection to by
                // sending it elsewhere and following the `MOVED`: each such request opens a
                // connection of its own to that master and keeps it only until its reply, but
                // the last one to finish replaces the others in the client's map. Concurrent
                // `SSUBSCRIBE`s to that master are all confirmed, and all but one of their
                // connections then close without a word, taking their subscriptions with them
                // (found after a cluster restart: a fresh client built while a master was still
                // down). So they go one at a time unless every master is connected already.
                let at_once = if channels.len() < 2 || all_masters_connected(c).await? {
                    CONCURRENT_SUBSCRIBES
                } else {
                    tracing::debug!(
                        "redis cluster: a master is not connected yet, subscribing one topic at a time"
                    );
                    1
                };
                // One command per channel: channels of different slots cannot share one.
                let calls: Vec<_> = channels
                    .iter()
                    .map(|channel| {
                        let (mut c, channel) = (c.clone(), channel.clone());
                        async move { c.ssubscribe(channel).await }
                    })
                    .collect();
                let mut results = futures_util::stream::iter(calls).buffer_unordered(at_once);
                while let Some(result) = results.next().await {
                    result?;
                }
                Ok(())
            }
        }
    }

    /// Unsubscribe one topic's channel.
    pub(crate) async fn unsubscribe_topic(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Subscriber::Server(c) => c.unsubscribe(channel).await,
            Subscriber::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    /// Subscribe the node's own channels (plain pub/sub everywhere).
    pub(crate) async fn subscribe_node(&mut self, channels: &[&String]) -> redis::RedisResult<()> {
        match self {
            Subscriber::Server(c) => c.subscribe(channels).await,
            Subscriber::Cluster(c) => c.subscribe(channels).await,
        }
    }

    /// A round trip (to every primary, on a cluster).
    pub(crate) async fn ping(&mut self) -> redis::RedisResult<()> {
        let cmd = redis::cmd("PING");
        let _: Value = match self {
            Subscriber::Server(c) => cmd.query_async(c).await?,
            Subscriber::Cluster(c) => cmd.query_async(c).await?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redis::IntoConnectionInfo as _;
    use ssehub_test_support::redis_cluster::{ClusterOptions, RedisCluster};

    use super::*;

    /// After a cluster restart a fresh subscriber connection can be built while one master is
    /// still down; once it is back, subscribing 16 of its topics at once must leave every one
    /// subscribed on the connection that carries the messages (redis-rs 1.8 kept one of the
    /// connections its concurrent redirects opened and closed the others, subscriptions and all,
    /// with every `SSUBSCRIBE` confirmed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topics_of_a_master_that_came_back_are_all_subscribed() {
        let Some(mut cluster) = ssehub_test_support::or_skip(
            RedisCluster::start(ClusterOptions::new().persistent(true)).await,
        ) else {
            return;
        };
        let masters = cluster.masters();
        let back = masters[1];
        let channels: Vec<String> = (0..)
            .map(|i| format!("{{t{i}}}:live"))
            .filter(|c| cluster.master_of(c) == Some(back))
            .take(16)
            .collect();
        cluster.kill(back);
        let nodes: Vec<ConnectionInfo> = cluster
            .ports()
            .iter()
            .map(|p| {
                format!("redis://127.0.0.1:{p}")
                    .into_connection_info()
                    .unwrap()
            })
            .collect();
        let config = crate::RedisBrokerBuilder::from_cluster_nodes(nodes.clone());
        let (tx, mut pushes) = crate::pushes::channel(4096);
        let client = cluster_client(&nodes, &config, Some(tx)).unwrap();
        let con = client
            .get_async_connection()
            .await
            .expect("a cluster connection with one master down");
        cluster.restart_node(back).await.unwrap();
        let mut sub = Subscriber::Cluster(con);
        sub.subscribe_topics(&channels).await.expect("subscribe");

        let mut node = redis::Client::open(format!("redis://127.0.0.1:{back}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channels)
            .query_async(&mut node)
            .await
            .unwrap();
        let held = counts.iter().filter(|(_, n)| *n > 0).count();
        for c in &channels {
            let _: i64 = redis::cmd("SPUBLISH")
                .arg(c)
                .arg("x")
                .query_async(&mut node)
                .await
                .unwrap();
        }
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while got < channels.len() {
            match tokio::time::timeout_at(deadline, pushes.recv()).await {
                Ok(Some(crate::pushes::Push::Info(p))) if p.kind == redis::PushKind::SMessage => {
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        assert_eq!(
            (held, got),
            (channels.len(), channels.len()),
            "subscriptions the master holds, messages received, of {} topics",
            channels.len()
        );
    }
}
