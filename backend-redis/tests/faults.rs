//! Fault tests: each starts its own `redis-server` and, during a publishing burst, kills and
//! restarts it on the same port, freezes it (SIGSTOP: connections stay open, nothing answers),
//! or makes it disconnect us for reading too slowly. The shared server is never touched.
//!
//! Every wait is bounded; nothing asserts on how long anything took (durations are printed for
//! RELIABILITY.md).

use std::sync::Arc;
use std::time::Duration;

use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, Delivery, EventId, Message, Replay, Subscription, Topic};
use ssehub_redis::RedisBroker;
use ssehub_test_support::faults::{Burst, BurstTask, Fault, payload_number};
use ssehub_test_support::redis::{RedisOptions, RedisServer};
use ssehub_test_support::server::BrokerServer;
use ssehub_test_support::{or_skip, wait_until_within};

const WAIT: Duration = Duration::from_secs(30);

async fn own_server(persistent: bool) -> Option<RedisServer> {
    or_skip(RedisServer::start(RedisOptions::new().persistent(persistent)).await)
}

async fn broker(url: &str) -> RedisBroker {
    broker_pinging(url, Duration::from_millis(500)).await
}

async fn broker_pinging(url: &str, ping: Duration) -> RedisBroker {
    RedisBroker::builder(url)
        .prefix("ssehub-faults")
        .history(10_000)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .health_timeout(Duration::from_secs(1))
        .ping_interval(ping)
        .reconnect_max_delay(Duration::from_millis(200))
        .build()
        .await
        .expect("connect")
}

/// A plain connection to the test's own server, for `CONFIG`, `INFO` and `CLIENT LIST`.
async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

/// Ids of the server's pub/sub clients (the brokers' subscriber connections).
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
    ssehub_test_support::faults::next_delivery(sub, WAIT).await
}

async fn wait_until(what: &str, cond: impl AsyncFnMut() -> bool) {
    wait_until_within(what, WAIT, cond).await;
}

/// Take the server away mid-burst (`fault`), bring it back, and wait until the broker has
/// recovered; returns what the burst saw and two subscriptions to check.
async fn outage(
    server: &mut RedisServer,
    broker: &RedisBroker,
    topic: &Topic,
    fault: Fault,
) -> (Burst, Vec<Subscription>) {
    let subs = vec![
        broker.subscribe(topic).await.expect("subscribe"),
        broker.subscribe(topic).await.expect("subscribe"),
    ];
    let burst = BurstTask::spawn(
        Arc::new(broker.clone()),
        topic.clone(),
        Duration::from_millis(3),
    );

    wait_until("50 publishes before the kill", async || burst.ok() >= 50).await;
    let started = tokio::time::Instant::now();
    fault.inject(server);
    let before = burst.ok();
    // Detection: publishes fail (time out) instead of hanging, and health reports the outage.
    let errors = if fault == Fault::Freeze { 3 } else { 10 };
    wait_until("publishes failing during the outage", async || {
        burst.errors() >= errors
    })
    .await;
    let health = tokio::time::timeout(WAIT, broker.health())
        .await
        .expect("health must answer (not hang) while redis is away");
    assert!(health.is_err(), "health must fail while redis is away");
    eprintln!(
        "{fault:?}: outage detected (publishes failing, health failing) after {:?}",
        started.elapsed()
    );
    if fault == Fault::Freeze {
        // Stay frozen past the subscriber's ping interval plus its timeouts, so its half-open
        // connection is noticed and dropped too.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    fault.heal(server).await;
    let thawed = tokio::time::Instant::now();
    wait_until("50 publishes after the restart", async || {
        burst.ok() >= before + 50
    })
    .await;
    wait_until("health after the restart", async || {
        broker.health().await.is_ok()
    })
    .await;
    eprintln!(
        "{fault:?}: healthy again {:?} after the server came back",
        thawed.elapsed()
    );
    // Health means the subscriber is back and caught up: publish some more after it.
    let recovered = burst.ok();
    wait_until("publishes after recovery", async || {
        burst.ok() >= recovered + 10
    })
    .await;
    let burst = burst.stop().await;
    assert!(
        !burst.errors.is_empty(),
        "publishes during the outage must fail"
    );
    eprintln!(
        "burst: {} published, {} refused during the outage",
        burst.ok.len(),
        burst.errors.len()
    );
    (burst, subs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_appendfsync_always_loses_nothing() {
    let Some(mut server) = own_server(true).await else {
        return;
    };
    let broker = broker(&server.url()).await;
    let topic = unique_topic("durable");
    let (burst, mut subs) = outage(&mut server, &broker, &topic, Fault::Kill).await;
    assert_everything_arrived(&broker, &topic, &burst, &mut subs).await;
}

/// Every Ok-published event of `burst` reached every subscription, in order, with no gap, and
/// is still in the history.
async fn assert_everything_arrived(
    broker: &RedisBroker,
    topic: &Topic,
    burst: &Burst,
    subs: &mut [Subscription],
) {
    let failed: std::collections::HashSet<u64> = burst.errors.iter().copied().collect();
    for sub in subs.iter_mut() {
        // Every Ok-published event arrives, in order. A publish that failed may still have
        // been applied (the reply was lost with the connection), so it may arrive too.
        let mut expected = burst.ok.iter().peekable();
        while let Some((n, id)) = expected.peek() {
            match next(sub).await {
                Delivery::Gap => panic!("gap although the server kept every event"),
                Delivery::Event(env) => {
                    let got = payload_number(&env.data);
                    if got == *n {
                        assert_eq!(&env.id, id, "event {n} arrived with another id");
                        expected.next();
                    } else {
                        assert!(
                            failed.contains(&got),
                            "event {got} arrived out of order (expected {n})"
                        );
                    }
                }
            }
        }
    }
    // History survived too: replay from the first id answers every later Ok-published event.
    let (_, first) = &burst.ok[0];
    match broker
        .replay(topic, first, usize::MAX)
        .await
        .expect("replay")
    {
        Replay::Events(events) => {
            let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
            for (n, id) in &burst.ok[1..] {
                assert!(ids.contains(id), "event {n} missing from history");
            }
        }
        Replay::Gap(_) => panic!("history lost although the server kept it"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_yields_gap() {
    let Some(mut server) = own_server(false).await else {
        return;
    };
    let broker = broker(&server.url()).await;
    let topic = unique_topic("volatile");
    let (burst, mut subs) = outage(&mut server, &broker, &topic, Fault::Kill).await;
    let before_kill: EventId = burst.ok[0].1.clone();
    for sub in &mut subs {
        // Events up to the kill arrive; then the history is gone with the server: a gap.
        let mut saw_gap = false;
        let mut last_after_gap = None;
        let (last_n, last_id) = burst.ok.last().expect("published");
        while last_after_gap.as_ref() != Some(last_id) {
            match next(sub).await {
                Delivery::Gap => saw_gap = true,
                Delivery::Event(env) if saw_gap => last_after_gap = Some(env.id),
                Delivery::Event(env) => {
                    assert!(
                        &env.id != last_id,
                        "event {last_n} arrived without a gap after losing the server's data"
                    );
                }
            }
        }
        assert!(saw_gap, "a restart without persistence must yield a gap");
    }
    // An id from before the restart answers a gap (new epoch).
    assert_eq!(
        broker
            .replay(&topic, &before_kill, usize::MAX)
            .await
            .expect("replay"),
        Replay::Gap(ssehub_core::GapCause::EpochChanged)
    );
    // And the live feed works again.
    let id = broker
        .publish(&topic, Message::new("after"))
        .await
        .expect("publish after recovery");
    for sub in &mut subs {
        loop {
            if let Delivery::Event(env) = next(sub).await
                && env.id == id
            {
                break;
            }
        }
    }
}

/// A frozen server (SIGSTOP: its sockets stay open, nothing answers) is detected: publishes fail
/// with temporary errors instead of hanging, health fails, and the subscriber's pings notice its
/// half-open connection and drop it. After SIGCONT the broker reconnects, fills what the
/// subscriptions missed from the stream, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_detected_and_recovered_without_loss() {
    let Some(mut server) = own_server(false).await else {
        return;
    };
    let broker = broker(&server.url()).await;
    let mut admin_con = admin(&server).await;
    let topic = unique_topic("frozen");
    let before = pubsub_clients(&mut admin_con).await;
    assert_eq!(
        before.len(),
        1,
        "the broker's subscriber connection: {before:?}"
    );
    let (burst, mut subs) = outage(&mut server, &broker, &topic, Fault::Freeze).await;
    assert_everything_arrived(&broker, &topic, &burst, &mut subs).await;
    // The half-open subscriber connection was noticed and replaced by a new one.
    let now = pubsub_clients(&mut admin_con).await;
    assert_eq!(
        now.len(),
        1,
        "one subscriber connection per broker: {now:?}"
    );
    assert_ne!(
        now, before,
        "the subscriber connection must have been replaced"
    );
}

/// Redis drops a subscriber that reads too slowly (`client-output-buffer-limit pubsub`). Here
/// the subscribing broker reaches Redis through a proxy throttled to 16 KiB/s while another
/// broker publishes 4 MiB directly; Redis disconnects it, it reconnects and fills from the
/// stream, and its subscription receives every event in order with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_disconnected_for_reading_too_slowly_loses_nothing() {
    let Some(server) = own_server(false).await else {
        return;
    };
    let mut admin_con = admin(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 256kb 64kb 1")
        .query_async(&mut admin_con)
        .await
        .expect("config set");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = ssehub_test_support::proxy::TcpProxy::start(upstream)
        .await
        .expect("proxy");
    // A long ping interval: the subscriber's own pings (stuck behind the backlog) must not
    // drop the connection first; Redis is the one to cut it here.
    let subscriber = broker_pinging(
        &format!("redis://{}", proxy.addr()),
        Duration::from_secs(600),
    )
    .await;
    let publisher = broker(&server.url()).await;
    let topic = unique_topic("slow-reader");
    let mut sub = subscriber.subscribe(&topic).await.expect("subscribe");

    proxy.bandwidth(16 * 1024);
    // 1000 events of 4 KiB, published on a direct connection.
    let ids = ssehub_core::conformance::publish_backlog(&publisher, &topic, 1000, 4096).await;
    const CUT: &str = "for overcoming of output buffer limits";
    wait_until("redis disconnecting the slow subscriber", async || {
        server.log().contains(CUT)
    })
    .await;
    proxy.bandwidth(0);
    ssehub_core::conformance::expect_exactly(&mut sub, &ids).await;
    let dropped = server.log().matches(CUT).count();
    eprintln!(
        "slow reader: redis disconnected the subscriber {dropped} time(s); 1000/1000 events arrived in order"
    );
}

/// A publish whose reply is lost (carried out by Redis, the answer thrown away by the proxy) and
/// then retried with its idempotency key is stored once: the publish script finds the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_after_a_lost_reply_is_stored_once() {
    let Some(server) = own_server(false).await else {
        return;
    };
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = ssehub_test_support::proxy::TcpProxy::start(upstream)
        .await
        .expect("proxy");
    let publisher = broker(&format!("redis://{}", proxy.addr())).await;
    let observer = broker(&server.url()).await;
    let id =
        ssehub_test_support::faults::retry_after_a_lost_reply(&publisher, &observer, &proxy, WAIT)
            .await;
    eprintln!("lost reply: the retry answered {id}, stored once");
}
