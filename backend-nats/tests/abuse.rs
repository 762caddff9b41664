//! Abuse: resource ids with `.`, `*`, `>`, spaces, non-ASCII, very long; presence across nodes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::conformance::unique_id;
use ssehub_core::{Broker, Delivery, EventId, Message, Replay, Topic};
use ssehub_nats::{Mode, NatsBroker};

const WAIT: Duration = Duration::from_secs(20);

async fn broker(mode: Mode) -> Option<NatsBroker> {
    let url = ssehub_test_support::nats::nats_url().await?;
    Some(
        NatsBroker::builder(url)
            .prefix("ssehubtest.abuse")
            .stream("SSEHUB_TEST_ABUSE")
            .history(50)
            .history_ttl(Duration::from_secs(600))
            .mode(mode)
            .build()
            .await
            .expect("connect"),
    )
}

#[test]
fn topic_validation_refuses_wildcards_whitespace_and_long_ids() {
    for bad in [
        "*",
        ">",
        "a*",
        "a>b",
        "a b",
        " a",
        "a\tb",
        "a\nb",
        "Zu\u{308}rich", // a combining mark is not a letter
        "a:b",
        "",
        &"x".repeat(129),
    ] {
        assert!(
            Topic::from_parts(Some("p"), bad, Some("s")).is_err(),
            "{bad:?} must be refused"
        );
    }
    for ok in ["a.b", "..", "Zürich", "日本", "a~2Eb", &"x".repeat(128)] {
        assert!(
            Topic::from_parts(Some("p"), ok, Some("s")).is_ok(),
            "{ok:?}"
        );
    }
}

async fn abuse(mode: Mode) {
    let Some(b) = broker(mode).await else { return };
    let base = unique_id("abuse");
    // Ids that a naive `.`-join or a lossy escape would confuse with each other.
    let ids = [
        "a.b".to_string(),
        "a".to_string(),
        "b".to_string(),
        "a~2Eb".to_string(),
        "a_2Eb".to_string(),
        "a..b".to_string(),
        ".".to_string(),
        "..".to_string(),
        "Zürich".to_string(),
        "ZÜRICH".to_string(),
        "日本.語".to_string(),
        "x".repeat(128),
    ];
    let topics: Vec<Topic> = ids
        .iter()
        .map(|id| Topic::from_parts(Some(&base), id, Some("c")).expect("accepted id"))
        .collect();
    // Subjects: all distinct, no wildcard or whitespace, one token per topic part.
    let subjects: Vec<String> = topics.iter().map(|t| b.subject_for(t)).collect();
    assert_eq!(
        subjects.iter().collect::<HashSet<_>>().len(),
        subjects.len()
    );
    for (s, t) in subjects.iter().zip(&topics) {
        assert!(!s.contains(['*', '>', ' ', '\t']), "{s}");
        assert_eq!(s.split('.').count(), 2 + t.parts().count(), "{s}");
    }

    let mut subs = Vec::new();
    for t in &topics {
        subs.push(b.subscribe(t).await.expect("subscribe"));
    }
    let mut own = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        own.push(
            b.publish(t, Message::new(format!("own-{i}")))
                .await
                .expect("publish"),
        );
    }
    for (i, t) in topics.iter().enumerate() {
        b.publish(t, Message::new(format!("end-{i}")))
            .await
            .expect("publish");
    }
    // Each subscription sees exactly its own two events, in order: nothing leaks across.
    for (i, sub) in subs.iter_mut().enumerate() {
        for want in [format!("own-{i}"), format!("end-{i}")] {
            match tokio::time::timeout(WAIT, sub.next()).await {
                Ok(Some(Delivery::Event(env))) => {
                    assert_eq!(&env.data[..], want.as_bytes(), "topic {:?}", ids[i]);
                }
                other => panic!("topic {:?}: {other:?}", ids[i]),
            }
        }
    }
    if b.capabilities().history.is_some() {
        for (i, t) in topics.iter().enumerate() {
            match b.replay(t, &own[i], usize::MAX).await.expect("replay") {
                Replay::Events(ev) => {
                    assert_eq!(ev.len(), 1, "topic {:?}", ids[i]);
                    assert_eq!(ev[0].data, format!("end-{i}"));
                }
                Replay::Gap(_) => panic!("gap for topic {:?}", ids[i]),
            }
            // Another topic's id never replays here.
            let other = &own[(i + 1) % own.len()];
            assert!(matches!(
                b.replay(t, other, usize::MAX).await.expect("replay"),
                Replay::Gap(_)
            ));
        }
    }
    // Malformed and hostile ids answer a gap, never a panic or an error.
    for bad in [
        "-",
        "1-",
        "-1",
        "a-b-c",
        "0-18446744073709551616",
        "~-~",
        "1-.5",
    ] {
        let id = EventId::parse(bad).expect("valid syntax");
        assert!(
            matches!(
                b.replay(&topics[0], &id, usize::MAX).await.expect("replay"),
                Replay::Gap(_)
            ),
            "{bad}"
        );
        assert_eq!(b.id_order(&id, &own[0]), None, "{bad}");
    }
    // Only the canonical spelling of an id is one of ours (no leading zeros, no sequence 0).
    let (epoch, seq) = own[0].as_str().rsplit_once('-').expect("epoch-seq");
    for odd in [format!("{epoch}-0{seq}"), format!("{epoch}-0")] {
        let id = EventId::parse(&odd).expect("valid syntax");
        assert!(
            matches!(
                b.replay(&topics[0], &id, usize::MAX).await.expect("replay"),
                Replay::Gap(_)
            ),
            "{odd}"
        );
        assert_eq!(b.id_order(&id, &own[0]), None, "{odd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_never_collide_jetstream() {
    abuse(Mode::JetStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_never_collide_core() {
    abuse(Mode::Core).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide_on_core_and_jetstream() {
    for mode in [Mode::Core, Mode::JetStream] {
        let (Some(a), Some(b)) = (broker(mode).await, broker(mode).await) else {
            return;
        };
        ssehub_core::conformance::presence_across_nodes(Arc::new(a), Arc::new(b)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_hides_credentials() {
    let builder = NatsBroker::builder("nats://alice:s3cret@127.0.0.1:1,nats://tok@h:2")
        .token("t0ken")
        .user_password("bob", "hunter2");
    let text = format!("{builder:?}");
    for secret in ["s3cret", "t0ken", "hunter2", "alice", "tok@"] {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
}
