//! `ssehub-load`: the load generator. See `BENCHMARKS.md` at the repository root.
//!
//! ```text
//! ssehub-load [--smoke] [--scenarios 1,2,3,4,5,6,7,8,9,10] [--json FILE] [--chart FILE.png]
//! ssehub-load --serve ssehub|baseline --port P [--backend memory|redis://..|nats://..] [--metrics]
//! ```
//!
//! `--smoke` runs every scenario tiny and exits non-zero only on lost or duplicated events or
//! errors, never on timing.

// A command-line tool: its report goes to stdout.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use ssehub_bench::driver::{self, Fanout, Run, ServerProc};
use ssehub_bench::server::{self, Kind, PublishParams};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct Args {
    smoke: bool,
    scenarios: Vec<u32>,
    json: PathBuf,
    chart: Option<PathBuf>,
    serve: Option<Kind>,
    port: u16,
    backend: String,
    metrics: bool,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        smoke: false,
        scenarios: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        json: PathBuf::from("bench-results.json"),
        chart: None,
        serve: None,
        port: 0,
        backend: "memory".into(),
        metrics: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--scenarios" => {
                a.scenarios = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--json" => a.json = value()?.into(),
            "--chart" => a.chart = Some(value()?.into()),
            "--serve" => {
                a.serve = Some(match value()?.as_str() {
                    "ssehub" => Kind::Ssehub,
                    "baseline" => Kind::Baseline,
                    other => return Err(format!("unknown server {other:?}").into()),
                });
            }
            "--port" => a.port = value()?.parse()?,
            "--backend" => a.backend = value()?,
            "--metrics" => a.metrics = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Error> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(kind) = a.serve {
        return rt
            .block_on(server::serve(kind, a.port, &a.backend, a.metrics))
            .map_err(|e| e.to_string().into());
    }
    rt.block_on(drive(a))
}

/// Sizes of the scenarios: full, or tiny for `--smoke`.
struct Sizes {
    s1_subs: usize,
    s1_events: u64,
    s2_subs: usize,
    s2_events: u64,
    s3_low: usize,
    s3_high: usize,
    s4_channels: usize,
    s4_subs_per: usize,
    s4_events: u64,
    s5_subs: usize,
    s5_burst: u64,
    s5_rate_events: u64,
    s6_subs: usize,
    s6_events: u64,
    s6_rate: f64,
    storm: driver::Storm,
    s8_channels: usize,
    s9_conns: usize,
    s9_low: usize,
    s9_high: usize,
    fleet: driver::Fleet,
    chart_subs: Vec<usize>,
    chart_events: u64,
    timeout: Duration,
}

impl Sizes {
    fn new(smoke: bool) -> Self {
        if smoke {
            Sizes {
                s1_subs: 20,
                s1_events: 50,
                s2_subs: 20,
                s2_events: 10,
                s3_low: 20,
                s3_high: 100,
                s4_channels: 20,
                s4_subs_per: 2,
                s4_events: 5,
                s5_subs: 10,
                s5_burst: 20,
                s5_rate_events: 5,
                s6_subs: 5,
                s6_events: 200,
                s6_rate: 1000.0,
                storm: driver::Storm {
                    history: 100,
                    pad: 4096,
                    clients: 50,
                    probe_events: 20,
                    timeout: Duration::from_secs(20),
                },
                s8_channels: 50,
                s9_conns: 2,
                s9_low: 2,
                s9_high: 5,
                fleet: driver::Fleet {
                    channels: 200,
                    rounds: 2,
                    timeout: Duration::from_secs(60),
                },
                chart_subs: vec![5, 10, 20, 40],
                chart_events: 20,
                timeout: Duration::from_secs(20),
            }
        } else {
            Sizes {
                s1_subs: 1000,
                s1_events: 1000,
                s2_subs: 1000,
                s2_events: 300,
                s3_low: 1000,
                s3_high: 10_000,
                s4_channels: 1000,
                s4_subs_per: 5,
                s4_events: 20,
                s5_subs: 1000,
                s5_burst: 500,
                s5_rate_events: 200,
                s6_subs: 100,
                s6_events: 6000,
                s6_rate: 2000.0,
                storm: driver::Storm {
                    history: 1000,
                    pad: 4096,
                    clients: 2000,
                    probe_events: 300,
                    timeout: Duration::from_secs(90),
                },
                s8_channels: 10_000,
                s9_conns: 100,
                s9_low: 10,
                s9_high: 100,
                fleet: driver::Fleet {
                    channels: 10_000,
                    rounds: 3,
                    timeout: Duration::from_secs(180),
                },
                chart_subs: vec![100, 300, 1000, 3000],
                chart_events: 300,
                timeout: Duration::from_secs(90),
            }
        }
    }
}

const KINDS: [Kind; 2] = [Kind::Ssehub, Kind::Baseline];

fn one_channel(count: u64, rate: f64, pad: usize) -> PublishParams {
    PublishParams {
        channel: "c".into(),
        channels: 0,
        count,
        rate,
        pad,
        batch: 0,
        ..PublishParams::default()
    }
}

/// Start one server of `kind`, run `f` on it, label the run.
async fn single(
    exe: &PathBuf,
    scenario: u32,
    kind: Kind,
    label: &str,
    f: &Fanout,
) -> Result<Run, Error> {
    let s = ServerProc::start(exe, kind, "memory", f.slow).await?;
    let mut run = driver::fanout(std::slice::from_ref(&s), f).await?;
    run.scenario = scenario;
    run.server = kind.as_str().into();
    run.label = label.into();
    eprintln!("  done: {} {}", run.server, run.label);
    Ok(run)
}

#[derive(Serialize)]
struct Target {
    scenario: u32,
    target: String,
    measured: String,
    holds: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    smoke: bool,
    machine: String,
    runs: &'a [Run],
    targets: &'a [Target],
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!("{cpus} CPUs ({model}), {} MiB RAM", mem / 1024)
}

fn find<'a>(runs: &'a [Run], scenario: u32, server: &str, label: &str) -> Option<&'a Run> {
    runs.iter()
        .find(|r| r.scenario == scenario && r.server == server && r.label == label)
}

#[allow(clippy::too_many_lines)]
async fn drive(a: Args) -> Result<(), Error> {
    let nofile = ssehub_bench::raise_fd_limit();
    let exe = std::env::current_exe()?;
    let z = Sizes::new(a.smoke);
    let mut runs: Vec<Run> = Vec::new();
    eprintln!("ssehub-load: {} (soft fd limit {nofile})", machine());
    for &sc in &a.scenarios {
        eprintln!("scenario {sc}");
        match sc {
            1 => {
                for kind in KINDS {
                    let f = Fanout {
                        paths: vec!["/sse/c".into()],
                        subscribers: z.s1_subs,
                        publish: one_channel(z.s1_events, 0.0, 64),
                        slow: false,
                        timeout: z.timeout,
                    };
                    runs.push(single(&exe, 1, kind, "burst", &f).await?);
                }
            }
            2 => {
                for kind in KINDS {
                    let f = Fanout {
                        paths: vec!["/sse/c".into()],
                        subscribers: z.s2_subs,
                        publish: one_channel(z.s2_events, 100.0, 64),
                        slow: false,
                        timeout: z.timeout,
                    };
                    runs.push(single(&exe, 2, kind, "100 ev/s", &f).await?);
                }
            }
            3 => {
                for kind in KINDS {
                    let s = ServerProc::start(&exe, kind, "memory", false).await?;
                    let mut run = driver::idle(&s, z.s3_low, z.s3_high).await?;
                    run.scenario = 3;
                    run.server = kind.as_str().into();
                    run.label = "idle".into();
                    runs.push(run);
                }
            }
            4 => {
                for kind in KINDS {
                    let f = Fanout {
                        paths: (0..z.s4_channels).map(|c| format!("/sse/{c}")).collect(),
                        subscribers: z.s4_channels * z.s4_subs_per,
                        publish: PublishParams {
                            channel: String::new(),
                            channels: z.s4_channels,
                            count: z.s4_events,
                            rate: 0.0,
                            pad: 64,
                            batch: 0,
                            ..PublishParams::default()
                        },
                        slow: false,
                        timeout: z.timeout,
                    };
                    runs.push(single(&exe, 4, kind, "channels", &f).await?);
                }
            }
            5 => runs.extend(scenario5(&exe, &z).await?),
            6 => {
                for kind in KINDS {
                    for slow in [false, true] {
                        let f = Fanout {
                            paths: vec!["/sse/c".into()],
                            subscribers: z.s6_subs,
                            publish: one_channel(z.s6_events, z.s6_rate, 1024),
                            slow,
                            timeout: z.timeout,
                        };
                        let label = if slow { "with slow" } else { "no slow" };
                        runs.push(single(&exe, 6, kind, label, &f).await?);
                    }
                }
            }
            7 => {
                let s = ServerProc::start(&exe, Kind::Ssehub, "memory", false).await?;
                for mut run in driver::resume_storm(&s, &z.storm).await? {
                    run.scenario = 7;
                    run.server = "ssehub".into();
                    runs.push(run);
                }
            }
            8 => runs.extend(scenario8(&exe, &z).await?),
            9 => {
                for kind in KINDS {
                    let s = ServerProc::start(&exe, kind, "memory", false).await?;
                    let mut run = driver::idle_h2(&s, z.s9_conns, z.s9_low, z.s9_high).await?;
                    run.scenario = 9;
                    run.server = kind.as_str().into();
                    run.label = "http/2 idle streams".into();
                    eprintln!("  done: {} {}", run.server, run.note);
                    runs.push(run);
                }
            }
            10 => runs.extend(scenario10(&exe, &z).await?),
            other => return Err(format!("no scenario {other}").into()),
        }
    }
    let mut chart_series = (Vec::new(), Vec::new());
    if let Some(path) = &a.chart {
        eprintln!("chart");
        for &subs in &z.chart_subs {
            for kind in KINDS {
                let f = Fanout {
                    paths: vec!["/sse/c".into()],
                    subscribers: subs,
                    publish: one_channel(z.chart_events, 0.0, 64),
                    slow: false,
                    timeout: z.timeout,
                };
                let run = single(&exe, 0, kind, &format!("chart {subs}"), &f).await?;
                let point = (
                    u32::try_from(subs).unwrap_or(u32::MAX),
                    run.deliveries_per_s,
                );
                match kind {
                    Kind::Ssehub => chart_series.0.push(point),
                    Kind::Baseline => chart_series.1.push(point),
                }
                runs.push(run);
            }
        }
        ssehub_bench::chart::draw(path, &chart_series.0, &chart_series.1)?;
        eprintln!("chart written to {}", path.display());
    }
    let targets = targets(&runs);
    println!("{}", table(&runs, &targets));
    let report = Report {
        smoke: a.smoke,
        machine: machine(),
        runs: &runs,
        targets: &targets,
    };
    std::fs::write(&a.json, serde_json::to_string_pretty(&report)?)?;
    println!("JSON written to {}", a.json.display());
    let bad: Vec<&Run> = runs
        .iter()
        .filter(|r| r.lost > 0 || r.duplicates > 0 || r.errors > 0)
        .collect();
    if !bad.is_empty() {
        for r in bad {
            eprintln!(
                "FAILED: scenario {} {} {}: lost {}, duplicates {}, errors {} {}",
                r.scenario, r.server, r.label, r.lost, r.duplicates, r.errors, r.note
            );
        }
        std::process::exit(1);
    }
    Ok(())
}

/// Scenario 5: two ssehub processes sharing Redis, then NATS, against one on the memory backend.
async fn scenario5(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut out = Vec::new();
    use ssehub_test_support::server::BrokerServer as _;
    let redis = ssehub_test_support::redis::RedisServer::start(
        ssehub_test_support::redis::RedisOptions::new(),
    )
    .await?;
    let nats = ssehub_test_support::nats::NatsServer::start(
        ssehub_test_support::nats::NatsOptions::default(),
    )
    .await?;
    let backends = [
        ("memory", "memory".to_owned(), 1),
        ("redis", redis.url(), 2),
        ("nats", nats.url(), 2),
    ];
    for (name, url, processes) in &backends {
        for (what, count, rate, batch) in [
            ("burst", z.s5_burst, 0.0, 0),
            ("burst, publish_many", z.s5_burst, 0.0, 500),
            ("100 ev/s", z.s5_rate_events, 100.0, 0),
        ] {
            // A burst lasts ~0.15 s on 2 shared cores: one run of it moves by tens of percent
            // between sittings. Bursts are run three times (fresh servers each) and the median
            // counts; the note lists all three.
            let repeats = if rate > 0.0 || z.s5_burst < 100 { 1 } else { 3 };
            let mut runs = Vec::new();
            for _ in 0..repeats {
                let mut servers = Vec::new();
                for _ in 0..*processes {
                    servers.push(ServerProc::start(exe, Kind::Ssehub, url, false).await?);
                }
                let n = out.len() * 3 + runs.len();
                let f = Fanout {
                    paths: vec![format!("/sse/{name}{n}")],
                    subscribers: z.s5_subs,
                    publish: PublishParams {
                        channel: format!("{name}{n}"),
                        channels: 0,
                        count,
                        rate,
                        pad: 64,
                        batch,
                        ..PublishParams::default()
                    },
                    slow: false,
                    timeout: z.timeout,
                };
                runs.push(driver::fanout(&servers, &f).await?);
            }
            runs.sort_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
            let all: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}", r.deliveries_per_s))
                .collect();
            let errors: u64 = runs.iter().map(|r| r.errors).sum();
            let mut run = runs.swap_remove(runs.len() / 2);
            run.errors = errors;
            if repeats > 1 {
                run.note = format!(
                    "median of {repeats} runs (deliveries/s: {}){}{}",
                    all.join(", "),
                    if run.note.is_empty() { "" } else { "; " },
                    run.note
                );
            }
            run.scenario = 5;
            run.server = "ssehub".into();
            run.label = format!("{name} x{processes} {what}");
            eprintln!("  done: {}", run.label);
            out.push(run);
        }
    }
    Ok(out)
}

/// Scenario 10: a fleet. Three ssehub processes on one broker (one on memory, the reference),
/// every channel subscribed twice over them, rounds to every channel in a random order, then a
/// broker restart: throughput, latency, broker-side objects, RSS per node, recovery time.
async fn scenario10(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut out = Vec::new();
    let label = |run: &mut Run, name: &str| {
        run.scenario = 10;
        run.server = "ssehub".into();
        run.label = format!("fleet, {name}");
        eprintln!("  done: {} {}", run.label, run.note);
    };
    // `SSEHUB_FLEET_CHANNELS=N` changes the number of channels (10,000; 200 with --smoke).
    let mut fleet = z.fleet.clone();
    if let Some(n) = std::env::var("SSEHUB_FLEET_CHANNELS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        fleet.channels = n;
    }
    let f = &fleet;
    // `SSEHUB_FLEET_BACKENDS=redis,nats` runs some backends only (memory, redis, cluster, nats).
    let wanted = std::env::var("SSEHUB_FLEET_BACKENDS").unwrap_or_default();
    let run_backend = |name: &str| wanted.is_empty() || wanted.split(',').any(|w| w == name);
    let no_restart: Option<fn() -> std::future::Ready<()>> = None;

    // Memory: one process, the reference.
    if run_backend("memory") {
        let servers = vec![ServerProc::start(exe, Kind::Ssehub, "memory", false).await?];
        let objects = async || "none (in process)".to_owned();
        let mut run = driver::fleet(&servers, f, objects, no_restart).await?;
        label(&mut run, "memory (1 node)");
        out.push(run);
    }

    if run_backend("redis") {
        out.push(fleet_redis(exe, f, &label).await?);
    }
    if run_backend("cluster") {
        out.push(fleet_cluster(exe, f, &label).await?);
    }
    if run_backend("nats") {
        out.push(fleet_nats(exe, f, &label).await?);
    }
    Ok(out)
}

/// Scenario 10 on one Redis server: channels and subscriptions from `PUBSUB`, a restart with the
/// append-only file.
async fn fleet_redis(
    exe: &PathBuf,
    f: &driver::Fleet,
    label: &impl Fn(&mut Run, &str),
) -> Result<Run, Error> {
    use ssehub_test_support::server::BrokerServer as _;
    let mut redis_server = ssehub_test_support::redis::RedisServer::start(
        ssehub_test_support::redis::RedisOptions::new().persistent(true),
    )
    .await?;
    let url = redis_server.url();
    let servers = start_three(exe, &url).await?;
    let objects = async || match pubsub(&url, false).await {
        Some((channels, subs)) => {
            format!("{channels} pub/sub channels, {subs} subscriptions (PUBSUB NUMSUB)")
        }
        None => "?".to_owned(),
    };
    let restart = async || {
        // An operator's restart: SIGTERM (the append-only file is flushed), then start again.
        redis_server.stop();
        redis_server.restart().await.expect("restart redis");
    };
    let mut run = driver::fleet(&servers, f, objects, Some(restart)).await?;
    label(&mut run, "redis (3 nodes)");
    Ok(run)
}

/// Scenario 10 on a Redis Cluster: sharded channels per master; a restart of every node.
async fn fleet_cluster(
    exe: &PathBuf,
    f: &driver::Fleet,
    label: &impl Fn(&mut Run, &str),
) -> Result<Run, Error> {
    let mut cluster = ssehub_test_support::redis_cluster::RedisCluster::start(
        ssehub_test_support::redis_cluster::ClusterOptions::new().persistent(true),
    )
    .await?;
    let url = cluster.url();
    let servers = start_three(exe, &url).await?;
    let ports = cluster.ports();
    let objects = async || {
        let mut per_master = Vec::new();
        let mut total = 0;
        for port in &ports {
            let (channels, subs) = pubsub(&format!("redis://127.0.0.1:{port}"), true)
                .await
                .unwrap_or_default();
            total += subs;
            per_master.push(channels.to_string());
        }
        format!(
            "sharded channels per master {}, {total} sharded subscriptions (PUBSUB SHARDNUMSUB)",
            per_master.join(" / ")
        )
    };
    // Every node stopped and started again on its append-only file, like the Redis run.
    let restart = async || cluster.restart().await.expect("restart the cluster");
    let mut run = driver::fleet(&servers, f, objects, Some(restart)).await?;
    label(&mut run, "redis cluster (3 masters, 3 nodes)");
    Ok(run)
}

/// Scenario 10 on NATS JetStream: consumers from the stream's info; a restart with the file
/// store.
async fn fleet_nats(
    exe: &PathBuf,
    f: &driver::Fleet,
    label: &impl Fn(&mut Run, &str),
) -> Result<Run, Error> {
    use ssehub_nats::async_nats;
    use ssehub_test_support::server::BrokerServer as _;
    let mut nats_server = ssehub_test_support::nats::NatsServer::start(
        ssehub_test_support::nats::NatsOptions::default(),
    )
    .await?;
    let url = nats_server.url();
    let servers = start_three(exe, &url).await?;
    let objects = async || {
        let Ok(client) = async_nats::connect(url.as_str()).await else {
            return "?".to_owned();
        };
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream("SSEHUB").await else {
            return "?".to_owned();
        };
        match stream.info().await {
            Ok(info) => format!(
                "{} JetStream consumers, {} subjects stored",
                info.state.consumer_count, info.state.subjects_count
            ),
            Err(_) => "?".to_owned(),
        }
    };
    let restart = async || {
        // An operator's restart: SIGTERM, then start again on the same store.
        nats_server.stop();
        nats_server.restart().await.expect("restart nats");
    };
    let mut run = driver::fleet(&servers, f, objects, Some(restart)).await?;
    if run.errors > 0 || run.lost > 0 {
        let log = nats_server.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!(
            "nats-server log (last lines, newest first):\n{}",
            tail.join("\n")
        );
    }
    label(&mut run, "nats jetstream (3 nodes)");
    Ok(run)
}

/// The pub/sub channels one Redis node has subscribers on, and its subscriptions over them
/// (`PUBSUB CHANNELS` / `NUMSUB`, or `SHARDCHANNELS` / `SHARDNUMSUB` for sharded pub/sub).
async fn pubsub(url: &str, sharded: bool) -> Option<(usize, u64)> {
    use ssehub_redis::redis;
    let (list, count) = if sharded {
        ("SHARDCHANNELS", "SHARDNUMSUB")
    } else {
        ("CHANNELS", "NUMSUB")
    };
    let client = redis::Client::open(url).ok()?;
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg(list)
        .query_async(&mut con)
        .await
        .ok()?;
    if channels.is_empty() {
        return Some((0, 0));
    }
    let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
        .arg(count)
        .arg(&channels)
        .query_async(&mut con)
        .await
        .ok()?;
    Some((channels.len(), counts.iter().map(|(_, n)| n).sum()))
}

/// Three ssehub servers on `url`.
async fn start_three(exe: &PathBuf, url: &str) -> Result<Vec<ServerProc>, Error> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(ServerProc::start(exe, Kind::Ssehub, url, false).await?);
    }
    Ok(servers)
}

/// Scenario 8: memory per idle channel, ssehub on each backend (the baseline on its own
/// broadcast channels for reference): `n` connections on `n` channels against `n` on one.
async fn scenario8(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    use ssehub_test_support::server::BrokerServer as _;
    let redis = ssehub_test_support::redis::RedisServer::start(
        ssehub_test_support::redis::RedisOptions::new(),
    )
    .await?;
    let nats = ssehub_test_support::nats::NatsServer::start(
        ssehub_test_support::nats::NatsOptions::default(),
    )
    .await?;
    let mut out = Vec::new();
    for (kind, name, url) in [
        (Kind::Ssehub, "memory", "memory".to_owned()),
        (Kind::Ssehub, "redis", redis.url()),
        (Kind::Ssehub, "nats", nats.url()),
        (Kind::Baseline, "memory", "memory".to_owned()),
    ] {
        let spread = ServerProc::start(exe, kind, &url, false).await?;
        let one = ServerProc::start(exe, kind, &url, false).await?;
        let mut run = driver::idle_channels(&spread, &one, z.s8_channels).await?;
        run.scenario = 8;
        run.server = kind.as_str().into();
        run.label = format!("{name} idle channels");
        eprintln!("  done: {} {}: {}", run.server, run.label, run.note);
        out.push(run);
    }
    Ok(out)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

#[allow(clippy::cast_precision_loss)]
fn targets(runs: &[Run]) -> Vec<Target> {
    let mut t = Vec::new();
    if let (Some(s), Some(b)) = (
        find(runs, 1, "ssehub", "burst"),
        find(runs, 1, "baseline", "burst"),
    ) {
        let r = s.deliveries_per_cpu_s / b.deliveries_per_cpu_s.max(1e-9);
        t.push(Target {
            scenario: 1,
            target: ">= 2x the baseline's deliveries per server CPU-second".into(),
            measured: format!(
                "{r:.2}x ({:.0} vs {:.0})",
                s.deliveries_per_cpu_s, b.deliveries_per_cpu_s
            ),
            holds: r >= 2.0,
        });
    }
    if let (Some(s), Some(b)) = (
        find(runs, 2, "ssehub", "100 ev/s"),
        find(runs, 2, "baseline", "100 ev/s"),
    ) {
        let r = s.cpu_s / b.cpu_s.max(1e-9);
        t.push(Target {
            scenario: 2,
            target: "<= half the baseline's server CPU".into(),
            measured: format!("{r:.2}x ({:.2} s vs {:.2} s)", s.cpu_s, b.cpu_s),
            holds: r <= 0.5,
        });
        t.push(Target {
            scenario: 2,
            target: "p99 latency <= 5 ms".into(),
            measured: format!("{} us (baseline {} us)", s.p99_us, b.p99_us),
            holds: s.p99_us <= 5000,
        });
    }
    if let Some(s) = find(runs, 3, "ssehub", "idle") {
        let b = find(runs, 3, "baseline", "idle").map_or(0.0, |b| b.kib_per_conn);
        t.push(Target {
            scenario: 3,
            target: "<= 8 KB of server memory per idle connection".into(),
            measured: format!("{:.2} KiB (baseline {b:.2} KiB)", s.kib_per_conn),
            holds: s.kib_per_conn <= 8.0,
        });
        t.push(Target {
            scenario: 3,
            target: "memory per idle connection <= the baseline's (same run)".into(),
            measured: format!("{:.2} KiB vs {b:.2} KiB", s.kib_per_conn),
            holds: s.kib_per_conn <= b,
        });
    }
    for name in ["memory", "redis", "nats"] {
        if let Some(s) = find(runs, 8, "ssehub", &format!("{name} idle channels")) {
            t.push(Target {
                scenario: 8,
                target: format!("{name}: <= 2 KiB per idle channel beyond its sessions"),
                measured: format!("{:.2} KiB", s.kib_per_conn),
                holds: s.kib_per_conn <= 2.0,
            });
        }
    }
    if let Some(s) = find(runs, 9, "ssehub", "http/2 idle streams") {
        let b = find(runs, 9, "baseline", "http/2 idle streams").map_or(0.0, |b| b.kib_per_conn);
        t.push(Target {
            scenario: 9,
            target: "<= 4 KiB of server memory per idle HTTP/2 stream".into(),
            measured: format!("{:.2} KiB (baseline {b:.2} KiB)", s.kib_per_conn),
            holds: s.kib_per_conn <= 4.0,
        });
    }
    let mem_burst = runs
        .iter()
        .find(|r| r.scenario == 5 && r.label == "memory x1 burst");
    let mem_rate = runs
        .iter()
        .find(|r| r.scenario == 5 && r.label == "memory x1 100 ev/s");
    for name in ["redis", "nats"] {
        let burst = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == format!("{name} x2 burst"));
        let rate = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == format!("{name} x2 100 ev/s"));
        let mem_batched = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == "memory x1 burst, publish_many");
        let batched = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == format!("{name} x2 burst, publish_many"));
        if let (Some(m), Some(x)) = (mem_batched, batched) {
            let r = x.deliveries_per_s / m.deliveries_per_s.max(1e-9);
            t.push(Target {
                scenario: 5,
                target: format!(
                    "{name}, one publisher with publish_many: >= 85% of the memory backend's deliveries/s"
                ),
                measured: format!(
                    "{:.0}% ({:.0} vs {:.0})",
                    r * 100.0,
                    x.deliveries_per_s,
                    m.deliveries_per_s
                ),
                holds: r >= 0.85,
            });
        }
        if let (Some(m), Some(x)) = (mem_burst, burst) {
            let r = x.deliveries_per_s / m.deliveries_per_s.max(1e-9);
            t.push(Target {
                scenario: 5,
                target: format!(
                    "{name}, one publisher awaiting each publish: >= 85% of the memory backend's deliveries/s"
                ),
                measured: format!(
                    "{:.0}% ({:.0} vs {:.0})",
                    r * 100.0,
                    x.deliveries_per_s,
                    m.deliveries_per_s
                ),
                holds: r >= 0.85,
            });
        }
        if let (Some(m), Some(x)) = (mem_rate, rate) {
            let added = x.p50_us as f64 - m.p50_us as f64;
            t.push(Target {
                scenario: 5,
                target: format!("{name}: <= 1 ms added p50 latency"),
                measured: format!("{added:+.0} us ({} vs {} us)", x.p50_us, m.p50_us),
                holds: added <= 1000.0,
            });
        }
    }
    for server in ["ssehub", "baseline"] {
        if let (Some(no), Some(with)) = (
            find(runs, 6, server, "no slow"),
            find(runs, 6, server, "with slow"),
        ) {
            let loss = 1.0 - with.deliveries_per_s / no.deliveries_per_s.max(1e-9);
            let cut = with.note.contains("-> cut off");
            t.push(Target {
                scenario: 6,
                target: format!("{server}: others lose < 5% throughput; the slow one is cut off at its queue bound"),
                measured: format!(
                    "{:+.1}% throughput ({:.0} vs {:.0} deliveries/s), p99 {} vs {} us; {}",
                    -loss * 100.0,
                    with.deliveries_per_s,
                    no.deliveries_per_s,
                    with.p99_us,
                    no.p99_us,
                    if cut { "cut off" } else { "NOT cut off" }
                ),
                holds: loss < 0.05 && cut,
            });
        }
    }
    if let (Some(idle), Some(during), Some(storm)) = (
        find(runs, 7, "ssehub", "probe, idle"),
        find(runs, 7, "ssehub", "probe, during the storm"),
        find(runs, 7, "ssehub", "storm"),
    ) {
        let r = during.p50_us as f64 / idle.p50_us.max(1) as f64;
        t.push(Target {
            scenario: 7,
            target: "resume storm: publishing elsewhere keeps p50 within 2x of idle".into(),
            measured: format!(
                "{r:.2}x ({} vs {} us; p99 {} vs {} us)",
                during.p50_us, idle.p50_us, during.p99_us, idle.p99_us
            ),
            holds: r <= 2.0,
        });
        t.push(Target {
            scenario: 7,
            target: "resume storm: server memory per non-reading resumer <= one replay page (32 x 4.1 KiB) + hyper's write buffer (408 KiB) + 20 KiB, whatever the history".into(),
            measured: format!("{:.1} KiB per client", storm.kib_per_conn),
            holds: storm.kib_per_conn <= 32.0 * 4.1 + 408.0 + 20.0,
        });
    }
    t
}

#[allow(clippy::cast_precision_loss)]
fn table(runs: &[Run], targets: &[Target]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| sc | server | run | subs | delivered/expected | deliveries/s | ratio | server CPU s | deliveries/CPU-s | ratio | kernel share | writes/delivery | p50 us | p99 us | p99.9 us | peak RSS MiB |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        let base = if r.server == "ssehub" {
            find(runs, r.scenario, "baseline", &r.label)
        } else {
            None
        };
        let (r1, r2) = base.map_or(("".into(), "".into()), |b| {
            (
                ratio(r.deliveries_per_s, b.deliveries_per_s),
                ratio(r.deliveries_per_cpu_s, b.deliveries_per_cpu_s),
            )
        });
        if matches!(r.scenario, 3 | 8 | 9) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | - | - | - | - | - | - | - | - | - | - | - | {:.1} |",
                r.scenario,
                r.server,
                r.label,
                r.subscribers,
                r.peak_rss_kib as f64 / 1024.0
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {}/{} | {:.0} | {} | {:.2} | {:.0} | {} | {:.0}% | {:.2} | {} | {} | {} | {:.1} |",
            r.scenario,
            r.server,
            r.label,
            r.subscribers,
            r.delivered,
            r.expected,
            r.deliveries_per_s,
            r1,
            r.cpu_s,
            r.deliveries_per_cpu_s,
            r2,
            r.sys_share * 100.0,
            r.writes_per_delivery,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    for r in runs.iter().filter(|r| r.scenario == 5) {
        #[allow(clippy::cast_precision_loss)]
        let per = r.publish_secs * 1e6 / r.events.max(1) as f64;
        let _ = writeln!(
            s,
            "\nscenario 5 {}: publishing took {:.3} s ({per:.0} us per event, one publisher {})",
            r.label,
            r.publish_secs,
            if r.label.contains("publish_many") {
                "with publish_many batches"
            } else {
                "awaiting each publish"
            }
        );
    }
    for r in runs.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(
            s,
            "\nscenario {} {} {}: {}",
            r.scenario, r.server, r.label, r.note
        );
    }
    let _ = writeln!(s, "\n| sc | target | measured | holds |\n|---|---|---|---|");
    for t in targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.scenario,
            t.target,
            t.measured,
            if t.holds { "yes" } else { "**no**" }
        );
    }
    s
}
