//! Presence by user across nodes ([`SubscribeOptions::user`], [`ChannelManager::presence`]),
//! history reads ([`ChannelManager::history`]) and channels addressed by a whole topic
//! ([`ChannelManager::channel_at`]).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ssehub_core::{ChannelManager, EventId, PresenceConfig, SubscribeOptions, Topic};
use ssehub_memory::MemoryBroker;

fn node(broker: &MemoryBroker) -> ChannelManager<u64> {
    ChannelManager::builder(broker.clone())
        .key_prefix("u")
        .presence(PresenceConfig {
            coalesce: Duration::from_millis(20),
            heartbeat: Duration::from_millis(100),
            window: Duration::from_millis(400),
        })
        .build()
        .unwrap()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn users_are_counted_across_nodes() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker), node(&broker));
    let alice = || SubscribeOptions::new().user("alice", Some(serde_json::json!({"n": "A"})));
    let _a1 = a.subscribe("1", alice()).await.unwrap();
    let b1 = b.subscribe("1", alice()).await.unwrap();
    let _b2 = b
        .subscribe("1", SubscribeOptions::new().user("bob", None))
        .await
        .unwrap();
    let _b3 = b.subscribe("1", SubscribeOptions::new()).await.unwrap();
    for m in [&a, &b] {
        eventually("two users on u:1", || {
            let p = m.presence("1").unwrap();
            p.sessions == 4
                && p.users.len() == 2
                && p.users[0].user == "alice"
                && p.users[0].sessions == 2
                && p.users[0].info == Some(serde_json::json!({"n": "A"}))
                && p.users[1].user == "bob"
                && p.users[1].sessions == 1
                && p.users[1].info.is_none()
        })
        .await;
    }
    drop(b1);
    eventually("alice once", || {
        let p = a.presence("1").unwrap();
        p.sessions == 3 && p.users[0].sessions == 1
    })
    .await;
    drop(b);
    // Node b dropped its sessions with it (or stops reporting): only a's alice remains.
    eventually("b gone", || {
        let p = a.presence("1").unwrap();
        p.sessions == 1 && p.users.len() == 1 && p.users[0].user == "alice"
    })
    .await;
}

#[tokio::test]
async fn history_answers_events_after_an_id_or_incomplete() {
    let broker = MemoryBroker::new();
    let m = node(&broker);
    let first = m.publish("h", &1).await.unwrap();
    let second = m.publish("h", &2).await.unwrap();
    m.publish("h", &3).await.unwrap();
    let h = m.history("h", &first, 1).await.unwrap();
    assert!(h.complete);
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.events[0].id, second);
    let h = m.history("h", &first, 10).await.unwrap();
    assert_eq!(h.events.len(), 2);
    let unknown = EventId::parse("nope-1").unwrap();
    let h = m.history("h", &unknown, 10).await.unwrap();
    assert!(!h.complete);
    assert!(h.events.is_empty());
}

#[tokio::test]
async fn a_channel_at_a_whole_topic_publishes_in_batches_and_has_presence() {
    let broker = MemoryBroker::new();
    let m = node(&broker);
    let long = "x".repeat(128);
    let channel = m.channel_at(Topic::new(format!("hub:{}:{long}", "y".repeat(60))).unwrap());
    let _s = channel
        .subscribe(SubscribeOptions::new().user("carol", None))
        .await
        .unwrap();
    let ids = channel
        .publish_many_with(&[1, 2], ssehub_core::PublishOptions::new())
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    let h = channel.history(&ids[0], 10).await.unwrap();
    assert_eq!(h.events[0].id, ids[1]);
    let p = channel.presence();
    assert_eq!((p.sessions, p.users[0].user.as_str()), (1, "carol"));
}
