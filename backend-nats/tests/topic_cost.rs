//! The client-side heap one idle live topic holds in JetStream mode, broken down: the
//! async-nats core subscription alone (its message channel and the client's entry) against a
//! whole `NatsBroker::subscribe` (plus the topic's feed task, its control channel and the
//! node's registration). Run it to read the figures; it fails past a bound.
//!
//! `cargo test -p ssehub-nats --release --test topic_cost -- --nocapture`

use std::alloc::System;
use std::time::Duration;

use ssehub_core::{Broker, Topic};
use ssehub_nats::NatsBroker;
use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::server::BrokerServer;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TOPICS: usize = 2_000;

#[allow(clippy::cast_precision_loss)]
fn per(stats: &stats_alloc::Stats, n: usize) -> (f64, f64) {
    let bytes = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64
        + stats.bytes_reallocated as f64;
    let blocks = stats.allocations as f64 - stats.deallocations as f64;
    (bytes / n as f64, blocks / n as f64)
}

#[tokio::test(flavor = "current_thread")]
async fn heap_held_per_idle_live_topic() {
    let server = NatsServer::start(NatsOptions::default())
        .await
        .expect("nats-server (or SSEHUB_REQUIRE_BROKERS unset)");
    // The client library alone: one core subscription per subject.
    let client = ssehub_nats::async_nats::connect(server.url())
        .await
        .expect("connect");
    let _warm = client.subscribe("warm").await.expect("sub");
    let region = Region::new(GLOBAL);
    let mut subs = Vec::with_capacity(TOPICS);
    for i in 0..TOPICS {
        subs.push(
            client
                .subscribe(format!("cost.sub.{i}"))
                .await
                .expect("sub"),
        );
    }
    client.flush().await.expect("flush");
    let (sub_bytes, sub_blocks) = per(&region.change(), TOPICS);
    drop(subs);

    let broker = NatsBroker::builder(server.url())
        .prefix("cost")
        .stream("COST")
        .build()
        .await
        .expect("broker");
    let _warm = broker
        .subscribe(&Topic::new("warm").expect("topic"))
        .await
        .expect("sub");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let region = Region::new(GLOBAL);
    let mut live = Vec::with_capacity(TOPICS);
    for i in 0..TOPICS {
        let topic = Topic::new(format!("t{i}")).expect("topic");
        live.push(broker.subscribe(&topic).await.expect("subscribe"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (topic_bytes, topic_blocks) = per(&region.change(), TOPICS);
    eprintln!(
        "heap per idle live topic (NATS JetStream, client side): {topic_bytes:.0} bytes in \
         {topic_blocks:.1} blocks; of which an async-nats core subscription alone: \
         {sub_bytes:.0} bytes in {sub_blocks:.1} blocks; ssehub's own: {:.0} bytes",
        topic_bytes - sub_bytes
    );
    drop(live);
    // ssehub's own part was 12.3 KB before the feed boxed its rare paths, 3.6 KB after (the
    // same in debug and release builds).
    let own = topic_bytes - sub_bytes;
    assert!(
        own < 8.0 * 1024.0,
        "ssehub holds {own:.0} bytes per idle topic"
    );
}
