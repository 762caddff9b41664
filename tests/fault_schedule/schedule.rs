//! A schedule: everything a seed decides. The backend, the faults (when, what, on which node,
//! link or master, for how long), which channels each subscriber reads and when it drops its
//! connection, and the seeds of each publisher's and subscriber's own generator (which node
//! each request goes to, the pauses between requests).

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where the events and the demo's numbers live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Backend {
    /// One node, `--backend memory`.
    Memory,
    /// Redis with `appendfsync always`.
    Redis,
    /// Redis without persistence: a restart loses everything.
    RedisVolatile,
    /// 3 persistent masters, no replicas.
    RedisCluster,
    /// 3 persistent masters with a replica each.
    RedisClusterReplicas,
    /// NATS JetStream, file storage.
    Nats,
}

impl Backend {
    /// Every backend, in the order the tests are listed.
    pub(crate) const ALL: [Backend; 6] = [
        Backend::Memory,
        Backend::Redis,
        Backend::RedisVolatile,
        Backend::RedisCluster,
        Backend::RedisClusterReplicas,
        Backend::Nats,
    ];

    /// The name used by `SSEHUB_FAULT_BACKEND` and the test's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::RedisVolatile => "redis_volatile",
            Backend::RedisCluster => "redis_cluster",
            Backend::RedisClusterReplicas => "redis_cluster_replicas",
            Backend::Nats => "nats",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name.trim())
    }

    /// Demo nodes (the memory backend lives in its one process).
    pub(crate) fn nodes(self) -> usize {
        match self {
            Backend::Memory => 1,
            _ => 2,
        }
    }

    /// Whether the nodes reach the broker through a proxy of ours (one server: yes; a
    /// cluster's nodes announce their own addresses, so its links cannot be proxied).
    pub(crate) fn broker_links(self) -> bool {
        matches!(
            self,
            Backend::Redis | Backend::RedisVolatile | Backend::Nats
        )
    }

    /// The faults drawn for this backend.
    fn kinds(self) -> &'static [FaultKind] {
        use FaultKind::*;
        match self {
            Backend::Memory => &[LinkCut, LinkBlackhole, LinkLatency, NodeKill],
            Backend::Redis | Backend::RedisVolatile | Backend::Nats => &[
                BrokerKill,
                BrokerPause,
                LinkCut,
                LinkBlackhole,
                LinkLatency,
                NodeKill,
            ],
            Backend::RedisCluster => &[
                MasterKill,
                MasterPause,
                LinkCut,
                LinkBlackhole,
                LinkLatency,
                NodeKill,
            ],
            Backend::RedisClusterReplicas => &[
                MasterKill,
                MasterPause,
                Failover,
                LinkCut,
                LinkBlackhole,
                LinkLatency,
                NodeKill,
            ],
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    /// The broker SIGKILLed, restarted on the same port and data after `hold`.
    BrokerKill,
    /// The broker SIGSTOPped for `hold`, then SIGCONT.
    BrokerPause,
    /// Every connection through one proxy closed at once.
    LinkCut,
    /// One proxy forwards nothing for `hold` (sockets stay open).
    LinkBlackhole,
    /// One proxy delays every chunk by `latency` for `hold`.
    LinkLatency,
    /// A demo node SIGKILLed, started again on the same port after `hold`.
    NodeKill,
    /// A cluster master SIGKILLed, restarted after `hold` (with replicas: promoted meanwhile).
    MasterKill,
    /// A cluster master SIGSTOPped for `hold` (past the 1 s node timeout).
    MasterPause,
    /// `CLUSTER FAILOVER` on a replica.
    Failover,
}

impl FaultKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::BrokerKill => "broker-kill",
            FaultKind::BrokerPause => "broker-pause",
            FaultKind::LinkCut => "link-cut",
            FaultKind::LinkBlackhole => "link-blackhole",
            FaultKind::LinkLatency => "link-latency",
            FaultKind::NodeKill => "node-kill",
            FaultKind::MasterKill => "master-kill",
            FaultKind::MasterPause => "master-pause",
            FaultKind::Failover => "failover",
        }
    }
}

/// Which proxy a link fault acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// Between the clients and node `n`.
    Client(usize),
    /// Between node `n` and the broker.
    Broker(usize),
}

/// One fault of a schedule.
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    /// When it starts, from the moment the publishers start.
    pub(crate) at: Duration,
    pub(crate) kind: FaultKind,
    /// How long the broker, node or link stays away.
    pub(crate) hold: Duration,
    /// For link faults.
    pub(crate) link: Link,
    /// For node kills.
    pub(crate) node: usize,
    /// Which master or replica (an index into the ones there are at the time).
    pub(crate) pick: usize,
    /// For latency faults.
    pub(crate) latency: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>5.2}s {}", self.at.as_secs_f64(), self.kind.name())?;
        match self.kind {
            FaultKind::LinkCut => write!(f, " {:?}", self.link),
            FaultKind::LinkBlackhole => write!(f, " {:?} {:?}", self.link, self.hold),
            FaultKind::LinkLatency => {
                write!(
                    f,
                    " {:?} +{:?} for {:?}",
                    self.link, self.latency, self.hold
                )
            }
            FaultKind::NodeKill => write!(f, " node {} down {:?}", self.node, self.hold),
            FaultKind::MasterKill | FaultKind::MasterPause | FaultKind::Failover => {
                write!(f, " #{} {:?}", self.pick, self.hold)
            }
            FaultKind::BrokerKill | FaultKind::BrokerPause => write!(f, " {:?}", self.hold),
        }
    }
}

/// One subscriber's plan.
#[derive(Clone, Debug)]
pub(crate) struct SubPlan {
    /// Indexes into the schedule's channels: one (single-channel endpoint) or two (the
    /// multiplexing endpoint).
    pub(crate) channels: Vec<usize>,
    /// When it drops its connection (from the publishers' start) and reconnects to a random
    /// node with its last id.
    pub(crate) disconnects: Vec<Duration>,
    /// The node of its first connection.
    pub(crate) first_node: usize,
    /// Its own generator's seed (node picks, pauses).
    pub(crate) seed: u64,
}

/// Everything one seed decides.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    pub(crate) seed: u64,
    pub(crate) backend: Backend,
    pub(crate) faults: Vec<Fault>,
    /// Channels (discussions): one publisher each.
    pub(crate) channels: usize,
    /// Each publisher's generator seed, one per channel.
    pub(crate) publishers: Vec<u64>,
    pub(crate) subscribers: Vec<SubPlan>,
}

impl Schedule {
    /// The schedule of `seed` on `backend`: 3 or 4 faults one after the other over about
    /// 8–13 s, 4 channels with a publisher each, 6 subscribers (3 of them multiplexed).
    pub(crate) fn new(seed: u64, backend: Backend) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed ^ (backend as u64).wrapping_mul(0x9e37_79b9));
        let nodes = backend.nodes();
        let kinds = backend.kinds();
        let ms =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
        let mut faults = Vec::new();
        let mut t = ms(&mut rng, 1_000, 2_000);
        let count = rng.random_range(3..=4);
        for _ in 0..count {
            let kind = kinds[rng.random_range(0..kinds.len())];
            let hold = match kind {
                FaultKind::BrokerKill => ms(&mut rng, 300, 1_500),
                FaultKind::BrokerPause => ms(&mut rng, 1_000, 3_000),
                FaultKind::LinkCut | FaultKind::Failover => Duration::ZERO,
                FaultKind::LinkBlackhole | FaultKind::LinkLatency => ms(&mut rng, 1_000, 2_000),
                FaultKind::NodeKill => ms(&mut rng, 300, 1_000),
                FaultKind::MasterKill => ms(&mut rng, 500, 2_500),
                FaultKind::MasterPause => ms(&mut rng, 1_500, 3_000),
            };
            let node = rng.random_range(0..nodes);
            let link = if backend.broker_links() && rng.random_bool(0.5) {
                Link::Broker(node)
            } else {
                Link::Client(node)
            };
            faults.push(Fault {
                at: t,
                kind,
                hold,
                link,
                node,
                pick: rng.random_range(0..6),
                latency: ms(&mut rng, 100, 400),
            });
            t += hold + ms(&mut rng, 800, 2_500);
        }
        let channels = 4;
        let publishers = (0..channels).map(|_| rng.random()).collect();
        let subscribers = (0..6)
            .map(|i| {
                let channels = if i < 3 {
                    vec![i % channels]
                } else {
                    let a = rng.random_range(0..channels);
                    let b = (a + rng.random_range(1..channels)) % channels;
                    vec![a, b]
                };
                let mut disconnects: Vec<Duration> = (0..rng.random_range(1..=3))
                    .map(|_| {
                        ms(
                            &mut rng,
                            500,
                            u64::try_from(t.as_millis()).unwrap_or(10_000),
                        )
                    })
                    .collect();
                disconnects.sort();
                SubPlan {
                    channels,
                    disconnects,
                    first_node: rng.random_range(0..nodes),
                    seed: rng.random(),
                }
            })
            .collect();
        Schedule {
            seed,
            backend,
            faults,
            channels,
            publishers,
            subscribers,
        }
    }

    /// Whether this schedule may lose events for real, so that a `reset` is expected and the
    /// demo's counters may restart (then events are told apart by their timestamp too): Redis
    /// without persistence restarted; the memory node killed (the process is the broker and
    /// the store); a cluster master lost with replicas (a promoted replica may miss the last
    /// writes, which the library reports as a gap). Everywhere else a `reset` is needless.
    pub(crate) fn lossy(&self) -> bool {
        self.faults.iter().any(|f| {
            matches!(
                (self.backend, f.kind),
                (Backend::RedisVolatile, FaultKind::BrokerKill)
                    | (Backend::Memory, FaultKind::NodeKill)
                    | (
                        Backend::RedisClusterReplicas,
                        FaultKind::MasterKill | FaultKind::MasterPause
                    )
            )
        })
    }

    /// The command that replays this schedule.
    pub(crate) fn replay(&self) -> String {
        format!(
            "SSEHUB_FAULT_SEED={} SSEHUB_FAULT_BACKEND={} cargo test --all-features --test fault_schedule -- --nocapture",
            self.seed, self.backend
        )
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule seed {} on {} ({} nodes, {} channels, {} subscribers{}):",
            self.seed,
            self.backend,
            self.backend.nodes(),
            self.channels,
            self.subscribers.len(),
            if self.lossy() {
                ", may lose events"
            } else {
                ", loses nothing"
            }
        )?;
        for fault in &self.faults {
            writeln!(f, "  {fault}")?;
        }
        for (i, s) in self.subscribers.iter().enumerate() {
            let at: Vec<String> = s
                .disconnects
                .iter()
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .collect();
            writeln!(
                f,
                "  subscriber {i}: channels {:?}, first node {}, drops at {}",
                s.channels,
                s.first_node,
                at.join(" ")
            )?;
        }
        Ok(())
    }
}
