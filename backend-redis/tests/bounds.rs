//! Bounds of the subscriber: its push buffer, and the fill after a reconnect (per topic, paged).
//! Each test starts its own `redis-server` (they freeze it, cut it off behind a proxy, or change
//! its configuration); the shared server is never touched.
//!
//! Every wait is bounded; nothing asserts on how long anything took.

use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::conformance::{expect_exactly, publish_backlog, unique_topic};
use ssehub_core::{Broker, Delivery, EventId, Message, Subscription, Topic};
use ssehub_redis::{RedisBroker, RedisBrokerBuilder, redis};
use ssehub_test_support::proxy::TcpProxy;
use ssehub_test_support::redis::{RedisOptions, RedisServer};
use ssehub_test_support::server::BrokerServer;
use ssehub_test_support::skip;

const WAIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "ssehub-bounds";

async fn own_server() -> Option<RedisServer> {
    match RedisServer::start(RedisOptions::new()).await {
        Ok(s) => Some(s),
        Err(why) => {
            skip(&why);
            None
        }
    }
}

fn builder(url: &str) -> RedisBrokerBuilder {
    RedisBroker::builder(url)
        .prefix(PREFIX)
        .history(10_000)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(200))
}

async fn broker(url: &str) -> RedisBroker {
    builder(url).build().await.expect("connect")
}

/// A plain connection to the test's own server, for `CONFIG`, `SET` and `CLIENT LIST`.
async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

/// Ids of the server's pub/sub clients (the brokers' subscriber connections), sorted.
async fn pubsub_clients(con: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(con)
        .await
        .expect("client list");
    let mut ids: Vec<String> = list
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

async fn next(sub: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("nothing delivered within {WAIT:?}"),
    }
}

async fn publish(broker: &RedisBroker, topic: &Topic, data: &str) -> EventId {
    broker
        .publish(topic, Message::new(data.to_owned()))
        .await
        .expect("publish")
}

/// Cut the subscribing broker off (every connection closed, new ones refused), run `meanwhile`,
/// then let it reconnect.
async fn outage<T>(proxy: &TcpProxy, meanwhile: impl AsyncFnOnce() -> T) -> T {
    proxy.refuse(true);
    proxy.drop_all();
    let out = meanwhile().await;
    proxy.refuse(false);
    out
}

// --- A: the push buffer ----------------------------------------------------------------------

/// A burst larger than the push buffer arrives while the subscriber task is busy: the
/// connection is replaced (the buffer stayed bounded) and every event still arrives, in order,
/// with no gap, filled from the stream.
///
/// The burst is made deterministic by freezing the server: the subscriber task is then waiting
/// for the server (subscribing another topic), and 200 publishes are queued behind the freeze;
/// on thaw the server answers them all before it can see the task's next command, so the 200
/// messages reach the connection while the task still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_push_buffer_replaces_the_connection_and_loses_nothing() {
    let Some(server) = own_server().await else {
        return;
    };
    let subscriber = builder(&server.url())
        .push_buffer(8)
        // The freeze must not look like a dead server.
        .ping_interval(Duration::from_secs(600))
        .build()
        .await
        .expect("connect");
    let publisher = broker(&server.url()).await;
    let mut admin_con = admin(&server).await;
    let topic = unique_topic("push-burst");
    let mut sub = subscriber.subscribe(&topic).await.expect("subscribe");
    let before = pubsub_clients(&mut admin_con).await;

    assert!(server.freeze(), "SIGSTOP");
    let other = unique_topic("push-burst-other");
    let busy = {
        let b = subscriber.clone();
        tokio::spawn(async move { b.subscribe(&other).await })
    };
    // Let the subscriber task send its command to the frozen server (not an assertion: a late
    // command only makes the burst arrive while the task is idle, and the test then fails).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publishes: Vec<_> = (0..200)
        .map(|i| {
            let p = publisher.clone();
            let t = topic.clone();
            tokio::spawn(async move { publish(&p, &t, &i.to_string()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.thaw(), "SIGCONT");

    let mut ids = Vec::new();
    for p in publishes {
        ids.push(p.await.expect("join"));
    }
    ids.sort_by(|a, b| publisher.id_order(a, b).expect("same epoch"));
    let _other_sub = busy
        .await
        .expect("join")
        .expect("subscribe the other topic");
    expect_exactly(&mut sub, &ids).await;

    // The old connection is closed a moment after it is dropped: wait for the list to settle.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let after = pubsub_clients(&mut admin_con).await;
        if after.len() == before.len() && after != before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the overflowing subscriber connection was not replaced: {before:?} -> {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Live delivery goes on.
    let live = publish(&publisher, &topic, "live").await;
    expect_exactly(&mut sub, &[live]).await;
}

// --- B: the fill after a reconnect -----------------------------------------------------------

/// One topic's fill fails (its stream key holds a string, so Redis answers `WRONGTYPE`): that
/// topic gets a gap, and the others are filled and go on live, instead of the whole reconnect
/// failing and starting over forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_topics_failed_fill_is_its_gap_and_the_others_go_on() {
    let Some(server) = own_server().await else {
        return;
    };
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let subscriber = broker(&format!("redis://{}", proxy.addr())).await;
    let publisher = broker(&server.url()).await;
    let mut admin_con = admin(&server).await;
    let good = unique_topic("fill-good");
    let also_good = unique_topic("fill-also-good");
    let bad = unique_topic("fill-bad");
    let mut sub_good = subscriber.subscribe(&good).await.expect("subscribe");
    let mut sub_also = subscriber.subscribe(&also_good).await.expect("subscribe");
    let mut sub_bad = subscriber.subscribe(&bad).await.expect("subscribe");
    let first = publish(&publisher, &bad, "before").await;
    expect_exactly(&mut sub_bad, &[first]).await;

    let (ids, also_ids) = outage(&proxy, async || {
        let ids = publish_backlog(&publisher, &good, 5, 10).await;
        let also_ids = publish_backlog(&publisher, &also_good, 5, 10).await;
        let key = format!("{PREFIX}:{{{bad}}}:stream");
        let _: () = redis::pipe()
            .del(&key)
            .set(&key, "not a stream")
            .query_async(&mut admin_con)
            .await
            .expect("corrupt the bad topic's stream");
        (ids, also_ids)
    })
    .await;

    expect_exactly(&mut sub_good, &ids).await;
    expect_exactly(&mut sub_also, &also_ids).await;
    assert_eq!(next(&mut sub_bad).await, Delivery::Gap);
    let live = publish(&publisher, &good, "live").await;
    expect_exactly(&mut sub_good, &[live]).await;
}

/// A backlog far larger than one reply may be (the server closes a normal client whose reply
/// passes 1 MiB) is filled in pages: every event arrives, in order, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_is_filled_in_pages() {
    let Some(server) = own_server().await else {
        return;
    };
    let mut admin_con = admin(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("normal 1mb 0 0")
        .query_async(&mut admin_con)
        .await
        .expect("config set");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let subscriber = broker(&format!("redis://{}", proxy.addr())).await;
    let publisher = broker(&server.url()).await;
    let topic = unique_topic("fill-pages");
    let mut sub = subscriber.subscribe(&topic).await.expect("subscribe");
    let first = publish(&publisher, &topic, "first").await;
    expect_exactly(&mut sub, &[first]).await;

    // 3,000 events of 1 KiB: about 3 MiB, three times what one reply may hold.
    let ids = outage(&proxy, async || {
        publish_backlog(&publisher, &topic, 3000, 1024).await
    })
    .await;
    expect_exactly(&mut sub, &ids).await;
}
