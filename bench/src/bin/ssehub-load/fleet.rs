//! Scenario 10, the fleet: three ssehub processes per broker (memory, Redis, Redis Cluster, NATS
//! JetStream), the broker-side objects and a broker restart.

use std::path::PathBuf;

use ssehub_bench::driver::{self, Run, ServerProc};
use ssehub_bench::server::Kind;

use crate::Error;
use crate::sizes::Sizes;

/// Scenario 10: a fleet. Three ssehub processes on one broker (one on memory, the reference),
/// every channel subscribed twice over them, rounds to every channel in a random order, then a
/// broker restart: throughput, latency, broker-side objects, RSS per node, recovery time.
pub(crate) async fn scenario10(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
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
