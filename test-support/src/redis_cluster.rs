//! A local Redis Cluster for tests: `redis-server --cluster-enabled yes` on free loopback ports,
//! joined with `redis-cli --cluster create`.
//!
//! [`redis_cluster_url`] answers `SSEHUB_REDIS_CLUSTER_URL` when set, else the URL of a cluster
//! of this test process (3 masters, started on first use), else skips. Fault tests start their
//! own [`RedisCluster`] (with replicas, to kill a master and see one promoted). Only binaries are
//! used (no container fallback: the nodes of a cluster must reach each other at the addresses
//! they announce).
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use ssehub_test_support::redis_cluster::{ClusterOptions, RedisCluster};
//!
//! let cluster = RedisCluster::start(ClusterOptions::new().replicas(1)).await?;
//! let url = cluster.url(); // redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…
//! # let _ = url;
//! # Ok(()) }
//! ```

use std::process::Command;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::redis::{RedisOptions, spec};
use crate::server::exchange;
use crate::server::{Server, Source, Spec};
use crate::which;

/// The variable naming a Redis Cluster someone else runs (`redis+cluster://host:port,…`).
pub const ENV_URL: &str = "SSEHUB_REDIS_CLUSTER_URL";

/// How long the cluster may take to agree on its slots.
const FORM_LIMIT: Duration = Duration::from_secs(30);

/// The cluster URL for ordinary tests: `SSEHUB_REDIS_CLUSTER_URL`, else a cluster of this test
/// process (3 masters), else `None` after [`skip`](crate::skip).
///
/// Tests using it must use unique topic names and must never kill or pause its nodes.
pub async fn redis_cluster_url() -> Option<String> {
    static SHARED: OnceCell<Result<String, String>> = OnceCell::const_new();
    if let Ok(url) = std::env::var(ENV_URL)
        && !url.is_empty()
    {
        return Some(url);
    }
    crate::shared_url(
        &SHARED,
        async || RedisCluster::start(ClusterOptions::new()).await,
        RedisCluster::url,
    )
    .await
}

/// How to start a [`RedisCluster`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ClusterOptions {
    masters: usize,
    replicas: usize,
    persistent: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            masters: 3,
            replicas: 0,
            persistent: false,
        }
    }
}

impl ClusterOptions {
    /// 3 masters, no replicas.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `true`, every node keeps an append-only file fsynced on every write (see
    /// [`RedisOptions::persistent`]), so [`RedisCluster::restart`] keeps the data. Default:
    /// `false`.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Replicas per master (a killed master's replica is promoted). Default: 0.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }
}

/// A Redis Cluster of one test; every node is killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Server>,
}

fn cluster_spec(persistent: bool) -> Spec {
    let mut spec = spec(&RedisOptions::new().persistent(persistent));
    let base = spec.args;
    spec.args = Box::new(move |port, dir| {
        let mut args = base(port, dir);
        args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                // A shard without a master stops only its own slots.
                "--cluster-require-full-coverage",
                "no",
                // Replicas copy their master at once (Redis 7 waits 5 s for more replicas by
                // default), and one is promoted however long its link was down.
                "--repl-diskless-sync-delay",
                "0",
                "--cluster-replica-validity-factor",
                "0",
            ]
            .map(String::from),
        );
        args
    });
    spec
}

impl RedisCluster {
    /// Start the nodes, create the cluster, and wait until every node sees every slot served.
    pub async fn start(options: ClusterOptions) -> Result<Self, String> {
        let (Some(server), Some(cli)) = (which("redis-server"), which("redis-cli")) else {
            return Err(
                "a Redis Cluster needs redis-server and redis-cli on PATH (Debian: redis-server, redis-tools)"
                    .to_owned(),
            );
        };
        let count = options.masters * (1 + options.replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(
                Server::start_from(
                    cluster_spec(options.persistent),
                    Source::Binary(server.clone()),
                )
                .await?,
            );
        }
        let cluster = RedisCluster { nodes };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let replicas = options.replicas.to_string();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(cli)
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", &replicas, "--cluster-yes"])
                .output()
        })
        .await
        .map_err(|e| format!("redis-cli: {e}"))?
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_formed(count).await?;
        Ok(cluster)
    }

    /// Wait until every node says the cluster is `ok` with all slots and `known` nodes, and
    /// every replica's link is up.
    async fn wait_formed(&self, known: usize) -> Result<(), String> {
        self.wait_for("form", move |ports| {
            ports.iter().all(|port| {
                cluster_info(*port).is_some_and(|info| {
                    whole(&info) && info.contains(&format!("cluster_known_nodes:{known}"))
                }) && replica_in_sync(*port)
            })
        })
        .await
    }

    /// Poll `ok` over the nodes' ports (on a blocking thread: it talks to them with std
    /// sockets) until it holds, for at most [`FORM_LIMIT`].
    async fn wait_for(
        &self,
        what: &str,
        ok: impl Fn(&[u16]) -> bool + Clone + Send + 'static,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + FORM_LIMIT;
        loop {
            let (ports, ok) = (self.ports(), ok.clone());
            if tokio::task::spawn_blocking(move || ok(&ports))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("the cluster did not {what} within {FORM_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis+cluster://127.0.0.1:p1,…`: every node (a client needs any one).
    #[must_use]
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes' ports, in start order.
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Server::port).collect()
    }

    /// The ports of the nodes that are masters now (asking each live node for its role).
    #[must_use]
    pub fn masters(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|port| {
                exchange("127.0.0.1", *port, b"ROLE\r\n", |got| got.len() > 16)
                    .is_some_and(|reply| String::from_utf8_lossy(&reply).contains("master"))
            })
            .collect()
    }

    /// The port of the master serving `key`'s slot now, asked of a live node.
    #[must_use]
    pub fn master_of(&self, key: &str) -> Option<u16> {
        for port in self.ports() {
            let ask = format!("CLUSTER KEYSLOT \"{key}\"\r\n");
            let Some(reply) = exchange("127.0.0.1", port, ask.as_bytes(), |got| {
                got.ends_with(b"\r\n")
            }) else {
                continue;
            };
            let reply = String::from_utf8_lossy(&reply);
            let Some(slot) = reply
                .trim()
                .strip_prefix(':')
                .and_then(|n| n.parse::<u16>().ok())
            else {
                continue;
            };
            let nodes = exchange("127.0.0.1", port, b"CLUSTER NODES\r\n", bulk_done)?;
            return master_serving(&String::from_utf8_lossy(&nodes), slot);
        }
        None
    }

    /// Stop every node (SIGTERM) and start them again on the same ports and dirs, as an
    /// operator restarting the cluster does; returns once every slot is served again. Without
    /// [`ClusterOptions::persistent`] the nodes come back empty.
    pub async fn restart(&mut self) -> Result<(), String> {
        for node in &mut self.nodes {
            node.stop();
        }
        for node in &mut self.nodes {
            node.restart().await?;
        }
        self.wait_healed().await
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }

    /// Start the node on `port` again (after [`kill`](Self::kill), or killing it first), on
    /// the same port and dir: it rejoins the cluster from its `nodes.conf` (as a replica when
    /// another node took over its slots meanwhile). Returns once it answers `PING`; call
    /// [`wait_healed`](Self::wait_healed) to wait for the cluster.
    pub async fn restart_node(&mut self, port: u16) -> Result<(), String> {
        match self.nodes.iter_mut().find(|n| n.port() == port) {
            Some(node) => node.restart().await,
            None => Err(format!("no cluster node on port {port}")),
        }
    }

    /// Freeze the node on `port` (SIGSTOP): its sockets stay open and nothing answers; past
    /// the node timeout (1 s) the others mark it failed and, with replicas, promote one.
    /// `false` when that failed.
    #[must_use]
    pub fn freeze_node(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .is_some_and(Server::freeze)
    }

    /// Let a frozen node run again (SIGCONT). `false` when that failed.
    #[must_use]
    pub fn thaw_node(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .is_some_and(Server::thaw)
    }

    /// The ports of the live nodes that are replicas now (asking each for its role).
    #[must_use]
    pub fn replica_ports(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|port| {
                exchange("127.0.0.1", *port, b"ROLE\r\n", |got| got.len() > 16)
                    .is_some_and(|reply| String::from_utf8_lossy(&reply).contains("slave"))
            })
            .collect()
    }

    /// Ask the replica on `port` to take over from its master (`CLUSTER FAILOVER`, the
    /// coordinated manual failover: the master stops writes until the replica caught up, so
    /// nothing acknowledged is lost). `true` when the node answered `+OK`; the switch itself
    /// completes a moment later (see [`wait_healed`](Self::wait_healed)).
    #[must_use]
    pub fn failover(&self, port: u16) -> bool {
        exchange("127.0.0.1", port, b"CLUSTER FAILOVER\r\n", |got| {
            got.ends_with(b"\r\n")
        })
        .is_some_and(|reply| reply.starts_with(b"+OK"))
    }

    /// Wait until every live node sees every slot served again (after a failover).
    pub async fn wait_healed(&self) -> Result<(), String> {
        self.wait_for("heal", |ports| {
            let live: Vec<String> = ports.iter().filter_map(|p| cluster_info(*p)).collect();
            !live.is_empty() && live.iter().all(|i| whole(i))
        })
        .await
    }
}

/// In a `CLUSTER NODES` listing, the port of the connected master whose slot ranges hold `slot`.
fn master_serving(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") || fields.get(7) != Some(&"connected") {
            return None;
        }
        let serves = fields[8..].iter().any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        if !serves {
            return None;
        }
        let addr = fields.get(1)?.split('@').next()?;
        addr.rsplit(':').next()?.parse().ok()
    })
}

/// Whether a node's `CLUSTER INFO` says the cluster is up with every slot served.
fn whole(info: &str) -> bool {
    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
}

/// Whether the node on `port` is a master, or a replica whose link to its master is up.
fn replica_in_sync(port: u16) -> bool {
    exchange("127.0.0.1", port, b"INFO replication\r\n", bulk_done).is_some_and(|reply| {
        let info = String::from_utf8_lossy(&reply);
        info.contains("role:master") || info.contains("master_link_status:up")
    })
}

/// `CLUSTER INFO` of the node on `port`, or `None` when it does not answer.
fn cluster_info(port: u16) -> Option<String> {
    let reply = exchange("127.0.0.1", port, b"CLUSTER INFO\r\n", bulk_done)?;
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether `got` holds a whole RESP bulk string (or an error line).
fn bulk_done(got: &[u8]) -> bool {
    let Some(end) = got.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if got.first() != Some(&b'$') {
        return true; // an error or another one-line reply
    }
    let Ok(len) = std::str::from_utf8(&got[1..end])
        .unwrap_or("")
        .parse::<usize>()
    else {
        return true;
    };
    got.len() >= end + 2 + len + 2
}
