//! Leaks: 100,000 subscribe/close cycles, 10,000 channels created and abandoned, and 5,000 HTTP
//! connect/close cycles leave zero sessions, channels and broker subscriptions, and the process's
//! memory back near where it started; the Redis and NATS backends release every subscription on
//! the broker too (Redis: `PUBSUB CHANNELS` is empty).
//!
//! One test function, alone in this binary: the memory reading (`VmRSS`) is the whole process's,
//! so no other test may run beside it. The Redis and NATS parts run after the reading.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use ssehub::{Broker, ChannelManager, MemoryBroker, PathParams, SseEndpoint, SubscribeOptions};
use ssehub_test_support::sse_client::SseClient;
use ssehub_test_support::{status_kib, wait_until};

fn rss_kib() -> u64 {
    status_kib(std::process::id(), "VmRSS")
}

/// Open and drop `n` sessions over `channels` channels, one at a time.
async fn cycles(m: &ChannelManager<u64>, tag: &str, n: usize, channels: usize) {
    for i in 0..n {
        let s = m
            .subscribe(&format!("{tag}{}", i % channels), SubscribeOptions::new())
            .await
            .unwrap();
        drop(s);
    }
}

/// Nothing left on this node: no session, no channel, no broker subscription.
async fn assert_released(m: &ChannelManager<u64>, broker: &dyn Broker) {
    wait_until("channels removed", async || m.channel_count() == 0).await;
    wait_until("broker subscriptions released", async || {
        broker.active_subscriptions() == 0
    })
    .await;
    assert_eq!(m.total_sessions(), 0);
}

/// The same cycles on another backend: `n` cycles over `channels` channels, then `abandoned`
/// channels used once; nothing left on this node afterwards.
#[cfg(any(feature = "redis", feature = "nats"))]
async fn broker_cycles(broker: impl Broker + Clone, n: usize, channels: usize, abandoned: usize) {
    let m = ChannelManager::<u64>::builder(broker.clone())
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    cycles(&m, "c", n, channels).await;
    cycles(&m, "abandoned", abandoned, abandoned).await;
    assert_released(&m, &broker).await;
}

/// `n` HTTP streams opened (each answered 200, so its session existed) and closed by the client,
/// eight at a time.
async fn http_cycles(addr: std::net::SocketAddr, n: usize, channels: usize) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(8) {
                let c = SseClient::connect(addr, &format!("/events/h{}", i % channels), &[])
                    .await
                    .unwrap();
                assert_eq!(c.status(), 200);
                drop(c);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_and_abandoned_channels_leave_nothing_behind() {
    let broker = MemoryBroker::new();
    let m = ChannelManager::<u64>::builder(broker.clone())
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    let disconnects = Arc::new(AtomicUsize::new(0));
    let d = disconnects.clone();
    let endpoint = SseEndpoint::new(m.clone(), "/events/{id}")
        .unwrap()
        .on_disconnect(move |_p: &PathParams| {
            d.fetch_add(1, Ordering::SeqCst);
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().merge(endpoint.into_router());
    tokio::spawn(async move { ssehub::serve(listener, app).lean_streams(true).await });

    // Warm-up: allocator pools and maps at their working size.
    cycles(&m, "c", 10_000, 1_000).await;
    http_cycles(addr, 1_000, 100).await;
    wait_until("warm-up closed", async || {
        disconnects.load(Ordering::SeqCst) == 1_000
    })
    .await;
    assert_released(&m, &broker).await;
    let before = rss_kib();

    cycles(&m, "c", 100_000, 1_000).await;
    cycles(&m, "abandoned", 10_000, 10_000).await; // every channel used once and abandoned
    http_cycles(addr, 5_000, 500).await;
    wait_until("every on_disconnect ran", async || {
        disconnects.load(Ordering::SeqCst) == 6_000
    })
    .await;
    assert_released(&m, &broker).await;
    assert_eq!(
        broker.topic_count(),
        0,
        "the broker keeps no abandoned topic"
    );
    let after = rss_kib();
    eprintln!(
        "memory: 100,000 cycles, 10,000 abandoned channels, 5,000 HTTP streams: rss before \
         {before} KiB, after {after} KiB; 0 sessions, 0 channels, 0 subscriptions"
    );
    assert!(
        after < before + 16 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );

    redis_releases_every_subscription().await;
    nats_releases_every_subscription().await;
}

#[cfg(not(feature = "redis"))]
async fn redis_releases_every_subscription() {}

#[cfg(feature = "redis")]
async fn redis_releases_every_subscription() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let prefix = format!("leak{}", std::process::id());
    let broker = ssehub::RedisBroker::builder(&url)
        .prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    broker_cycles(broker, 2_000, 200, 1_000).await;
    // And on the server: no topic channel of ours is still subscribed (the broker's own health
    // channel, `<prefix>:health:<node>`, stays while the broker lives).
    let client = ssehub::backends::redis::redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("{prefix}:*:events");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let left = loop {
        let left: Vec<String> = ssehub::backends::redis::redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(&pattern)
            .query_async(&mut con)
            .await
            .unwrap();
        if left.is_empty() || tokio::time::Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(left.is_empty(), "redis still has subscriptions: {left:?}");
    eprintln!(
        "redis: 2,000 cycles, 1,000 abandoned channels: 0 subscriptions, PUBSUB CHANNELS empty"
    );
}

#[cfg(not(feature = "nats"))]
async fn nats_releases_every_subscription() {}

#[cfg(feature = "nats")]
async fn nats_releases_every_subscription() {
    use ssehub::backends::nats::Mode;
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    for mode in [Mode::JetStream, Mode::Core] {
        let broker = ssehub::NatsBroker::builder(url.clone())
            .prefix(format!("leak{}{mode:?}", std::process::id()))
            .mode(mode)
            .build()
            .await
            .unwrap();
        broker_cycles(broker, 300, 30, 200).await;
        eprintln!("nats {mode:?}: 300 cycles, 200 abandoned channels: 0 subscriptions");
    }
}
