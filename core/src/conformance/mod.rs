//! The backend conformance suite: plain async functions every [`Broker`] must pass.
//!
//! Each function panics (like an assertion) when the broker breaks the contract, uses its own
//! unique topics (so cases run in parallel, even against a shared server), and bounds every wait.
//! Cases that need a capability the broker does not declare return early and say so.
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[tokio::test]` per case.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let broker = ssehub_memory::MemoryBroker::new();
//! ssehub_core::conformance::publish_subscribe_round_trip(&broker).await;
//! ssehub_core::conformance::replay_after_id(&broker).await;
//! # }
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::broker::{Broker, Delivery, Envelope, GapCause, Message, Replay, Subscription};
use crate::error::Error;
use crate::id::{EventId, EventName, Topic};
use crate::manager::{ChannelManager, SubscribeOptions};
use crate::sse_parser::SseParser;

mod batch;
mod idempotency;
mod presence;
pub use batch::{publish_many_keeps_order, tail_is_the_newest_event};
pub use idempotency::idempotent_publish;
pub use presence::{presence_across_nodes, signals_reach_every_node};

/// Longest any single wait in the suite may take before the case fails.
pub const WAIT: Duration = Duration::from_secs(20);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A topic name no other test (in this or another process) uses.
#[must_use]
pub fn unique_topic(case: &str) -> Topic {
    Topic::new(unique_id(case)).unwrap_or_else(|e| panic!("bad case name {case:?}: {e}"))
}

/// A resource id no other test uses.
#[must_use]
pub fn unique_id(case: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("t-{case}-{}-{nanos:x}-{n}", std::process::id())
}

async fn next_event(sub: &mut Subscription) -> Envelope {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Delivery::Event(env))) => env,
        Ok(Some(Delivery::Gap)) => panic!("unexpected gap"),
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Publish `n` events of about `size` bytes each (data `"<index>:xxx…"`), one after another;
/// their ids. Fault tests use it to build a backlog a slow reader cannot keep up with.
pub async fn publish_backlog(
    broker: &dyn Broker,
    topic: &Topic,
    n: usize,
    size: usize,
) -> Vec<EventId> {
    let pad = "x".repeat(size);
    publish_each(broker, topic, n, |i| format!("{i}:{pad}")).await
}

/// The next deliveries of `sub` are exactly the events `ids`, in order: no gap, no loss, no
/// duplicate (each within [`WAIT`]).
pub async fn expect_exactly(sub: &mut Subscription, ids: &[EventId]) {
    for (n, id) in ids.iter().enumerate() {
        let env = next_event(sub).await;
        assert_eq!(&env.id, id, "event {n} out of order, missing or repeated");
    }
}

async fn publish_n(broker: &dyn Broker, topic: &Topic, n: usize) -> Vec<EventId> {
    publish_each(broker, topic, n, |i| i.to_string()).await
}

/// Publish `data(0)`, `data(1)`, … one after another; their ids.
async fn publish_each(
    broker: &dyn Broker,
    topic: &Topic,
    n: usize,
    data: impl Fn(usize) -> String,
) -> Vec<EventId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = broker
            .publish(topic, Message::new(data(i)))
            .await
            .unwrap_or_else(|e| panic!("publish {i}: {e}"));
        ids.push(id);
    }
    ids
}

/// Publish, then receive the same payload, event name and id on a subscription.
pub async fn publish_subscribe_round_trip(broker: &dyn Broker) {
    let topic = unique_topic("roundtrip");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let id = broker
        .publish(&topic, Message::new(&b"{\"hello\":1}"[..]))
        .await
        .expect("publish");
    let env = next_event(&mut sub).await;
    assert_eq!(env.id, id);
    assert_eq!(env.event, EventName::MESSAGE);
    assert_eq!(&env.data[..], b"{\"hello\":1}");
}

/// Event names travel with the event.
pub async fn event_names_preserved(broker: &dyn Broker) {
    let topic = unique_topic("names");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let name = EventName::new("comment-added").expect("name");
    broker
        .publish(&topic, Message::new("x").with_event(name.clone()))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut sub).await.event, name);
}

/// 200 events published one after another arrive in the same order, with distinct ids.
pub async fn order_kept_per_topic(broker: &dyn Broker) {
    let topic = unique_topic("order");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let ids = publish_n(broker, &topic, 200).await;
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids must be distinct");
    for (i, id) in ids.iter().enumerate() {
        let env = next_event(&mut sub).await;
        assert_eq!(&env.id, id, "event {i} out of order");
        assert_eq!(env.data, Bytes::from(i.to_string()));
    }
}

/// A subscription sees its own topic only, even when names share a prefix.
pub async fn topics_isolated(broker: &dyn Broker) {
    let a = unique_topic("iso");
    let b = Topic::new(format!("{a}:x")).expect("topic");
    let c = Topic::new(format!("{a}x")).expect("topic");
    let mut sub = broker.subscribe(&a).await.expect("subscribe");
    broker
        .publish(&b, Message::new("b"))
        .await
        .expect("publish b");
    broker
        .publish(&c, Message::new("c"))
        .await
        .expect("publish c");
    broker
        .publish(&a, Message::new("a"))
        .await
        .expect("publish a");
    let env = next_event(&mut sub).await;
    assert_eq!(
        &env.data[..],
        b"a",
        "a subscription received another topic's event"
    );
}

/// Twenty subscriptions of one topic each receive every event.
pub async fn fan_out_to_many_subscribers(broker: &dyn Broker) {
    let topic = unique_topic("fanout");
    let mut subs = Vec::new();
    for _ in 0..20 {
        subs.push(broker.subscribe(&topic).await.expect("subscribe"));
    }
    let ids = publish_n(broker, &topic, 10).await;
    for sub in &mut subs {
        for id in &ids {
            assert_eq!(&next_event(sub).await.id, id);
        }
    }
}

/// Four publishers at once: every event arrives once, each publisher's events in its order.
pub async fn concurrent_publishers(broker: Arc<dyn Broker>) {
    let topic = unique_topic("concurrent");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let mut tasks = Vec::new();
    for p in 0..4 {
        let broker = broker.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                broker
                    .publish(&topic, Message::new(format!("{p}:{i}")))
                    .await
                    .expect("publish");
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher task");
    }
    let mut next = [0u32; 4];
    let mut ids = HashSet::new();
    for _ in 0..200 {
        let env = next_event(&mut sub).await;
        assert!(ids.insert(env.id.clone()), "duplicate id {}", env.id);
        let text = String::from_utf8(env.data.to_vec()).expect("utf-8");
        let (p, i) = text.split_once(':').expect("payload");
        let (p, i): (usize, u32) = (p.parse().expect("p"), i.parse().expect("i"));
        assert_eq!(next[p], i, "publisher {p} out of order");
        next[p] += 1;
    }
}

async fn wait_for_subscriptions(broker: &dyn Broker, at_most: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.active_subscriptions() > at_most {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} subscriptions still active, expected at most {at_most}",
            broker.active_subscriptions()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Dropping a subscription releases it. The broker must be this case's own instance (the count
/// is per node).
pub async fn unsubscribe_releases_subscription(broker: &dyn Broker) {
    let before = broker.active_subscriptions();
    let topic = unique_topic("release");
    let sub = broker.subscribe(&topic).await.expect("subscribe");
    let sub2 = broker.subscribe(&topic).await.expect("subscribe again");
    assert_eq!(broker.active_subscriptions(), before + 2);
    drop(sub);
    drop(sub2);
    wait_for_subscriptions(broker, before).await;
}

/// Replay pages: at most `limit` events per answer, and asking again after the last one goes on
/// exactly where the page stopped.
pub async fn replay_pages(broker: &dyn Broker) {
    if broker.capabilities().history.is_none() {
        eprintln!("skipped: broker keeps no history");
        return;
    }
    let topic = unique_topic("pages");
    let ids = publish_n(broker, &topic, 7).await;
    let mut after = ids[0].clone();
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        match broker.replay(&topic, &after, 2).await.expect("replay") {
            Replay::Events(events) => {
                assert!(events.len() <= 2, "a page of {} events", events.len());
                pages += 1;
                let Some(last) = events.last() else { break };
                after = last.id.clone();
                got.extend(events.into_iter().map(|e| e.id));
            }
            Replay::Gap(_) => panic!("a page inside the window answered a gap"),
        }
        assert!(pages <= 10, "paging does not end");
    }
    assert_eq!(got, ids[1..].to_vec());
    assert_eq!(
        broker.replay(&topic, &ids[1], 0).await.expect("replay"),
        Replay::Events(Vec::new())
    );
}

/// Replay answers the events after an id, oldest first; after the latest id, none.
pub async fn replay_after_id(broker: &dyn Broker) {
    if broker.capabilities().history.is_none() {
        eprintln!("skipped: broker keeps no history");
        return;
    }
    let topic = unique_topic("replay");
    let ids = publish_n(broker, &topic, 5).await;
    match broker
        .replay(&topic, &ids[1], usize::MAX)
        .await
        .expect("replay")
    {
        Replay::Events(events) => {
            let got: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
            assert_eq!(got, ids[2..].to_vec());
            assert_eq!(events[0].data, Bytes::from("2"));
        }
        Replay::Gap(_) => panic!("replay inside the window answered a gap"),
    }
    match broker
        .replay(&topic, &ids[4], usize::MAX)
        .await
        .expect("replay")
    {
        Replay::Events(events) => assert!(events.is_empty(), "nothing comes after the latest"),
        Replay::Gap(_) => panic!("replay of the latest id answered a gap"),
    }
}

/// Replay of an id older than the history window answers a gap, never a silent skip.
pub async fn replay_outside_window_is_gap(broker: &dyn Broker) {
    let Some(window) = broker.capabilities().history else {
        eprintln!("skipped: broker keeps no history");
        return;
    };
    if window > 5_000 {
        eprintln!("skipped: window of {window} events is too large to overflow in a test");
        return;
    }
    let topic = unique_topic("window");
    let first = publish_n(broker, &topic, 1).await;
    // Approximate trimming (Redis `MAXLEN ~`) may keep somewhat more than the window.
    publish_n(broker, &topic, window * 2 + 128).await;
    assert_eq!(
        broker
            .replay(&topic, &first[0], usize::MAX)
            .await
            .expect("replay"),
        Replay::Gap(GapCause::Trimmed),
        "an id trimmed out of history must answer a gap, trimmed"
    );
}

/// Ids that this broker never gave for this topic answer a gap: `foreign` comes from another
/// epoch of the backend (a restarted or flushed broker), plus syntactically valid nonsense.
pub async fn replay_unknown_id_is_gap(broker: &dyn Broker, foreign: &EventId) {
    if broker.capabilities().history.is_none() {
        eprintln!("skipped: broker keeps no history");
        return;
    }
    let topic = unique_topic("unknown");
    let empty = unique_topic("empty");
    let ids = publish_n(broker, &topic, 3).await;
    for bad in [
        foreign.as_str(),
        "zzz",
        "0",
        "999999999999999999-9",
        "a.b~c_d-e",
        "0-0",
    ] {
        let id = EventId::parse(bad).expect("valid syntax");
        let answer = broker
            .replay(&topic, &id, usize::MAX)
            .await
            .expect("replay");
        assert!(
            matches!(answer, Replay::Gap(_)),
            "unknown id {bad:?} must answer a gap, not {answer:?}"
        );
    }
    let answer = broker
        .replay(&empty, &ids[0], usize::MAX)
        .await
        .expect("replay");
    assert!(
        matches!(answer, Replay::Gap(_)),
        "an id from another topic on an empty topic must answer a gap, not {answer:?}"
    );
}

/// A payload just under the maximum (multi-line, binary-ish) goes through intact.
pub async fn large_payload_near_max(broker: &dyn Broker) {
    let max = broker.capabilities().max_payload;
    let topic = unique_topic("large");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let data: Vec<u8> = (0..max).map(|i| b"ab\r\ncd\n\0\xff"[i % 9]).collect();
    let id = broker
        .publish(&topic, Message::new(data.clone()))
        .await
        .expect("publish at the maximum");
    let env = next_event(&mut sub).await;
    assert_eq!(env.id, id);
    assert!(env.data == data, "payload changed in transit");
}

/// A payload over the maximum is refused with `PayloadTooLarge`, and nothing is delivered.
pub async fn payload_over_max_refused(broker: &dyn Broker) {
    let max = broker.capabilities().max_payload;
    let topic = unique_topic("toolarge");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let err = broker
        .publish(&topic, Message::new(vec![b'x'; max + 1]))
        .await
        .expect_err("over the maximum must be refused");
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "got {err}");
    broker
        .publish(&topic, Message::new("ok"))
        .await
        .expect("publish");
    assert_eq!(&next_event(&mut sub).await.data[..], b"ok");
}

/// Through a [`ChannelManager`]: a client reads part of the stream, leaves, and comes back with
/// its last event id while another task keeps publishing. Every event arrives exactly once, in
/// order, across the two connections.
pub async fn resume_without_gap_or_duplicate(broker: Arc<dyn Broker>) {
    let Some(history) = broker.capabilities().history else {
        eprintln!("skipped: broker keeps no history");
        return;
    };
    // At most one history's worth of events, so a reader however far behind the publisher is
    // always inside the window (with more, a publisher that ran ahead could push the reader's
    // last id out of it, and the reset would be right).
    let total = 300.min(u64::try_from(history).unwrap_or(u64::MAX));
    let manager = ChannelManager::<u64>::builder_dyn(broker)
        .key_prefix("conformance")
        .linger(Duration::ZERO)
        .build()
        .expect("manager");
    let rid = unique_id("resume");
    let mut session = manager
        .subscribe(&rid, SubscribeOptions::new())
        .await
        .expect("subscribe");
    let publisher = {
        let manager = manager.clone();
        let rid = rid.clone();
        tokio::spawn(async move {
            for n in 0..total {
                manager.publish(&rid, &n).await.expect("publish");
                if n % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut parser = SseParser::new();
    let mut seen: Vec<u64> = Vec::new();
    let mut reconnects = 0;
    while (seen.len() as u64) < total {
        let chunk = match tokio::time::timeout(WAIT, session.next()).await {
            Ok(Some(c)) => c,
            Ok(None) => panic!("stream ended"),
            Err(_) => panic!("stalled after {} events", seen.len()),
        };
        parser.feed(&chunk);
        for ev in parser.take_events() {
            assert_ne!(ev.event, "reset", "resume inside the window must not reset");
            seen.push(ev.data.parse().expect("number"));
        }
        // Leave and come back ten times, at different points of the publishing.
        if reconnects < 10 && seen.len() >= (reconnects + 1) * 25 {
            reconnects += 1;
            drop(session);
            tokio::task::yield_now().await;
            session = manager
                .subscribe(
                    &rid,
                    SubscribeOptions::new().last_event_id(Some(parser.last_event_id())),
                )
                .await
                .expect("resubscribe");
        }
    }
    publisher.await.expect("publisher");
    let expected: Vec<u64> = (0..total).collect();
    assert_eq!(
        seen, expected,
        "events lost, duplicated or reordered across reconnects"
    );
}

/// Through a [`ChannelManager`]: the last session leaving removes the channel and releases the
/// broker subscription.
pub async fn hub_releases_subscription(broker: Arc<dyn Broker>) {
    let before = broker.active_subscriptions();
    let manager = ChannelManager::<u64>::builder_dyn(broker.clone())
        .linger(Duration::ZERO)
        .build()
        .expect("manager");
    let rid = unique_id("hubrelease");
    let s1 = manager
        .subscribe(&rid, SubscribeOptions::new())
        .await
        .expect("s1");
    let s2 = manager
        .subscribe(&rid, SubscribeOptions::new())
        .await
        .expect("s2");
    assert_eq!(manager.session_count(&rid), 2);
    assert_eq!(manager.channel_count(), 1);
    drop(s1);
    assert_eq!(manager.session_count(&rid), 1);
    drop(s2);
    assert_eq!(manager.session_count(&rid), 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while manager.channel_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "channel not removed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_for_subscriptions(broker.as_ref(), before).await;
}

/// Expands to one `#[tokio::test]` per conformance case.
///
/// Each case evaluates `$make` anew, so each gets its own broker instance.
/// `$make` is an async expression evaluating to an `Arc<dyn Broker>`; `$foreign` an async
/// expression evaluating to an [`EventId`] from another epoch of the same backend.
#[macro_export]
macro_rules! conformance_tests {
    (make = $make:expr, foreign = $foreign:expr $(,)?) => {
        $crate::conformance_tests!(@case $make, publish_subscribe_round_trip, ref);
        $crate::conformance_tests!(@case $make, event_names_preserved, ref);
        $crate::conformance_tests!(@case $make, order_kept_per_topic, ref);
        $crate::conformance_tests!(@case $make, publish_many_keeps_order, ref);
        $crate::conformance_tests!(@case $make, idempotent_publish, ref);
        $crate::conformance_tests!(@case $make, tail_is_the_newest_event, ref);
        $crate::conformance_tests!(@case $make, topics_isolated, ref);
        $crate::conformance_tests!(@case $make, fan_out_to_many_subscribers, ref);
        $crate::conformance_tests!(@case $make, concurrent_publishers, arc);
        $crate::conformance_tests!(@case $make, unsubscribe_releases_subscription, ref);
        $crate::conformance_tests!(@case $make, replay_after_id, ref);
        $crate::conformance_tests!(@case $make, replay_pages, ref);
        $crate::conformance_tests!(@case $make, signals_reach_every_node, ref);
        $crate::conformance_tests!(@case $make, replay_outside_window_is_gap, ref);
        $crate::conformance_tests!(@case $make, large_payload_near_max, ref);
        $crate::conformance_tests!(@case $make, payload_over_max_refused, ref);
        $crate::conformance_tests!(@case $make, resume_without_gap_or_duplicate, arc);
        $crate::conformance_tests!(@case $make, hub_releases_subscription, arc);
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn replay_unknown_id_is_gap() {
            let broker: ::std::sync::Arc<dyn $crate::Broker> = $make;
            let foreign: $crate::EventId = $foreign;
            $crate::conformance::replay_unknown_id_is_gap(broker.as_ref(), &foreign).await;
        }
    };
    (@case $make:expr, $name:ident, ref) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let broker: ::std::sync::Arc<dyn $crate::Broker> = $make;
            $crate::conformance::$name(broker.as_ref()).await;
        }
    };
    (@case $make:expr, $name:ident, arc) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let broker: ::std::sync::Arc<dyn $crate::Broker> = $make;
            $crate::conformance::$name(broker).await;
        }
    };
}
