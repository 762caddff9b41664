//! JetStream: events of a topic trimmed while a node was cut off from the server are reported as
//! a gap, even when the topic had delivered nothing on that node yet; events still stored after
//! the outage arrive without one.
//!
//! Node A reaches its own nats-server through a fault proxy, node B directly. The test cuts A
//! (refuses and drops its connections), publishes from B, restores A, and reads A's subscription.

use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, Delivery, Message, Subscription, Topic};
use ssehub_nats::NatsBroker;
use ssehub_nats::async_nats::connection::State;
use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::proxy::TcpProxy;
use ssehub_test_support::server::BrokerServer;

const WAIT: Duration = Duration::from_secs(30);
const HISTORY: usize = 5;

async fn node(url: &str) -> NatsBroker {
    NatsBroker::builder(url)
        .prefix("outage")
        .history(HISTORY)
        .connect_timeout(Duration::from_secs(10))
        .response_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(100))
        .build()
        .await
        .expect("connect")
}

struct Nodes {
    _server: NatsServer,
    proxy: TcpProxy,
    /// Behind the proxy.
    a: NatsBroker,
    /// Direct.
    b: NatsBroker,
}

async fn nodes() -> Option<Nodes> {
    let server = ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)?;
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let a = node(&format!("nats://{}", proxy.addr())).await;
    let b = node(&server.url()).await;
    Some(Nodes {
        _server: server,
        proxy,
        a,
        b,
    })
}

async fn wait_state(broker: &NatsBroker, connected: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while (broker.client().connection_state() == State::Connected) != connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never became {}",
            if connected {
                "connected"
            } else {
                "disconnected"
            }
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Cut A off, publish `n` events to `topic` from B, and let A back in.
async fn outage(nodes: &Nodes, topic: &Topic, n: usize) -> Vec<String> {
    nodes.proxy.refuse(true);
    nodes.proxy.drop_all();
    wait_state(&nodes.a, false).await;
    let mut sent = Vec::new();
    for i in 0..n {
        let data = format!("during-{i}");
        nodes
            .b
            .publish(topic, Message::new(data.clone()))
            .await
            .expect("publish from B");
        sent.push(data);
    }
    nodes.proxy.refuse(false);
    wait_state(&nodes.a, true).await;
    sent
}

async fn next(sub: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("nothing delivered within {WAIT:?}"),
    }
}

fn data(d: &Delivery) -> String {
    match d {
        Delivery::Event(env) => String::from_utf8_lossy(&env.data).into_owned(),
        Delivery::Gap => "<gap>".to_string(),
    }
}

/// After the gap the subscription is live again: an event published now arrives (and nothing
/// from before the gap is replayed after it).
async fn live_after_gap(nodes: &Nodes, topic: &Topic, sub: &mut Subscription) {
    nodes
        .b
        .publish(topic, Message::new("after"))
        .await
        .expect("publish after");
    assert_eq!(data(&next(sub).await), "after");
}

async fn trimmed_during_outage_is_a_gap(before: usize) {
    let Some(nodes) = nodes().await else { return };
    let topic = unique_topic("trimmed");
    for i in 0..before {
        nodes
            .b
            .publish(&topic, Message::new(format!("before-{i}")))
            .await
            .expect("publish before");
    }
    let mut sub = nodes.a.subscribe(&topic).await.expect("subscribe");
    // 20 events while A is away: the first 15 are trimmed (history 5) before A is back.
    outage(&nodes, &topic, 20).await;
    let first = next(&mut sub).await;
    assert_eq!(
        first,
        Delivery::Gap,
        "events trimmed during the outage must be reported as a gap, got {:?} first",
        data(&first)
    );
    live_after_gap(&nodes, &topic, &mut sub).await;
}

/// The topic had never been published to when A subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_during_outage_is_a_gap_for_a_new_topic() {
    trimmed_during_outage_is_a_gap(0).await;
}

/// The topic had history when A subscribed, but A had delivered none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_during_outage_is_a_gap_for_a_topic_with_history() {
    trimmed_during_outage_is_a_gap(2).await;
}

/// Fewer events than the history while A is away: all of them arrive, in order, no gap.
async fn kept_during_outage_arrive(before: usize) {
    let Some(nodes) = nodes().await else { return };
    let topic = unique_topic("kept");
    for i in 0..before {
        nodes
            .b
            .publish(&topic, Message::new(format!("before-{i}")))
            .await
            .expect("publish before");
    }
    let mut sub = nodes.a.subscribe(&topic).await.expect("subscribe");
    let sent = outage(&nodes, &topic, 3).await;
    for want in &sent {
        assert_eq!(&data(&next(&mut sub).await), want);
    }
    live_after_gap(&nodes, &topic, &mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_during_outage_arrive_for_a_new_topic() {
    kept_during_outage_arrive(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_during_outage_arrive_for_a_topic_with_history() {
    kept_during_outage_arrive(1).await;
}

/// A topic that delivered events on A before the outage: the trimmed ones are a gap too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_during_outage_is_a_gap_after_deliveries() {
    let Some(nodes) = nodes().await else { return };
    let topic = unique_topic("delivered");
    let mut sub = nodes.a.subscribe(&topic).await.expect("subscribe");
    nodes
        .b
        .publish(&topic, Message::new("live"))
        .await
        .expect("publish");
    assert_eq!(data(&next(&mut sub).await), "live");
    outage(&nodes, &topic, 20).await;
    assert_eq!(next(&mut sub).await, Delivery::Gap);
    live_after_gap(&nodes, &topic, &mut sub).await;
}
