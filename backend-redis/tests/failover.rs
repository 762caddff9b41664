//! Redis Cluster with replicas: a master that dies after answering a publish its replica had
//! not copied yet. With the replica wait (the default), that publish fails instead of being
//! acknowledged, so every acknowledged event is still in history after the failover: nothing
//! acknowledged is lost silently.

use std::time::Duration;

use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, EventId, Message, Replay, Topic};
use ssehub_redis::RedisBroker;
use ssehub_redis::redis;
use ssehub_test_support::or_skip;
use ssehub_test_support::redis_cluster::{ClusterOptions, RedisCluster};

/// The replica of the master on `master`, asking every node its role.
async fn replica_of(cluster: &RedisCluster, master: u16) -> Option<u16> {
    for port in cluster.ports() {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let role: Vec<redis::Value> = match redis::cmd("ROLE").query_async(&mut con).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::Int(n) => n.to_string(),
            _ => String::new(),
        };
        if role.len() >= 3 && text(&role[0]) == "slave" && text(&role[2]) == master.to_string() {
            return Some(port);
        }
    }
    None
}

/// Every event of `topic` in history, from a fresh broker (after the failover).
async fn history(url: &str, prefix: &str, topic: &Topic, first: &EventId) -> Vec<EventId> {
    let reader = RedisBroker::builder(url)
        .prefix(prefix)
        .build()
        .await
        .expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match reader.replay(topic, first, 1000).await {
            Ok(Replay::Events(events)) => {
                let mut ids = vec![first.clone()];
                ids.extend(events.into_iter().map(|e| e.id));
                return ids;
            }
            Ok(Replay::Gap(_)) => panic!("the first event is gone from history"),
            Err(e) if e.is_temporary() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("replay: {e:?}"),
        }
    }
}

async fn run(replica_timeout: Duration) -> (Vec<EventId>, Vec<EventId>) {
    let Some(mut cluster) = or_skip(RedisCluster::start(ClusterOptions::new().replicas(1)).await)
    else {
        return (Vec::new(), Vec::new());
    };
    let prefix = ssehub_core::conformance::unique_id("failover");
    let broker = RedisBroker::builder(&cluster.url())
        .prefix(prefix.clone())
        .replica_timeout(replica_timeout)
        .response_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("connect");
    let topic = unique_topic("failover");
    let first = broker
        .publish(&topic, Message::new("replicated"))
        .await
        .expect("publish");
    let mut acknowledged = vec![first.clone()];
    let key = format!("{prefix}:{{{topic}}}:stream");
    let master = cluster.master_of(&key).expect("the topic's master");
    let replica = replica_of(&cluster, master).await.expect("its replica");
    // The replica stops copying; the master goes on answering. 4 MB of events: more than the
    // sockets between them buffer, so the rest waits in the master's memory.
    assert!(cluster.freeze_node(replica), "SIGSTOP the replica");
    let big = "x".repeat(100 * 1024);
    for i in 0..40 {
        let data = format!("during {i} {big}");
        if let Ok(id) = broker.publish(&topic, Message::new(data)).await {
            acknowledged.push(id);
        }
    }
    // The master dies before its replica copied those; the replica takes over.
    cluster.kill(master);
    assert!(cluster.thaw_node(replica), "SIGCONT the replica");
    cluster.wait_healed().await.expect("the replica took over");
    let stored = history(&cluster.url(), &prefix, &topic, &first).await;
    (acknowledged, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_nothing_acknowledged() {
    let (acknowledged, stored) = run(Duration::from_millis(100)).await;
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged {id} is not in history after the failover (history: {stored:?}, acknowledged: {acknowledged:?})"
        );
    }
    eprintln!(
        "failover: {} acknowledged, all in history ({} stored)",
        acknowledged.len(),
        stored.len()
    );
}

/// What the replica wait costs: 2,000 publishes, one after another, on a cluster with one
/// replica per master, with and without the wait, in one run. Not a CI test (it asserts
/// nothing about time): `cargo test -p ssehub-redis --release --test failover -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn replica_wait_cost() {
    let Some(cluster) = or_skip(RedisCluster::start(ClusterOptions::new().replicas(1)).await)
    else {
        return;
    };
    const N: usize = 2000;
    let mut rates = Vec::new();
    for (label, wait) in [
        ("no wait", Duration::ZERO),
        ("replica wait", Duration::from_secs(1)),
    ] {
        let broker = RedisBroker::builder(&cluster.url())
            .prefix(ssehub_core::conformance::unique_id("cost"))
            .replica_timeout(wait)
            .build()
            .await
            .expect("connect");
        let topic = unique_topic("cost");
        let start = std::time::Instant::now();
        for i in 0..N {
            broker
                .publish(&topic, Message::new(i.to_string()))
                .await
                .expect("publish");
        }
        let rate = N as f64 / start.elapsed().as_secs_f64();
        eprintln!("{label}: {rate:.0} publishes/s");
        rates.push(rate);
    }
    eprintln!("replica wait / no wait: {:.2}", rates[1] / rates[0]);
}
