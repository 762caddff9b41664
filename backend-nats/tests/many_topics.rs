//! JetStream mode at 10,000 live topics on one node: no JetStream consumer per topic, every event
//! of every topic delivered once and in order, and a server restart recovered with every topic
//! intact.
//!
//! Node A holds the subscriptions (through a proxy that can cut it off), node B publishes, both
//! on a nats-server of the test's own (killed and started again on the same port and data).

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use ssehub_core::{Broker, Delivery, EventId, Message, Subscription, Topic};
use ssehub_nats::NatsBroker;
use ssehub_nats::async_nats::connection::State;
use ssehub_nats::async_nats::jetstream;
use ssehub_test_support::faults::Fault;
use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::proxy::TcpProxy;
use ssehub_test_support::server::BrokerServer;

const TOPICS: usize = 10_000;
/// Events per round, each to a topic picked at random.
const EVENTS: usize = 3_000;
const WAIT: Duration = Duration::from_secs(60);
const STREAM: &str = "MANY";

async fn node(url: &str) -> NatsBroker {
    NatsBroker::builder(url)
        .prefix("many")
        .stream(STREAM)
        .connect_timeout(Duration::from_secs(10))
        .response_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(200))
        .build()
        .await
        .expect("connect")
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).expect("fits") % n
    }
}

/// Publish `EVENTS` events from `b` to random topics; the ids each topic must deliver, in order.
async fn round(b: &NatsBroker, topics: &[Topic], rng: &mut Lcg, tag: &str) -> Vec<Vec<EventId>> {
    let mut expected = vec![Vec::new(); topics.len()];
    for i in 0..EVENTS {
        let t = rng.below(topics.len());
        let id = loop {
            // The first publishes after a restart may find B still reconnecting.
            match b
                .publish(&topics[t], Message::new(format!("{tag}-{i}")))
                .await
            {
                Ok(id) => break id,
                Err(e) if e.is_temporary() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("publish: {e}"),
            }
        };
        expected[t].push(id);
    }
    expected
}

/// Every subscription delivers exactly its expected ids, in order, and nothing else.
async fn check(subs: &mut [Subscription], expected: &[Vec<EventId>], what: &str) {
    for (i, (sub, ids)) in subs.iter_mut().zip(expected).enumerate() {
        for id in ids {
            match tokio::time::timeout(WAIT, sub.next()).await {
                Ok(Some(Delivery::Event(env))) => {
                    assert_eq!(&env.id, id, "{what}: topic {i} delivered another event")
                }
                other => panic!("{what}: topic {i} waited for {id}, got {other:?}"),
            }
        }
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        if let Some(extra) = sub.next().now_or_never() {
            panic!("{what}: topic {i} delivered more than was published: {extra:?}");
        }
    }
}

async fn consumers(b: &NatsBroker) -> usize {
    let js = jetstream::new(b.client().clone());
    let mut stream = js.get_stream(STREAM).await.expect("stream");
    stream.info().await.expect("info").state.consumer_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_topics_need_no_consumer_each_and_survive_a_restart() {
    let Some(mut server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let a = node(&format!("nats://{}", proxy.addr())).await;
    let b = node(&server.url()).await;
    let topics: Vec<Topic> = (0..TOPICS)
        .map(|i| Topic::new(format!("discussion:{i}")).expect("topic"))
        .collect();
    let started = std::time::Instant::now();
    let mut subs: Vec<Subscription> = futures_util::stream::iter(&topics)
        .map(|t| a.subscribe(t))
        .buffered(64)
        .map(|s| s.expect("subscribe"))
        .collect()
        .await;
    eprintln!("{TOPICS} topics subscribed in {:?}", started.elapsed());
    assert_eq!(
        consumers(&b).await,
        0,
        "live topics must not hold JetStream consumers"
    );

    let mut rng = Lcg(0x5eed);
    let expected = round(&b, &topics, &mut rng, "live").await;
    check(&mut subs, &expected, "live").await;

    // The server dies and comes back on the same port and data; B publishes as soon as it can,
    // while A may still be reconnecting: what A missed comes from its reconnect scan.
    Fault::Kill.inject(&mut server);
    Fault::Kill.heal(&mut server).await;
    let restarted = std::time::Instant::now();
    let expected = round(&b, &topics, &mut rng, "after").await;
    check(&mut subs, &expected, "after the restart").await;
    eprintln!(
        "after the restart: {EVENTS} events over {TOPICS} topics delivered in {:?}; consumers now: {}",
        restarted.elapsed(),
        consumers(&b).await
    );

    // A alone is cut off while B publishes: everything comes from A's one reconnect scan.
    proxy.refuse(true);
    proxy.drop_all();
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.client().connection_state() == State::Connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never disconnected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let expected = round(&b, &topics, &mut rng, "outage").await;
    proxy.refuse(false);
    let back = std::time::Instant::now();
    check(&mut subs, &expected, "after A's outage").await;
    eprintln!(
        "after A's outage: {EVENTS} missed events over {TOPICS} topics recovered in {:?}; consumers now: {}",
        back.elapsed(),
        consumers(&b).await
    );
    assert_eq!(a.active_subscriptions(), TOPICS);
}
