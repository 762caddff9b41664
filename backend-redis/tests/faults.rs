//! Fault tests: each starts its own `redis-server`, kills it during a publishing burst and
//! restarts it on the same port. The shared server is never touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, Delivery, EventId, Message, Replay, Subscription, Topic};
use ssehub_redis::RedisBroker;
use ssehub_test_support::redis::{RedisOptions, RedisServer};
use ssehub_test_support::skip;
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(30);

fn own_server(persistent: bool) -> Option<RedisServer> {
    match RedisServer::start(RedisOptions::new().persistent(persistent)) {
        Ok(s) => Some(s),
        Err(why) => {
            skip(&why);
            None
        }
    }
}

async fn broker(url: &str) -> RedisBroker {
    RedisBroker::builder(url)
        .expect("url")
        .key_prefix("ssehub-faults")
        .history(10_000)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .reconnect_max_delay(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect")
}

async fn next(sub: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("nothing delivered within {WAIT:?}"),
    }
}

/// What a publishing burst saw: every publish's payload with its result.
#[derive(Default)]
struct Burst {
    ok: Vec<(u64, EventId)>,
    errors: Vec<u64>,
}

/// Publish `0, 1, 2, …` to `topic` until `stop`, a few milliseconds apart.
fn spawn_burst(
    broker: RedisBroker,
    topic: Topic,
    stop: Arc<AtomicBool>,
    burst: Arc<Mutex<Burst>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            let res = broker.publish(&topic, Message::new(n.to_string())).await;
            {
                let mut b = burst.lock().await;
                match res {
                    Ok(id) => b.ok.push((n, id)),
                    Err(e) => {
                        assert!(e.is_temporary(), "an outage error must be temporary: {e}");
                        b.errors.push(n);
                    }
                }
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kill the server mid-burst, restart it, and check what reached the subscriptions.
async fn kill_and_restart(
    server: &mut RedisServer,
    broker: &RedisBroker,
    topic: &Topic,
) -> (Burst, Vec<Subscription>) {
    let subs = vec![
        broker.subscribe(topic).await.expect("subscribe"),
        broker.subscribe(topic).await.expect("subscribe"),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let burst = Arc::new(Mutex::new(Burst::default()));
    let task = spawn_burst(broker.clone(), topic.clone(), stop.clone(), burst.clone());

    wait_until("50 publishes before the kill", async || {
        burst.lock().await.ok.len() >= 50
    })
    .await;
    server.kill();
    let before = burst.lock().await.ok.len();
    wait_until("publishes failing during the outage", async || {
        burst.lock().await.errors.len() >= 10
    })
    .await;
    assert!(
        broker.health().await.is_err(),
        "health must fail while redis is down"
    );
    server.restart().expect("restart redis");
    wait_until("50 publishes after the restart", async || {
        burst.lock().await.ok.len() >= before + 50
    })
    .await;
    wait_until("health after the restart", async || {
        broker.health().await.is_ok()
    })
    .await;
    // Health means the subscriber is back and caught up: publish some more after it.
    let recovered = burst.lock().await.ok.len();
    wait_until("publishes after recovery", async || {
        burst.lock().await.ok.len() >= recovered + 10
    })
    .await;
    stop.store(true, Ordering::Release);
    task.await.expect("publisher");
    let burst = Arc::try_unwrap(burst).ok().expect("burst").into_inner();
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
    let Some(mut server) = own_server(true) else {
        return;
    };
    let broker = broker(&server.url()).await;
    let topic = unique_topic("durable");
    let (burst, mut subs) = kill_and_restart(&mut server, &broker, &topic).await;
    let failed: std::collections::HashSet<u64> = burst.errors.iter().copied().collect();
    for sub in &mut subs {
        // Every Ok-published event arrives, in order. A publish that failed may still have
        // been applied (the reply was lost with the connection), so it may arrive too.
        let mut expected = burst.ok.iter().peekable();
        while let Some((n, id)) = expected.peek() {
            match next(sub).await {
                Delivery::Gap => panic!("gap with appendfsync always"),
                Delivery::Event(env) => {
                    let got: u64 = std::str::from_utf8(&env.data)
                        .expect("utf-8")
                        .parse()
                        .expect("number");
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
    match broker.replay(&topic, first).await.expect("replay") {
        Replay::Events(events) => {
            let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
            for (n, id) in &burst.ok[1..] {
                assert!(ids.contains(id), "event {n} missing from history");
            }
        }
        Replay::Gap => panic!("history lost with appendfsync always"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_yields_gap() {
    let Some(mut server) = own_server(false) else {
        return;
    };
    let broker = broker(&server.url()).await;
    let topic = unique_topic("volatile");
    let (burst, mut subs) = kill_and_restart(&mut server, &broker, &topic).await;
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
        broker.replay(&topic, &before_kill).await.expect("replay"),
        Replay::Gap
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
