//! The demo's `Idempotency-Key` contract: `POST /api/comments/{id}` and `POST /api/votes/{id}`
//! with the header count once; a repeat of the key within the window, on any node, answers `200`
//! with the first response's body, publishes nothing and changes no count; an empty, too long
//! or non-visible key is `400`; a request without the header behaves as before. On one node
//! (memory) and on two nodes sharing Redis, and NATS.

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ssehub::Broker;
use ssehub_test_support::sse_client::SseClient;

/// One demo node over `broker`, its numbers in `store`.
async fn node(broker: Arc<dyn Broker>, store: comments::Store) -> SocketAddr {
    let state = comments::AppState::with_store(broker, store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = comments::app(state);
    tokio::spawn(async move { comments::serve(listener, app).await });
    addr
}

/// `POST path` with this body and `Idempotency-Key`; the status and the body's text.
async fn post(
    addr: SocketAddr,
    path: &str,
    body: Option<serde_json::Value>,
    key: Option<&str>,
) -> (u16, String) {
    let mut req = reqwest::Client::new().post(format!("http://{addr}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A stream of `path`, its initial event consumed.
async fn stream(addr: SocketAddr, path: &str) -> SseClient {
    let mut c = SseClient::connect(addr, path, &[]).await.unwrap();
    assert_eq!(c.status(), 200);
    let initial = c.next_event().await.expect("initial event");
    assert!(initial.id.is_none());
    c
}

/// The next event's data, or `None` when nothing comes within a moment.
async fn maybe_next(c: &mut SseClient) -> Option<serde_json::Value> {
    let e = tokio::time::timeout(Duration::from_millis(500), c.next_event())
        .await
        .ok()??;
    Some(serde_json::from_str(&e.data).unwrap())
}

/// The contract, against two nodes (`a` and `b` may be the same one).
async fn repeats_count_once(a: SocketAddr, b: SocketAddr) {
    let id = ssehub_core::conformance::unique_id("idem");
    let comments = format!("/api/comments/{id}");
    let votes = format!("/api/votes/{id}");
    let mut on_b = stream(b, &format!("/api/sse/comments/{id}")).await;
    let mut votes_on_b = stream(b, &format!("/api/sse/votes/{id}")).await;
    let key = format!("key-{id}");

    let (status, first) = post(a, &comments, None, Some(&key)).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post(b, &comments, None, Some(&key)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "a repeat answers the first response's body");
    let count = get_json(a, &comments).await["commentCount"].as_u64();
    assert_eq!(count, Some(1), "a repeat changes no count");
    let event = maybe_next(&mut on_b).await.expect("the comment's event");
    assert_eq!(
        event,
        serde_json::from_str::<serde_json::Value>(&first).unwrap()
    );
    assert_eq!(
        maybe_next(&mut on_b).await,
        None,
        "a repeat publishes nothing"
    );

    // Another key counts again; no key counts every time.
    let (_, other) = post(b, &comments, None, Some(&format!("{key}-2"))).await;
    assert_ne!(other, first);
    post(a, &comments, None, None).await;
    post(a, &comments, None, None).await;
    assert_eq!(get_json(b, &comments).await["commentCount"], 4);

    // Votes: the same.
    let up = Some(serde_json::json!({"vote": "up"}));
    let (status, first) = post(b, &votes, up.clone(), Some(&key)).await;
    assert_eq!(status, 200, "{first}");
    let (_, again) = post(a, &votes, up.clone(), Some(&key)).await;
    assert_eq!(again, first);
    let (_, again) = post(b, &votes, up, Some(&key)).await;
    assert_eq!(again, first);
    assert_eq!(get_json(a, &votes).await["up"], 1);
    assert!(maybe_next(&mut votes_on_b).await.is_some());
    assert_eq!(maybe_next(&mut votes_on_b).await, None, "one vote event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_counts_once_on_one_node() {
    let addr = node(
        Arc::new(ssehub::MemoryBroker::new()),
        comments::Store::memory(),
    )
    .await;
    repeats_count_once(addr, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_refused_and_count_nothing() {
    let addr = node(
        Arc::new(ssehub::MemoryBroker::new()),
        comments::Store::memory(),
    )
    .await;
    let id = ssehub_core::conformance::unique_id("idem-bad");
    let comments = format!("/api/comments/{id}");
    let long = "k".repeat(256);
    for bad in ["", long.as_str(), "has space", "tab\tkey", "é"] {
        let (status, body) = post(addr, &comments, None, Some(bad)).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body.contains("Idempotency-Key"), "{body}");
        let (status, _) = post(
            addr,
            &format!("/api/votes/{id}"),
            Some(serde_json::json!({"vote": "down"})),
            Some(bad),
        )
        .await;
        assert_eq!(status, 400, "{bad:?}");
    }
    assert_eq!(get_json(addr, &comments).await["commentCount"], 0);
    let longest = "k".repeat(255);
    for ok in ["!", "~x~", longest.as_str()] {
        assert_eq!(post(addr, &comments, None, Some(ok)).await.0, 200, "{ok:?}");
    }
    assert_eq!(get_json(addr, &comments).await["commentCount"], 3);
}

/// Two nodes sharing the broker and the store at `url`.
async fn two_nodes(url: &str) -> (SocketAddr, SocketAddr) {
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let broker = comments::broker(url).await.unwrap();
        let store = comments::Store::open(url).await.unwrap();
        nodes.push(node(broker, store).await);
    }
    (nodes[0], nodes[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_counts_once_across_redis_nodes() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let (a, b) = two_nodes(&url).await;
    repeats_count_once(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_counts_once_across_nats_nodes() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    let (a, b) = two_nodes(&url).await;
    repeats_count_once(a, b).await;
}
