//! Redis Cluster specifics: live messages travel on sharded pub/sub (only the topic's shard
//! holds its subscription), and a master killed mid-burst is replaced by its replica with
//! nothing lost silently.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, Delivery, Subscription};
use ssehub_redis::RedisBroker;
use ssehub_redis::redis::{self, AsyncCommands};
use ssehub_test_support::faults::{BurstTask, next_delivery, payload_number};
use ssehub_test_support::redis_cluster::{ClusterOptions, RedisCluster, redis_cluster_url};

const WAIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "shard";

async fn broker(url: &str) -> RedisBroker {
    RedisBroker::builder(url)
        .prefix(PREFIX)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .ping_interval(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(200))
        .build()
        .await
        .expect("connect")
}

/// `(PUBSUB SHARDNUMSUB, PUBSUB NUMSUB)` of `channel` summed over every node of the cluster.
async fn subscribers(url: &str, channel: &str) -> (i64, i64) {
    let hosts = url.strip_prefix("redis+cluster://").expect("cluster url");
    let (mut sharded, mut plain) = (0, 0);
    for host in hosts.split(',') {
        let client = redis::Client::open(format!("redis://{host}")).expect("client");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("node");
        for (command, total) in [("SHARDNUMSUB", &mut sharded), ("NUMSUB", &mut plain)] {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg(command)
                .arg(channel)
                .query_async(&mut con)
                .await
                .expect("pubsub");
            *total += n;
        }
        let _: () = con.set("probe", 1).await.unwrap_or(());
    }
    (sharded, plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_use_sharded_pubsub() {
    let Some(url) = redis_cluster_url().await else {
        return;
    };
    let b = broker(&url).await;
    let topic = unique_topic("sharded");
    let channel = format!("{PREFIX}:{{{}}}:events", topic.as_str());
    let sub = b.subscribe(&topic).await.expect("subscribe");
    let (sharded, plain) = subscribers(&url, &channel).await;
    assert_eq!(
        (sharded, plain),
        (1, 0),
        "one sharded subscription on the topic's shard, no plain one"
    );
    drop(sub);
    let deadline = tokio::time::Instant::now() + WAIT;
    while subscribers(&url, &channel).await != (0, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sharded subscription outlived its last subscriber"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `sub` until every Ok-published number of the burst arrived: in order, never twice, and
/// an event is only skipped after a gap (a failover may lose writes the replica had not copied:
/// that is a `reset`, never silence). Returns how many gaps came.
async fn every_event_or_a_gap(sub: &mut Subscription, ok: &[u64], failed: &HashSet<u64>) -> usize {
    let mut expected = ok.iter().copied().peekable();
    let (mut gaps, mut gap_since_last, mut last) = (0, false, None::<u64>);
    while let Some(&want) = expected.peek() {
        match next_delivery(sub, WAIT).await {
            Delivery::Gap => {
                gaps += 1;
                gap_since_last = true;
            }
            Delivery::Event(env) => {
                let got = payload_number(&env.data);
                assert!(
                    last.is_none_or(|l| got > l),
                    "event {got} after {last:?}: out of order or twice"
                );
                last = Some(got);
                if failed.contains(&got) && got != want {
                    continue; // a publish that failed may still have been applied
                }
                assert!(
                    got == want || gap_since_last,
                    "events {want}..{got} skipped without a gap"
                );
                while expected.peek().is_some_and(|n| *n <= got) {
                    expected.next();
                }
                gap_since_last = false;
            }
        }
    }
    gaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_nothing_is_lost_silently() {
    let Some(mut cluster) =
        ssehub_test_support::or_skip(RedisCluster::start(ClusterOptions::new().replicas(1)).await)
    else {
        return;
    };
    let url = cluster.url();
    let (a, b) = (broker(&url).await, broker(&url).await);
    let topic = unique_topic("failover");
    let mut sub = a.subscribe(&topic).await.expect("subscribe");
    let burst = BurstTask::spawn(Arc::new(b.clone()), topic.clone(), Duration::from_millis(5));
    let wait = async |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait("50 publishes before the kill", &|| burst.ok() >= 50).await;
    let key = format!("{PREFIX}:{{{}}}:stream", topic.as_str());
    let master = cluster.master_of(&key).expect("the topic's master");
    let started = std::time::Instant::now();
    cluster.kill(master);
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.master_of(&key).is_none_or(|m| m == master) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
        .wait_healed()
        .await
        .expect("the cluster is whole again");
    let promoted = started.elapsed();
    let before = burst.ok();
    wait("50 publishes after the failover", &|| {
        burst.ok() >= before + 50
    })
    .await;
    let burst = burst.stop().await;
    eprintln!(
        "failover: replica serving after {promoted:?}; {} published, {} refused",
        burst.ok.len(),
        burst.errors.len()
    );
    assert_ne!(cluster.master_of(&key), Some(master));
    let ok: Vec<u64> = burst.ok.iter().map(|(n, _)| *n).collect();
    let failed: HashSet<u64> = burst.errors.iter().copied().collect();
    let gaps = every_event_or_a_gap(&mut sub, &ok, &failed).await;
    eprintln!("failover: the subscriber saw {gaps} gap(s)");
}
