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
use ssehub_test_support::nats::{NatsOptions, NatsServer};

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
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("nothing delivered within {WAIT:?}"),
    }
}

/// What a background publisher saw: confirmed events and errors.
#[derive(Default)]
struct Burst {
    ok: Vec<(EventId, u64)>,
    errors: usize,
}

/// How the test takes the server away.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// SIGKILL, then start it again on the same port and store.
    Kill,
    /// SIGSTOP until the clients' pings have dropped their half-open connections, then SIGCONT.
    Freeze,
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
    let Some(mut server) = NatsServer::start(NatsOptions::default()).await else {
        return;
    };
    let url = server.url();
    let publisher = Arc::new(broker(&url, Mode::JetStream).await);
    let subscriber = broker(&url, Mode::JetStream).await;
    let topic = topic("js-restart");
    let mut sub = subscriber.subscribe(&topic).await.expect("subscribe");

    // A publishing burst runs the whole time; the server is killed in the middle of it.
    let burst = Arc::new(std::sync::Mutex::new(Burst::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = {
        let (publisher, topic, burst, stop) = (
            publisher.clone(),
            topic.clone(),
            burst.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let res = publisher.publish(&topic, Message::new(i.to_string())).await;
                {
                    let mut b = burst.lock().expect("lock");
                    match res {
                        Ok(id) => b.ok.push((id, i)),
                        Err(e) => {
                            assert!(e.is_temporary(), "outage errors must be temporary: {e}");
                            b.errors += 1;
                        }
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let poll = |f: &dyn Fn(&Burst) -> bool| f(&burst.lock().expect("lock"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !poll(&|b| b.ok.len() >= 50) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no events before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connects = subscriber
        .client()
        .statistics()
        .connects
        .load(Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    match fault {
        Fault::Kill => server.kill(),
        Fault::Freeze => assert!(server.freeze(), "SIGSTOP nats-server"),
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while !poll(&|b| b.errors >= 3) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishes kept succeeding while down"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let health = tokio::time::timeout(WAIT, publisher.health())
        .await
        .expect("health must answer (not hang) while the server is away");
    assert!(health.is_err(), "health must fail while the server is away");
    eprintln!(
        "{fault:?}: outage detected (publishes and health failing) after {:?}",
        started.elapsed()
    );
    let ok_before = burst.lock().expect("lock").ok.len();
    match fault {
        Fault::Kill => server.restart().await.expect("restart nats-server"),
        Fault::Freeze => {
            // Three unanswered pings (500 ms apart) drop the half-open connection.
            let deadline = tokio::time::Instant::now() + WAIT;
            while subscriber.client().connection_state() == async_nats::connection::State::Connected
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the half-open connection to a frozen server was never dropped"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!(
                "Freeze: half-open connection dropped after {:?}",
                started.elapsed()
            );
            assert!(server.thaw(), "SIGCONT nats-server");
        }
    }
    let back = tokio::time::Instant::now();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !poll(&|b| b.ok.len() >= ok_before + 50) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing did not resume"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "{fault:?}: publishing again {:?} after the server came back",
        back.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Release);
    task.await.expect("publisher task");
    let ok = std::mem::take(&mut burst.lock().expect("lock").ok);

    // Every confirmed event arrives, in order; events whose publish errored may arrive too
    // (an error means "maybe lost"), but never out of order and never twice.
    let mut received: Vec<(EventId, u64)> = Vec::new();
    let mut want = ok.iter().peekable();
    while want.peek().is_some() {
        match next_delivery(&mut sub).await {
            Delivery::Event(env) => {
                let n: u64 = std::str::from_utf8(&env.data)
                    .expect("utf-8")
                    .parse()
                    .expect("number");
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
    let Some(mut server) = NatsServer::start(NatsOptions::default()).await else {
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
    match fault {
        Fault::Kill => server.kill(),
        Fault::Freeze => assert!(server.freeze(), "SIGSTOP nats-server"),
    }
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
        let deadline = tokio::time::Instant::now() + WAIT;
        while publisher.client().connection_state() == async_nats::connection::State::Connected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the publisher's half-open connection was never dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        publish_during_outage(&publisher, &topic, &mut next).await;
    }
    match fault {
        Fault::Kill => server.restart().await.expect("restart nats-server"),
        Fault::Freeze => assert!(server.thaw(), "SIGCONT nats-server"),
    }
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
    let Some(mut server) = NatsServer::start(NatsOptions::default()).await else {
        return;
    };
    let b = broker(&server.url(), Mode::JetStream).await;
    b.health().await.expect("healthy");
    server.kill();
    let err = b.health().await.expect_err("health while down");
    assert!(err.is_temporary());
    server.restart().await.expect("restart");
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.health().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// NATS cuts a client that reads too slowly (a write to it blocks past `write_deadline`, or its
/// pending bytes pass `max_pending`: "Slow Consumer Detected"). Here the subscribing broker reaches
/// the server through a proxy throttled to 16 KiB/s while another broker publishes 4 MiB
/// directly; the server disconnects it, it reconnects, its ordered consumer resumes after the
/// last sequence it delivered, and the subscription receives every event in order, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_subscriber_disconnected_for_reading_too_slowly_loses_nothing() {
    let options = NatsOptions::default().with_config("write_deadline: \"500ms\"\n");
    let Some(server) = NatsServer::start(options).await else {
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
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.log().contains(CUT) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server never disconnected the slow subscriber"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.bandwidth(0);
    ssehub_core::conformance::expect_exactly(&mut sub, &ids).await;
    let cut = server.log().matches(CUT).count();
    eprintln!(
        "slow reader: nats-server cut the subscriber {cut} time(s); 1000/1000 events arrived in order"
    );
}
