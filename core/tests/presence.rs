//! Presence across nodes: two managers on one broker are two nodes; each knows the cluster
//! count, a node that vanishes without a word drops out within the window, and sessions can be
//! told of changes.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::{ChannelManager, PresenceConfig, Session, SubscribeOptions};
use ssehub_memory::MemoryBroker;

fn config() -> PresenceConfig {
    PresenceConfig {
        coalesce: Duration::from_millis(20),
        heartbeat: Duration::from_millis(100),
        window: Duration::from_millis(400),
    }
}

fn node(broker: &MemoryBroker, events: bool) -> ChannelManager<u64> {
    ChannelManager::builder(broker.clone())
        .key_prefix("d")
        .presence(config())
        .presence_events(events)
        .build()
        .unwrap()
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn count(m: &ChannelManager<u64>, id: &str) -> usize {
    m.cluster_session_count(id).await.unwrap()
}

async fn join(m: &ChannelManager<u64>, id: &str) -> Session {
    m.subscribe(id, SubscribeOptions::new()).await.unwrap()
}

#[tokio::test]
async fn every_node_knows_the_cluster_count() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker, false), node(&broker, false));
    let _a1 = join(&a, "1").await;
    let _a2 = join(&a, "1").await;
    let b1 = join(&b, "1").await;
    let _b2 = join(&b, "2").await;
    for m in [&a, &b] {
        eventually("3 on d:1", async || count(m, "1").await == 3).await;
        eventually("1 on d:2", async || count(m, "2").await == 1).await;
    }
    drop(b1);
    for m in [&a, &b] {
        eventually("2 on d:1", async || count(m, "1").await == 2).await;
    }
    // A third node that has no session at all knows the counts too.
    let c = node(&broker, false);
    eventually("c learns", async || count(&c, "1").await == 2).await;
}

#[tokio::test]
async fn a_node_that_vanishes_drops_out_within_the_window() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker, false), node(&broker, false));
    let _a1 = join(&a, "x").await;
    let b1 = join(&b, "x").await;
    eventually("2 on a", async || count(&a, "x").await == 2).await;
    // B dies without a word: its session never says goodbye, its node stops repeating itself.
    std::mem::forget(b1);
    drop(b);
    eventually("b gone", async || count(&a, "x").await == 1).await;
}

#[tokio::test]
async fn sessions_and_watchers_are_told_of_changes() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker, true), node(&broker, false));
    let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let log = seen.clone();
    a.on_presence(move |id, n| log.lock().unwrap().push((id.to_owned(), n)));
    let mut s = join(&a, "p").await;
    let mut text = String::new();
    let mut next = async || {
        let chunk = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(chunk.to_vec()).unwrap()
    };
    text.push_str(&next().await);
    assert!(
        text.contains("event: presence\ndata: {\"sessions\":1}"),
        "{text}"
    );
    let _b1 = join(&b, "p").await;
    let mut more = String::new();
    while !more.contains("{\"sessions\":2}") {
        more.push_str(&next().await);
    }
    assert!(!more.contains("id:"), "presence events carry no id: {more}");
    eventually("the watcher saw 2", async || {
        seen.lock().unwrap().contains(&("p".to_owned(), 2))
    })
    .await;
}

async fn join_as(m: &ChannelManager<u64>, id: &str, user: &str) -> Session {
    m.channel(id)
        .unwrap()
        .subscribe(SubscribeOptions::new().user(user, None))
        .await
        .unwrap()
}

/// Reads `session`'s presence events until one has `data`; panics after 10 s.
async fn presence_event(session: &mut Session, data: &str) {
    let want = format!("event: presence\ndata: {data}\n");
    let mut text = String::new();
    while !text.contains(&want) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), session.next())
            .await
            .unwrap_or_else(|_| panic!("no {data} in {text:?}"))
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn presence_events_name_the_users_that_join_and_leave_on_any_node() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker, true), node(&broker, false));
    let mut watcher = join_as(&a, "u", "alice").await;
    presence_event(&mut watcher, r#"{"sessions":1,"joined":["alice"]}"#).await;
    // A second session of alice's (on the other node) is one more session, not a join.
    let alice2 = join_as(&b, "u", "alice").await;
    presence_event(&mut watcher, r#"{"sessions":2}"#).await;
    let bob = join_as(&b, "u", "bob").await;
    presence_event(&mut watcher, r#"{"sessions":3,"joined":["bob"]}"#).await;
    drop(alice2);
    presence_event(&mut watcher, r#"{"sessions":2}"#).await;
    // B dies without a word: bob leaves when its node drops out of the window.
    std::mem::forget(bob);
    drop(b);
    presence_event(&mut watcher, r#"{"sessions":1,"left":["bob"]}"#).await;
}
