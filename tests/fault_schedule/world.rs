//! The system under test: a broker of our own, 2 demo processes (1 on memory) each behind a
//! proxy for its clients (and, on one Redis or NATS server, behind a proxy to the broker), and
//! the faults done to them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::proxy::TcpProxy;
use ssehub_test_support::redis::{RedisOptions, RedisServer};
use ssehub_test_support::redis_cluster::{ClusterOptions, RedisCluster};
use ssehub_test_support::server::BrokerServer;

use super::schedule::{Backend, Fault, FaultKind, Link};

/// The broker of one schedule.
pub(crate) enum Broker {
    Memory,
    Redis(RedisServer),
    Nats(NatsServer),
    Cluster(RedisCluster),
}

impl Broker {
    /// Start the broker `backend` needs; `Err` says why it cannot run (a missing binary: the
    /// caller skips, or fails under `SSEHUB_REQUIRE_BROKERS=1`).
    pub(crate) async fn start(backend: Backend) -> Result<Broker, String> {
        Ok(match backend {
            Backend::Memory => Broker::Memory,
            Backend::Redis => {
                Broker::Redis(RedisServer::start(RedisOptions::new().persistent(true)).await?)
            }
            Backend::RedisVolatile => {
                Broker::Redis(RedisServer::start(RedisOptions::new().persistent(false)).await?)
            }
            Backend::Nats => Broker::Nats(NatsServer::start(NatsOptions::default()).await?),
            Backend::RedisCluster => Broker::Cluster(
                RedisCluster::start(ClusterOptions::new().persistent(true).replicas(0)).await?,
            ),
            Backend::RedisClusterReplicas => Broker::Cluster(
                RedisCluster::start(ClusterOptions::new().persistent(true).replicas(1)).await?,
            ),
        })
    }

    /// The one server's port, when there is one server.
    fn port(&self) -> Option<u16> {
        match self {
            Broker::Redis(s) => Some(s.port()),
            Broker::Nats(s) => Some(s.port()),
            Broker::Memory | Broker::Cluster(_) => None,
        }
    }

    /// The `--backend` of a node reaching the broker at `via` (a proxy), or directly.
    fn backend_url(&self, via: Option<SocketAddr>) -> String {
        match (self, via) {
            (Broker::Memory, _) => "memory".to_owned(),
            (Broker::Redis(_), Some(via)) => format!("redis://{via}"),
            (Broker::Redis(s), None) => s.url(),
            (Broker::Nats(_), Some(via)) => format!("nats://{via}"),
            (Broker::Nats(s), None) => s.url(),
            (Broker::Cluster(c), _) => c.url(),
        }
    }

    fn kill(&mut self) {
        match self {
            Broker::Redis(s) => s.kill(),
            Broker::Nats(s) => s.kill(),
            Broker::Memory | Broker::Cluster(_) => {}
        }
    }

    async fn restart(&mut self) -> Result<(), String> {
        match self {
            Broker::Redis(s) => s.restart().await,
            Broker::Nats(s) => s.restart().await,
            Broker::Memory | Broker::Cluster(_) => Ok(()),
        }
    }

    fn freeze(&self, on: bool) -> bool {
        match (self, on) {
            (Broker::Redis(s), true) => s.freeze(),
            (Broker::Redis(s), false) => s.thaw(),
            (Broker::Nats(s), true) => s.freeze(),
            (Broker::Nats(s), false) => s.thaw(),
            (Broker::Memory | Broker::Cluster(_), _) => true,
        }
    }

    fn cluster(&mut self) -> Result<&mut RedisCluster, String> {
        match self {
            Broker::Cluster(c) => Ok(c),
            _ => Err("a cluster fault on a broker that is no cluster".to_owned()),
        }
    }
}

/// One demo process, on a fixed port, behind its proxies.
pub(crate) struct Node {
    port: u16,
    backend: String,
    child: Option<Child>,
    /// Clients connect here.
    pub(crate) proxy: TcpProxy,
    /// The node reaches the broker through this one (one Redis or NATS server).
    pub(crate) broker_proxy: Option<TcpProxy>,
    log: PathBuf,
}

/// How long a demo process may take to listen.
const NODE_START: Duration = Duration::from_secs(60);

impl Node {
    async fn spawn(&mut self) -> Result<(), String> {
        let mut why = String::new();
        for _ in 0..5 {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| format!("node log {}: {e}", self.log.display()))?;
            let mut child = super::fixture::comments_cmd()
                .env("NO_COLOR", "1")
                .args([
                    "--addr",
                    &format!("127.0.0.1:{}", self.port),
                    "--backend",
                    &self.backend,
                ])
                .stdin(Stdio::null())
                .stdout(
                    log.try_clone()
                        .map_err(|e| format!("node log {}: {e}", self.log.display()))?,
                )
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start the demo: {e}"))?;
            let deadline = tokio::time::Instant::now() + NODE_START;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    self.child = Some(child);
                    return Ok(());
                }
                if let Ok(Some(status)) = child.try_wait() {
                    why = format!("the demo exited at start: {status}");
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the demo did not listen within {NODE_START:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("{why} (5 tries); log:\n{}", self.log_tail(30)))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines the process logged.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What happened to one fault.
#[derive(Clone, Debug)]
pub(crate) struct Done {
    pub(crate) kind: FaultKind,
    /// When it was injected and when it was over (the broker, node or link back).
    pub(crate) injected: tokio::time::Instant,
    pub(crate) healed: tokio::time::Instant,
    pub(crate) what: String,
}

/// A broker and its nodes.
pub(crate) struct World {
    /// Dropped after the nodes (fields drop in order).
    pub(crate) nodes: Vec<Node>,
    broker: Broker,
    /// The nodes' logs (a `tempfile::TempDir`, removed when dropped).
    _dir: Box<dyn std::any::Any + Send + Sync>,
}

impl World {
    /// Start the broker and the nodes; `Err(Skip)` when a binary is missing.
    pub(crate) async fn start(backend: Backend) -> Result<World, Setup> {
        let broker = Broker::start(backend).await.map_err(Setup::Skip)?;
        let dir = ssehub_test_support::temp_dir("fault-schedule")
            .map_err(|e| Setup::Fail(format!("temp dir: {e}")))?;
        let mut nodes = Vec::new();
        for n in 0..backend.nodes() {
            let port = ssehub_test_support::free_port();
            let broker_proxy = match broker.port() {
                Some(port) if backend.broker_links() => Some(
                    TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
                        .await
                        .map_err(|e| Setup::Fail(format!("broker proxy: {e}")))?,
                ),
                _ => None,
            };
            let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .map_err(|e| Setup::Fail(format!("node proxy: {e}")))?;
            let mut node = Node {
                port,
                backend: broker.backend_url(broker_proxy.as_ref().map(TcpProxy::addr)),
                child: None,
                proxy,
                broker_proxy,
                log: dir.path().join(format!("node-{n}.log")),
            };
            node.spawn().await.map_err(Setup::Fail)?;
            nodes.push(node);
        }
        Ok(World {
            nodes,
            broker,
            _dir: Box::new(dir),
        })
    }

    /// Where clients reach each node (its proxy).
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.proxy.addr()).collect()
    }

    fn proxy(&self, link: Link) -> &TcpProxy {
        match link {
            Link::Client(n) => &self.nodes[n].proxy,
            Link::Broker(n) => self.nodes[n]
                .broker_proxy
                .as_ref()
                .unwrap_or(&self.nodes[n].proxy),
        }
    }

    /// Inject `fault` and heal it: returns once the broker, node or link is back.
    pub(crate) async fn apply(&mut self, fault: &Fault) -> Result<Done, String> {
        let injected = tokio::time::Instant::now();
        let hold = fault.hold;
        let what = match fault.kind {
            FaultKind::BrokerKill => {
                self.broker.kill();
                tokio::time::sleep(hold).await;
                self.broker.restart().await?;
                "broker restarted".to_owned()
            }
            FaultKind::BrokerPause => {
                if !self.broker.freeze(true) {
                    return Err("SIGSTOP the broker".to_owned());
                }
                tokio::time::sleep(hold).await;
                if !self.broker.freeze(false) {
                    return Err("SIGCONT the broker".to_owned());
                }
                "broker thawed".to_owned()
            }
            FaultKind::LinkCut => {
                self.proxy(fault.link).drop_all();
                format!("{:?} cut", fault.link)
            }
            FaultKind::LinkBlackhole => {
                let proxy = self.proxy(fault.link);
                proxy.blackhole(true);
                tokio::time::sleep(hold).await;
                proxy.blackhole(false);
                format!("{:?} blackholed", fault.link)
            }
            FaultKind::LinkLatency => {
                let proxy = self.proxy(fault.link);
                proxy.latency(fault.latency);
                tokio::time::sleep(hold).await;
                proxy.latency(Duration::ZERO);
                format!("{:?} slowed", fault.link)
            }
            FaultKind::NodeKill => {
                let node = &mut self.nodes[fault.node];
                node.kill();
                tokio::time::sleep(hold).await;
                node.spawn().await?;
                format!("node {} restarted", fault.node)
            }
            FaultKind::MasterKill => {
                let cluster = self.broker.cluster()?;
                let masters = tokio::task::block_in_place(|| cluster.masters());
                let Some(port) = masters.get(fault.pick % masters.len().max(1)).copied() else {
                    return Err("no master to kill".to_owned());
                };
                cluster.kill(port);
                tokio::time::sleep(hold).await;
                cluster.restart_node(port).await?;
                cluster.wait_healed().await?;
                format!("master {port} killed and restarted")
            }
            FaultKind::MasterPause => {
                let cluster = self.broker.cluster()?;
                let masters = tokio::task::block_in_place(|| cluster.masters());
                let Some(port) = masters.get(fault.pick % masters.len().max(1)).copied() else {
                    return Err("no master to pause".to_owned());
                };
                if !cluster.freeze_node(port) {
                    return Err(format!("SIGSTOP master {port}"));
                }
                tokio::time::sleep(hold).await;
                if !cluster.thaw_node(port) {
                    return Err(format!("SIGCONT master {port}"));
                }
                cluster.wait_healed().await?;
                format!("master {port} paused")
            }
            FaultKind::Failover => {
                let cluster = self.broker.cluster()?;
                let replicas = tokio::task::block_in_place(|| cluster.replica_ports());
                let Some(port) = replicas.get(fault.pick % replicas.len().max(1)).copied() else {
                    return Err("no replica to promote".to_owned());
                };
                let ok = tokio::task::block_in_place(|| cluster.failover(port));
                // The switch completes a moment later; wait until that replica is a master.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while ok && tokio::time::Instant::now() < deadline {
                    let masters = tokio::task::block_in_place(|| cluster.masters());
                    if masters.contains(&port) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                cluster.wait_healed().await?;
                format!("replica {port} promoted: {ok}")
            }
        };
        Ok(Done {
            kind: fault.kind,
            injected,
            healed: tokio::time::Instant::now(),
            what,
        })
    }
}

/// Why a schedule could not run.
#[derive(Debug)]
pub(crate) enum Setup {
    /// A missing binary: skip (fail under `SSEHUB_REQUIRE_BROKERS=1`).
    Skip(String),
    /// Anything else: fail.
    Fail(String),
}
