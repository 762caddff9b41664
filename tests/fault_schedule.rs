//! Random fault schedules, seeded and replayable: 2 demo nodes (1 on memory) as processes on a
//! real broker of the test's own, publishers that retry with idempotency keys, subscribers
//! (single-channel and multiplexed) that drop their connection and resume on a random node,
//! and faults drawn from a seed: the broker killed and restarted or paused, a link (client ↔
//! node, node ↔ broker) cut, blackholed or slowed, a node killed, a cluster master killed or
//! paused, a failover. The checker (`fault_schedule/check.rs`) reads every subscriber's
//! history against the acknowledged publishes.
//!
//! ```sh
//! cargo test --all-features --test fault_schedule -- --nocapture               # CI: fixed seeds
//! SSEHUB_FAULT_SEED=7 SSEHUB_FAULT_BACKEND=redis cargo test --all-features --test fault_schedule -- --nocapture
//! SSEHUB_FAULT_SCHEDULES=10 cargo test --all-features --test fault_schedule -- --nocapture
//! ```
//!
//! `SSEHUB_FAULT_SEED` runs that seed only; `SSEHUB_FAULT_BACKEND` only that backend's test;
//! `SSEHUB_FAULT_SCHEDULES=N` runs N random seeds per backend (each printed). A seed that
//! failed belongs in [`REGRESSION_SEEDS`]. Each test skips without its broker binaries
//! (`redis-server`, `redis-cli`, `nats-server`), and fails instead under
//! `SSEHUB_REQUIRE_BROKERS=1`. Needs the `redis` and `nats` features (`--all-features`).

#![cfg(all(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used)]

mod fixture;

#[path = "fault_schedule/check.rs"]
mod check;
#[path = "fault_schedule/clients.rs"]
mod clients;
#[path = "fault_schedule/schedule.rs"]
mod schedule;
#[path = "fault_schedule/world.rs"]
mod world;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use check::{LIVE_BOUND, Report, Subscriber, caught_up, check};
use clients::{History, PubLog, lock};
use schedule::{Backend, Schedule};
use world::{Done, Setup, World};

/// The seeds CI runs on every backend.
const FIXED_SEEDS: &[u64] = &[1, 2];

/// Seeds that failed once, per backend: run with the fixed ones (see RELIABILITY.md, "Random
/// fault schedules", for what each showed).
const REGRESSION_SEEDS: &[(&str, u64)] = &[
    // A coordinated `CLUSTER FAILOVER`: events acknowledged in the next ~0.2 s never reach the
    // live subscribers of either node, with no reset; a resume from the id before them
    // replays them (the broker has them).
    // Fixed: live events name their stream predecessor, so a subscriber that missed some fills
    // them from the stream (and a replica wait makes acknowledged events durable).
    ("redis_cluster_replicas", 1),
    // Seed 2 failed once more on 2026-12-05 (one live event lost, the broker had it, a master
    // paused) with an all-masters check run before every subscribe; the check now runs before
    // a batch only, and the seed passed since. Cause not established.
    ("redis_cluster_replicas", 2),
    // A master frozen 2.2 s (seed 2398763362), and one killed (595223649): events acknowledged
    // just after were lost by the broker itself (no replica wait yet), with no reset.
    ("redis_cluster_replicas", 2_398_763_362),
    ("redis_cluster_replicas", 595_223_649),
    // Needless `broker-gap` resets after a master paused / killed and back (persistent, no
    // replica: nothing was lost), seen once while the machine was busy with a build; not
    // reproduced in 6 later runs of these seeds nor in 15 random schedules.
    ("redis_cluster", 1),
    ("redis_cluster", 2),
    // Node 0's link to NATS cut while subscriber 2 resumed: counts 77–79 (acknowledged 0.1 s
    // before the cut) never arrived, no reset, later events did; the stream holds them.
    // 1 of 24 NATS schedules; not reproduced when replayed. Fixed: the replay's consumer (no
    // acks) counted the messages lost in the cut as delivered and went on after the reconnect,
    // so the replay answered the next event alone; a skipped delivery number now fails the
    // read (`backend-nats/tests/replay_cut.rs` forces the cut).
    ("nats", 2_824_329_961),
];

/// How long the publishers go on after the last fault.
const TAIL: Duration = Duration::from_secs(2);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn seeds(backend: Backend) -> Vec<u64> {
    if let Some(seed) = env("SSEHUB_FAULT_SEED") {
        return vec![seed.trim().parse().expect("SSEHUB_FAULT_SEED: a number")];
    }
    if let Some(n) = env("SSEHUB_FAULT_SCHEDULES") {
        let n: usize = n.trim().parse().expect("SSEHUB_FAULT_SCHEDULES: a number");
        return (0..n).map(|_| u64::from(rand::random::<u32>())).collect();
    }
    let mut seeds: Vec<u64> = FIXED_SEEDS.to_vec();
    for (b, seed) in REGRESSION_SEEDS {
        if *b == backend.name() && !seeds.contains(seed) {
            seeds.push(*seed);
        }
    }
    seeds
}

/// What every schedule of one test added up to.
#[derive(Default)]
struct Totals {
    schedules: usize,
    faults: BTreeMap<&'static str, usize>,
    acked: usize,
    abandoned: usize,
    failed_attempts: usize,
    deliveries: usize,
    unacked_deliveries: usize,
    redelivered_after_reset: usize,
    violations: usize,
    resets: BTreeMap<String, usize>,
    needless_resets: usize,
    reconnects: usize,
    longest_outage: Duration,
    recovery: Vec<Duration>,
    catch_up: Vec<Duration>,
}

fn percentile(values: &[Duration], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v: Vec<Duration> = values.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64()
}

impl Totals {
    fn add(&mut self, r: &Report, done: &[Done], pubs: &[PubLog]) {
        self.schedules += 1;
        for d in done {
            *self.faults.entry(d.kind.name()).or_default() += 1;
        }
        self.acked += r.acked;
        self.abandoned += pubs.iter().map(|p| p.abandoned).sum::<usize>();
        self.failed_attempts += pubs.iter().map(|p| p.failed_attempts).sum::<usize>();
        self.deliveries += r.deliveries;
        self.unacked_deliveries += r.unacked_deliveries;
        self.redelivered_after_reset += r.redelivered_after_reset;
        self.violations += r.violations.len();
        for (reason, n) in &r.resets {
            *self.resets.entry(reason.clone()).or_default() += n;
        }
        self.needless_resets += r.needless_resets;
        self.reconnects += r.reconnects;
        self.longest_outage = self.longest_outage.max(r.longest_outage);
        self.recovery.extend(&r.recovery);
        self.catch_up.extend(&r.catch_up);
    }

    fn line(&self, backend: Backend) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let resets: Vec<String> = self
            .resets
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "fault_schedule {backend}: {} schedules; faults: {}; {} acknowledged publishes ({} abandoned, {} failed attempts retried); {} deliveries ({} unacknowledged, {} again after a reset), {} resumes; {} violations; resets {} [{}], {} needless; longest publish outage {:.2} s; recovery p50 {:.2} s, p99 {:.2} s, max {:.2} s; catch-up after the stop max {:.2} s",
            self.schedules,
            faults.join(", "),
            self.acked,
            self.abandoned,
            self.failed_attempts,
            self.deliveries,
            self.unacked_deliveries,
            self.redelivered_after_reset,
            self.reconnects,
            self.violations,
            self.resets.values().sum::<usize>(),
            resets.join(", "),
            self.needless_resets,
            self.longest_outage.as_secs_f64(),
            percentile(&self.recovery, 0.5),
            percentile(&self.recovery, 0.99),
            percentile(&self.recovery, 1.0),
            percentile(&self.catch_up, 1.0),
        )
    }
}

/// Run one schedule: the broker, the nodes, the clients, the faults, the checker.
async fn run_schedule(s: &Schedule) -> Result<(Report, Vec<Done>, Vec<PubLog>), Setup> {
    let mut world = World::start(s.backend).await?;
    let addrs = world.addrs();
    let base = ssehub_core::conformance::unique_id("faults");
    let discussions: Vec<String> = (0..s.channels).map(|c| format!("{base}-{c}")).collect();

    // Subscribers first: each gets its initial events before anything is published.
    let (stop_subs, subs_stopped) = watch::channel(false);
    let histories: Vec<History> = s.subscribers.iter().map(|_| History::default()).collect();
    let started = Instant::now();
    let mut sub_tasks = Vec::new();
    for (plan, history) in s.subscribers.iter().zip(&histories) {
        sub_tasks.push(tokio::spawn(clients::subscribe(
            plan.clone(),
            discussions.clone(),
            addrs.clone(),
            started,
            subs_stopped.clone(),
            history.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.subscribers.iter().zip(&histories).all(|(plan, h)| {
        plan.channels.iter().all(|c| {
            lock(h).iter().any(|e| {
                matches!(e, clients::Entry::Event { channel, has_id: false, .. } if channel == c)
            })
        })
    }) {
        if Instant::now() > deadline {
            return Err(Setup::Fail(
                "the subscribers did not get their initial events within 30 s".to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    eprintln!(
        "  set up (broker, nodes, initial events) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (stop_pubs, pubs_stopped) = watch::channel(false);
    let logs: Vec<Arc<Mutex<PubLog>>> = s.publishers.iter().map(|_| Arc::default()).collect();
    let t0 = Instant::now();
    let mut pub_tasks = Vec::new();
    for ((discussion, seed), log) in discussions.iter().zip(&s.publishers).zip(&logs) {
        pub_tasks.push(tokio::spawn(clients::publish(
            discussion.clone(),
            addrs.clone(),
            *seed,
            pubs_stopped.clone(),
            log.clone(),
        )));
    }

    let mut done = Vec::new();
    for fault in &s.faults {
        tokio::time::sleep_until(t0 + fault.at).await;
        let d = world
            .apply(fault)
            .await
            .map_err(|e| Setup::Fail(format!("fault {fault}: {e}")))?;
        eprintln!(
            "  {:>5.2}s {} → {:.2}s: {}",
            d.injected.duration_since(t0).as_secs_f64(),
            fault.kind.name(),
            d.healed.duration_since(t0).as_secs_f64(),
            d.what
        );
        done.push(d);
    }
    let last_heal = done.last().map_or(t0, |d| d.healed);
    tokio::time::sleep(TAIL).await;
    let _ = stop_pubs.send(true);
    for task in pub_tasks {
        let limit = clients::PUBLISH_GIVE_UP + Duration::from_secs(10);
        if tokio::time::timeout(limit, task).await.is_err() {
            return Err(Setup::Fail("a publisher did not stop".to_owned()));
        }
    }
    let stopped = Instant::now();
    let acks: Vec<Vec<clients::Ack>> = logs.iter().map(|l| lock(l).acks.clone()).collect();

    // Liveness: every subscriber gets every channel's last acknowledged event.
    let mut caught: Vec<Option<Instant>> = vec![None; s.subscribers.len()];
    while caught.iter().any(Option::is_none) && stopped.elapsed() < LIVE_BOUND {
        for (i, (plan, h)) in s.subscribers.iter().zip(&histories).enumerate() {
            if caught[i].is_none()
                && plan
                    .channels
                    .iter()
                    .all(|c| caught_up(&lock(h), *c, acks[*c].last()))
            {
                caught[i] = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_subs.send(true);
    for task in sub_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }

    let histories: Vec<Vec<clients::Entry>> = histories.iter().map(|h| lock(h).clone()).collect();
    let subscribers: Vec<Subscriber<'_>> = s
        .subscribers
        .iter()
        .zip(&histories)
        .zip(&caught)
        .map(|((plan, history), caught)| Subscriber {
            channels: &plan.channels,
            history,
            caught_up: *caught,
        })
        .collect();
    let report = check(s, &acks, &subscribers, t0, last_heal, stopped);
    // A diagnosis of what went missing: does the broker still hold it? Resume from the id of
    // the event before the first missing one and see what the stream replays.
    for gap in report.gaps.iter().take(3) {
        let plan = &s.subscribers[gap.subscriber];
        let got = clients::replay(
            addrs[0],
            &plan.channels,
            &discussions,
            &gap.after,
            Duration::from_secs(2),
        )
        .await;
        let replayed: Vec<u64> = got
            .iter()
            .filter_map(|e| e.filter(|(c, _)| *c == gap.channel).map(|(_, n)| n))
            .collect();
        let held: Vec<u64> = gap
            .missing
            .iter()
            .copied()
            .filter(|n| replayed.contains(n))
            .collect();
        eprintln!(
            "  diagnosis: subscriber {} channel {}: a resume from the id before the first missing event replays counts {:?}{}: {} of the {} missing ({:?}) are in the broker's history{}",
            gap.subscriber,
            gap.channel,
            &replayed[..replayed.len().min(12)],
            if got.contains(&None) {
                " (and a reset)"
            } else {
                ""
            },
            held.len(),
            gap.missing.len(),
            &gap.missing[..gap.missing.len().min(12)],
            if held.len() == gap.missing.len() {
                ": the broker has them, the live delivery lost them"
            } else {
                ""
            }
        );
    }
    if !report.violations.is_empty() {
        for (n, node) in world.nodes.iter().enumerate() {
            eprintln!("  node {n}'s last log lines:\n{}", node.log_tail(15));
        }
    }
    let pubs = logs.iter().map(|l| std::mem::take(&mut *lock(l))).collect();
    Ok((report, done, pubs))
}

async fn run_backend(backend: Backend) {
    if let Some(only) = env("SSEHUB_FAULT_BACKEND") {
        let Some(only) = Backend::parse(&only) else {
            panic!(
                "SSEHUB_FAULT_BACKEND={only}: one of memory, redis, redis_volatile, redis_cluster, redis_cluster_replicas, nats"
            );
        };
        if only != backend {
            eprintln!("skipped: SSEHUB_FAULT_BACKEND={only}");
            return;
        }
    }
    // The demo binary, built (or found fresh) before any broker starts.
    tokio::task::spawn_blocking(fixture::comments_bin)
        .await
        .expect("build the comments example");
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for seed in seeds(backend) {
        let schedule = Schedule::new(seed, backend);
        eprint!("{schedule}");
        let began = Instant::now();
        match run_schedule(&schedule).await {
            Err(Setup::Skip(why)) => {
                ssehub_test_support::skip(&format!("fault_schedule {backend}: {why}"));
                return;
            }
            Err(Setup::Fail(why)) => {
                eprintln!(
                    "  seed {seed} could not run: {why}\n  replay: {}",
                    schedule.replay()
                );
                failures.push(format!(
                    "seed {seed}: {why}\n    replay: {}",
                    schedule.replay()
                ));
            }
            Ok((report, done, pubs)) => {
                eprintln!(
                    "  seed {seed}: {:.1} s, {} acknowledged (longest publish {:.2} s in {} attempts), {} deliveries, {} resumes, streams ended {:?}, refused {:?}, {} resets, {} violations",
                    began.elapsed().as_secs_f64(),
                    report.acked,
                    report.longest_publish.0.as_secs_f64(),
                    report.longest_publish.1,
                    report.deliveries,
                    report.reconnects,
                    report.ended,
                    report.refused,
                    report.resets.values().sum::<usize>(),
                    report.violations.len()
                );
                if !report.violations.is_empty() {
                    let first: Vec<&str> = report
                        .violations
                        .iter()
                        .take(10)
                        .map(String::as_str)
                        .collect();
                    let text = format!(
                        "seed {seed} on {backend}: {} violations:\n    {}\n    replay: {}\n    (add (\"{backend}\", {seed}) to REGRESSION_SEEDS)",
                        report.violations.len(),
                        first.join("\n    "),
                        schedule.replay()
                    );
                    eprintln!("  {text}");
                    failures.push(text);
                }
                totals.add(&report, &done, &pubs);
            }
        }
    }
    eprintln!("{}", totals.line(backend));
    assert!(
        failures.is_empty(),
        "fault_schedule {backend}: {} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    run_backend(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    run_backend(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_volatile() {
    run_backend(Backend::RedisVolatile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    run_backend(Backend::RedisCluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_replicas() {
    run_backend(Backend::RedisClusterReplicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats() {
    run_backend(Backend::Nats).await;
}

#[test]
fn a_seed_always_draws_the_same_schedule() {
    for backend in Backend::ALL {
        let a = Schedule::new(42, backend).to_string();
        assert_eq!(a, Schedule::new(42, backend).to_string());
        assert_ne!(a, Schedule::new(43, backend).to_string());
    }
}
