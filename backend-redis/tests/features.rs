//! Redis-specific behaviour: trimmed history, topic abuse, one shared subscription per topic,
//! presence, health, and secrets kept out of `Debug`.

use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::conformance::{unique_id, unique_topic};
use ssehub_core::{Broker, Delivery, Message, Replay, Subscription, Topic};
use ssehub_redis::{RedisBroker, redis};
use ssehub_test_support::redis::{RedisOptions, RedisServer, redis_url};
use ssehub_test_support::server::BrokerServer;
use ssehub_test_support::skip;

const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "ssehub-features";

async fn broker(history: usize) -> Option<RedisBroker> {
    let url = redis_url().await?;
    Some(
        RedisBroker::builder(&url)
            .prefix(PREFIX)
            .history(history)
            .build()
            .await
            .expect("connect"),
    )
}

async fn next_data(sub: &mut Subscription) -> Vec<u8> {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Delivery::Event(env))) => env.data.to_vec(),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_trimmed_id_is_a_gap() {
    let Some(broker) = broker(10).await else {
        return;
    };
    let topic = unique_topic("trimmed");
    let first = broker
        .publish(&topic, Message::new("first"))
        .await
        .expect("publish");
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            broker
                .publish(&topic, Message::new(i.to_string()))
                .await
                .expect("publish"),
        );
    }
    // Redis itself would answer the entries after a trimmed id; the broker must not.
    assert!(matches!(
        broker
            .replay(&topic, &first, usize::MAX)
            .await
            .expect("replay"),
        Replay::Gap(ssehub_core::GapCause::Trimmed)
    ));
    // An id inside the window still answers every later event.
    let recent = &ids[ids.len() - 5];
    match broker
        .replay(&topic, recent, usize::MAX)
        .await
        .expect("replay")
    {
        Replay::Events(events) => {
            let got: Vec<_> = events.into_iter().map(|e| e.id).collect();
            assert_eq!(got, ids[ids.len() - 4..].to_vec());
        }
        Replay::Gap(_) => panic!("an id inside the window answered a gap"),
    }
    // Ids of the right shape that were never given answer a gap.
    let bogus = format!("{}-1-0", first.as_str().split('-').next().expect("epoch"));
    let bogus = ssehub_core::EventId::parse(&bogus).expect("id");
    assert!(matches!(
        broker
            .replay(&topic, &bogus, usize::MAX)
            .await
            .expect("replay"),
        Replay::Gap(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_characters_cannot_make_a_topic() {
    let base = unique_id("glob");
    for bad in [
        "*", "?", "[a]", "a*", "{a}", "a\\b", "a b", "a\nb", "a:*", "*:a",
    ] {
        assert!(
            Topic::from_parts(Some(&base), bad, None).is_err(),
            "{bad:?} made a topic"
        );
        assert!(
            Topic::new(format!("{base}{bad}")).is_err(),
            "{bad:?} made a topic"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_sharing_a_prefix_never_see_each_other() {
    let Some(broker) = broker(100).await else {
        return;
    };
    let a = unique_topic("prefix");
    let topics = [
        a.clone(),
        Topic::new(format!("{a}:x")).expect("topic"),
        Topic::new(format!("{a}x")).expect("topic"),
        Topic::new(format!("{a}:x:y")).expect("topic"),
    ];
    let mut subs = Vec::new();
    for t in &topics {
        subs.push(broker.subscribe(t).await.expect("subscribe"));
    }
    for round in 0..3 {
        for t in &topics {
            broker
                .publish(t, Message::new(format!("{t}/{round}")))
                .await
                .expect("publish");
        }
    }
    for (t, sub) in topics.iter().zip(&mut subs) {
        for round in 0..3 {
            assert_eq!(next_data(sub).await, format!("{t}/{round}").into_bytes());
        }
    }
    // Histories are separate too.
    let first = broker
        .publish(&topics[1], Message::new("x"))
        .await
        .expect("publish");
    assert!(matches!(
        broker
            .replay(&topics[0], &first, usize::MAX)
            .await
            .expect("replay"),
        Replay::Gap(_)
    ));
}

async fn numsub(con: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(con)
        .await
        .expect("pubsub numsub");
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("unexpected numsub reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_subscriptions_share_one_redis_subscription() {
    let Some(url) = redis_url().await else {
        return;
    };
    let broker = RedisBroker::builder(&url)
        .prefix(PREFIX)
        .build()
        .await
        .expect("connect");
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let topic = unique_topic("shared");
    let channel = format!("{PREFIX}:{{{topic}}}:events");
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(broker.subscribe(&topic).await.expect("subscribe"));
    }
    assert_eq!(broker.active_subscriptions(), 5);
    assert_eq!(
        numsub(&mut con, &channel).await,
        1,
        "one redis subscription per topic"
    );
    broker
        .publish(&topic, Message::new("hi"))
        .await
        .expect("publish");
    for sub in &mut subs {
        assert_eq!(next_data(sub).await, b"hi");
    }
    subs.truncate(1);
    assert_eq!(broker.active_subscriptions(), 1);
    assert_eq!(numsub(&mut con, &channel).await, 1);
    drop(subs);
    assert_eq!(broker.active_subscriptions(), 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while numsub(&mut con, &channel).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still subscribed after the last drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Subscribing again after the release works.
    let mut sub = broker.subscribe(&topic).await.expect("subscribe again");
    broker
        .publish(&topic, Message::new("again"))
        .await
        .expect("publish");
    assert_eq!(next_data(&mut sub).await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_every_node_and_health_round_trips() {
    let (Some(a), Some(b)) = (broker(100).await, broker(100).await) else {
        return;
    };
    assert_ne!(a.node_id(), b.node_id());
    let mut on_a = a.signals().await.expect("signals");
    let mut on_b = b.signals().await.expect("signals");
    a.signal(bytes::Bytes::from_static(b"hello from a"))
        .await
        .expect("signal");
    for stream in [&mut on_a, &mut on_b] {
        let got = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a signal in time");
        assert_eq!(got.as_deref(), Some(&b"hello from a"[..]));
    }
    a.health().await.expect("health");
    b.health().await.expect("health");
    assert!(a.capabilities().presence);
    assert_eq!(a.capabilities().history, Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide() {
    let (Some(a), Some(b)) = (broker(100).await, broker(100).await) else {
        return;
    };
    ssehub_core::conformance::presence_across_nodes(std::sync::Arc::new(a), std::sync::Arc::new(b))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_hides_the_password() {
    let config = RedisBroker::builder("redis://user:secret@db.example:6380/3");
    let text = format!("{config:?}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("user") && text.contains("<hidden>"), "{text}");

    // A connected broker, authenticated as an ACL user of an own server, hides it too.
    let server = match RedisServer::start(RedisOptions::new()).await {
        Ok(s) => s,
        Err(why) => return skip(&why),
    };
    let admin = redis::Client::open(server.url()).expect("client");
    let mut con = admin
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "user", "on", ">secret", "~*", "&*", "+@all"])
        .query_async(&mut con)
        .await
        .expect("acl setuser");
    let url = format!("redis://user:secret@127.0.0.1:{}", server.port());
    let broker = RedisBroker::connect(&url).await.expect("connect as user");
    let text = format!("{broker:?}");
    assert!(!text.contains("secret"), "{text}");
    let topic = unique_topic("auth");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    broker
        .publish(&topic, Message::new("ok"))
        .await
        .expect("publish");
    assert_eq!(next_data(&mut sub).await, b"ok");

    // A wrong password is refused without echoing it.
    let wrong = format!("redis://user:hunter2@127.0.0.1:{}", server.port());
    let err = RedisBroker::connect(&wrong)
        .await
        .expect_err("wrong password");
    let mut chain = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&s.to_string());
        source = s.source();
    }
    assert!(!chain.contains("hunter2"), "{chain}");
}
