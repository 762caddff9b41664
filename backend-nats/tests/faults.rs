//! Fault tests: kill the test's own `nats-server -js` during a publishing burst and restart it,
//! or freeze it (SIGSTOP: its sockets stay open, nothing answers) and let it run again.
//!
//! Every wait is bounded; nothing asserts on how long anything took.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::{Broker, Delivery, EventId, Message, Subscription, Topic};
use ssehub_nats::{Mode, NatsBroker};
use ssehub_test_support::faults::{BurstTask, Fault, payload_number};
use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::server::BrokerServer;
use ssehub_test_support::{or_skip, wait_until_within};

const WAIT: Duration = Duration::from_secs(60);

async fn broker(url: &str, mode: Mode) -> NatsBroker {
    NatsBroker::builder(url)
        .prefix("faults")
        .mode(mode)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .ping_interval(Duration::from_millis(500))
        .build()
        .await
        .expect("connect")
}

fn topic(case: &str) -> Topic {
    Topic::new(ssehub_core::conformance::unique_id(case)).expect("topic")
}

/// Publish `n` events that are confirmed (`Ok`), one after another; errors are counted, not
/// retried (an errored event may or may not have been stored).
async fn publish_ok(
    broker: &NatsBroker,
    topic: &Topic,
    next: &mut u64,
    n: usize,
    ok: &mut Vec<(EventId, u64)>,
) {
    let target = ok.len() + n;
    let deadline = tokio::time::Instant::now() + WAIT;
    while ok.len() < target {
        assert!(tokio::time::Instant::now() < deadline, "publishing stalled");
        let i = *next;
        *next += 1;
        match broker.publish(topic, Message::new(i.to_string())).await {
            Ok(id) => ok.push((id, i)),
            Err(e) => {
                assert!(e.is_temporary(), "outage errors must be temporary: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Publish while the server is down: every publish must fail (temporary), none may be `Ok`.
/// Core mode too, right after the kill, before the client noticed: its `Ok` means the server
/// routed the event (a probe sent after it came back on the same connection), which a dead
/// server cannot confirm.
async fn publish_during_outage(broker: &NatsBroker, topic: &Topic, next: &mut u64) {
    for _ in 0..5 {
        let i = *next;
        *next += 1;
        let res = broker.publish(topic, Message::new(i.to_string())).await;
        let err = res.expect_err("a publish while the server is down must not be Ok");
        assert!(err.is_temporary(), "{err}");
    }
}

async fn next_delivery(sub: &mut Subscription) -> Delivery {
    ssehub_test_support::faults::next_delivery(sub, WAIT).await
}

async fn own_server(options: NatsOptions) -> Option<NatsServer> {
    or_skip(NatsServer::start(options).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_resumes_without_loss_after_a_server_restart() {
    jetstream_outage(Fault::Kill).await;
}

/// A frozen server is detected (publishes fail with temporary errors, health fails, the pings
/// drop the half-open connection) and after SIGCONT the subscription resumes without loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_detects_a_frozen_server_and_resumes_without_loss() {
    jetstream_outage(Fault::Freeze).await;
}

async fn jetstream_outage(fault: Fault) {
    let Some(mut server) = own_server(NatsOptions::default()).await else {
        return;
    };
    let url = server.url();
    let publisher = Arc::new(broker(&url, Mode::JetStream).await);
    let subscriber = broker(&url, Mode::JetStream).await;
    let topic = topic("js-restart");
    let mut sub = subscriber.subscribe(&topic).await.expect("subscribe");

    // A publishing burst runs the whole time; the server is killed in the middle of it.
    let burst = BurstTask::spawn(publisher.clone(), topic.clone(), Duration::from_millis(2));
    wait_until_within("no events before the kill", WAIT, async || burst.ok() >= 50).await;
    let connects = subscriber
        .client()
        .statistics()
        .connects
        .load(Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    fault.inject(&mut server);
    wait_until_within("publishes kept succeeding while down", WAIT, async || {
        burst.errors() >= 3
    })
    .await;
    let health = tokio::time::timeout(WAIT, publisher.health())
        .await
        .expect("health must answer (not hang) while the server is away");
    assert!(health.is_err(), "health must fail while the server is away");
    eprintln!(
        "{fault:?}: outage detected (publishes and health failing) after {:?}",
        started.elapsed()
    );
    let ok_before = burst.ok();
    if fault == Fault::Freeze {
        // Three unanswered pings (500 ms apart) drop the half-open connection.
        wait_until_within(
            "the half-open connection to a frozen server was never dropped",
            WAIT,
            async || {
                subscriber.client().connection_state() != async_nats::connection::State::Connected
            },
        )
        .await;
        eprintln!(
            "Freeze: half-open connection dropped after {:?}",
            started.elapsed()
        );
    }
    fault.heal(&mut server).await;
    let back = tokio::time::Instant::now();
    wait_until_within("publishing did not resume", WAIT, async || {
        burst.ok() >= ok_before + 50
    })
    .await;
    eprintln!(
        "{fault:?}: publishing again {:?} after the server came back",
        back.elapsed()
    );
    let ok: Vec<(EventId, u64)> = burst
        .stop()
        .await
        .ok
        .into_iter()
        .map(|(n, id)| (id, n))
        .collect();

    // Every confirmed event arrives, in order; events whose publish errored may arrive too
    // (an error means "maybe lost"), but never out of order and never twice.
    let mut received: Vec<(EventId, u64)> = Vec::new();
    let mut want = ok.iter().peekable();
    while want.peek().is_some() {
        match next_delivery(&mut sub).await {
            Delivery::Event(env) => {
                let n = payload_number(&env.data);
                if let Some((_, last)) = received.last() {
                    assert!(
                        n > *last,
                        "event {n} after {last}: out of order or duplicated"
                    );
                }
                if want.peek().is_some_and(|(_, i)| *i == n) {
                    let (id, _) = want.next().expect("peeked");
                    assert_eq!(&env.id, id, "event {n} has another id than its publish");
                } else {
                    assert!(
                        !ok.iter().any(|(_, i)| *i == n),
                        "confirmed event {n} arrived out of order"
                    );
                }
                received.push((env.id, n));
            }
            Delivery::Gap => panic!("jetstream mode must recover, not report a gap"),
        }
    }
    // The restarted server still has the stream (same epoch): ids before and after order.
    let (first, last) = (&ok[0].0, &ok[ok.len() - 1].0);
    assert_eq!(
        publisher.id_order(first, last),
        Some(std::cmp::Ordering::Less)
    );
    assert!(
        subscriber
            .client()
            .statistics()
            .connects
            .load(Ordering::Relaxed)
            > connects,
        "the subscriber must have reconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_mode_reports_a_gap_after_a_server_restart() {
    core_outage(Fault::Kill).await;
}

/// Core NATS keeps nothing: a frozen server is detected by the pings, reported as a gap, and
/// live events flow again after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_mode_reports_a_gap_for_a_frozen_server() {
    core_outage(Fault::Freeze).await;
}

async fn core_outage(fault: Fault) {
    let Some(mut server) = own_server(NatsOptions::default()).await else {
        return;
    };
    let url = server.url();
    let publisher = Arc::new(broker(&url, Mode::Core).await);
    let subscriber = broker(&url, Mode::Core).await;
    let topic = topic("core-restart");
    let mut sub = subscriber.subscribe(&topic).await.expect("subscribe");

    let mut ok = Vec::new();
    let mut next = 0;
    publish_ok(&publisher, &topic, &mut next, 20, &mut ok).await;
    for (id, _) in &ok {
        match next_delivery(&mut sub).await {
            Delivery::Event(env) => assert_eq!(&env.id, id),
            Delivery::Gap => panic!("gap before the outage"),
        }
    }
    fault.inject(&mut server);
    if fault == Fault::Kill {
        publish_during_outage(&publisher, &topic, &mut next).await;
    }
    assert_eq!(
        next_delivery(&mut sub).await,
        Delivery::Gap,
        "core mode must report the outage as a gap"
    );
    if fault == Fault::Freeze {
        // Publishes to the frozen server fail too (nothing confirms them), but each waits for
        // the response timeout; once the pings dropped the connection, they fail at once.
        wait_until_within(
            "the publisher's half-open connection was never dropped",
            WAIT,
            async || {
                publisher.client().connection_state() != async_nats::connection::State::Connected
            },
        )
        .await;
        publish_during_outage(&publisher, &topic, &mut next).await;
    }
    fault.heal(&mut server).await;
    // After the reconnect (and resubscribe), live events flow again. Publish until one arrives:
    // the subscriber's resubscription may land a moment after the publisher's reconnect.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event after reconnect"
        );
        let mut batch = Vec::new();
        publish_ok(&publisher, &topic, &mut next, 1, &mut batch).await;
        match tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
            Ok(Some(Delivery::Event(_))) => break,
            Ok(Some(Delivery::Gap)) | Err(_) => continue,
            Ok(None) => panic!("subscription ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_while_the_server_is_down() {
    let Some(mut server) = own_server(NatsOptions::default()).await else {
        return;
    };
    let b = broker(&server.url(), Mode::JetStream).await;
    b.health().await.expect("healthy");
    server.kill();
    let err = b.health().await.expect_err("health while down");
    assert!(err.is_temporary());
    server.restart().await.expect("restart");
    wait_until_within("never healthy again", WAIT, async || {
        b.health().await.is_ok()
    })
    .await;
}

/// NATS cuts a client that reads too slowly (a write to it blocks past `write_deadline`, or its
/// pending bytes pass `max_pending`: "Slow Consumer Detected"). Here the subscribing broker reaches
/// the server through a proxy throttled to 16 KiB/s while another broker publishes 4 MiB
/// directly; the server disconnects it, it reconnects, its reconnect scan reads what it missed
/// from the stream, and the subscription receives every event in order, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_subscriber_disconnected_for_reading_too_slowly_loses_nothing() {
    let options = NatsOptions::default().with_config("write_deadline: \"500ms\"\n");
    let Some(server) = own_server(options).await else {
        return;
    };
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = ssehub_test_support::proxy::TcpProxy::start(upstream)
        .await
        .expect("proxy");
    // A long ping interval: the subscriber's own pings (stuck behind the backlog) must not drop
    // the connection first; the server is the one to cut it here.
    let subscriber = NatsBroker::builder(format!("nats://{}", proxy.addr()))
        .prefix("faults")
        .connect_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(600))
        .build()
        .await
        .expect("connect through the proxy");
    let publisher = broker(&server.url(), Mode::JetStream).await;
    let topic = topic("slow-reader");
    let mut sub = subscriber.subscribe(&topic).await.expect("subscribe");

    proxy.bandwidth(16 * 1024);
    // 1000 events of 4 KiB, published on a direct connection.
    let ids = ssehub_core::conformance::publish_backlog(&publisher, &topic, 1000, 4096).await;
    const CUT: &str = "Slow Consumer Detected";
    wait_until_within(
        "nats-server never disconnected the slow subscriber",
        WAIT,
        async || server.log().contains(CUT),
    )
    .await;
    proxy.bandwidth(0);
    ssehub_core::conformance::expect_exactly(&mut sub, &ids).await;
    let cut = server.log().matches(CUT).count();
    eprintln!(
        "slow reader: nats-server cut the subscriber {cut} time(s); 1000/1000 events arrived in order"
    );
}

/// A JetStream publish whose acknowledgement is lost (stored by the server, the ack thrown away
/// by the proxy) and then retried with its idempotency key is stored once: the stream's
/// duplicate window knows its `Nats-Msg-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_after_a_lost_ack_is_stored_once() {
    let Some(server) = own_server(NatsOptions::default()).await else {
        return;
    };
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = ssehub_test_support::proxy::TcpProxy::start(upstream)
        .await
        .expect("proxy");
    let publisher = broker(&format!("nats://{}", proxy.addr()), Mode::JetStream).await;
    let observer = broker(&server.url(), Mode::JetStream).await;
    let id =
        ssehub_test_support::faults::retry_after_a_lost_reply(&publisher, &observer, &proxy, WAIT)
            .await;
    eprintln!("lost ack: the retry answered {id}, stored once");
}
