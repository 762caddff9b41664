//! The liveness check: an event that reaches a topic's stream but never its live channel (a
//! subscription the server or the client library lost without a word: nothing arrives live any
//! more) is delivered from the stream within about two ping intervals, in order, once.

use std::time::Duration;

use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, Delivery, Message};
use ssehub_redis::RedisBroker;
use ssehub_redis::redis;
use ssehub_test_support::faults::next_delivery;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_never_arrives_live_is_delivered_from_the_stream() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let prefix = ssehub_core::conformance::unique_id("liveness");
    let broker = RedisBroker::builder(&url)
        .prefix(prefix.clone())
        .ping_interval(Duration::from_millis(300))
        .build()
        .await
        .expect("connect");
    let topic = unique_topic("liveness");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let first = broker
        .publish(&topic, Message::new("first"))
        .await
        .expect("publish");
    match next_delivery(&mut sub, Duration::from_secs(10)).await {
        Delivery::Event(env) => assert_eq!(env.id, first),
        Delivery::Gap => panic!("gap"),
    }
    // Appended to the stream behind the broker's back: no live message is ever sent.
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let stream = format!("{prefix}:{{{topic}}}:stream");
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("e")
        .arg("message")
        .arg("d")
        .arg("silent")
        .query_async(&mut con)
        .await
        .expect("xadd");
    // Nothing comes live; the liveness check finds it in the stream.
    match next_delivery(&mut sub, Duration::from_secs(10)).await {
        Delivery::Event(env) => assert_eq!(&env.data[..], b"silent"),
        Delivery::Gap => panic!("gap instead of the silent event"),
    }
    let next = broker
        .publish(&topic, Message::new("after"))
        .await
        .expect("publish");
    match next_delivery(&mut sub, Duration::from_secs(10)).await {
        Delivery::Event(env) => assert_eq!(env.id, next),
        Delivery::Gap => panic!("gap"),
    }
    let quiet = tokio::time::timeout(
        Duration::from_secs(1),
        futures_util::StreamExt::next(&mut sub),
    )
    .await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");
}
