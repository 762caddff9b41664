//! Two demo servers in one test, on different ports, sharing one Redis (then one NATS): a
//! subscriber on A receives what is published on B, in order; a client that leaves A and
//! reconnects to B with its `Last-Event-ID` receives exactly what it missed.

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ssehub::Broker;
use ssehub::sse_parser::ParsedEvent;
use ssehub_test_support::sse_client::SseClient;

const WAIT: Duration = Duration::from_secs(20);

async fn node(broker: Arc<dyn Broker>) -> (SocketAddr, comments::AppState) {
    let state = comments::AppState::new(broker).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = comments::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

/// Open a stream; a fresh one starts with its initial event, which is consumed here (an exact
/// resume carries only the missed events).
async fn open(addr: SocketAddr, id: &str, last: Option<&str>) -> SseClient {
    let headers: Vec<(&str, &str)> = last.map(|l| ("last-event-id", l)).into_iter().collect();
    let mut c = SseClient::connect(addr, &format!("/api/sse/comments/{id}"), &headers)
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
    if last.is_none() {
        let initial = next(&mut c).await;
        assert!(initial.id.is_none(), "initial event first");
    }
    c
}

async fn next(c: &mut SseClient) -> ParsedEvent {
    c.next_event().await.expect("event in time")
}

fn count(e: &ParsedEvent) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    v["commentCount"].as_u64().unwrap()
}

async fn post(addr: SocketAddr, id: &str) -> u64 {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/comments/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    v["commentCount"].as_u64().unwrap()
}

async fn two_nodes_share_events_and_resume(a: Arc<dyn Broker>, b: Arc<dyn Broker>) {
    let (addr_a, state_a) = node(a).await;
    let (addr_b, _state_b) = node(b).await;
    let id = ssehub::conformance::unique_id("multinode");
    let mut on_a = open(addr_a, &id, None).await;
    // Published on B, received on A, in order.
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(post(addr_b, &id).await);
    }
    let mut got = Vec::new();
    let mut last_id = String::new();
    for _ in 0..20 {
        let e = next(&mut on_a).await;
        last_id = e.id.clone().unwrap();
        got.push(count(&e));
    }
    assert_eq!(got, sent);
    // Leave A; miss ten events published on A; reconnect to B with Last-Event-ID.
    drop(on_a);
    let deadline = tokio::time::Instant::now() + WAIT;
    while state_a.comments.session_count(&id) > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut missed = Vec::new();
    for _ in 0..10 {
        missed.push(post(addr_a, &id).await);
    }
    let mut on_b = open(addr_b, &id, Some(&last_id)).await;
    let mut replayed = Vec::new();
    for _ in 0..10 {
        let e = next(&mut on_b).await;
        assert_eq!(e.event, "message", "resumed, not reset");
        replayed.push(count(&e));
    }
    assert_eq!(replayed, missed, "exactly the missed events, in order");
    // And live again afterwards, with nothing extra in between.
    let after = post(addr_a, &id).await;
    assert_eq!(count(&next(&mut on_b).await), after);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_servers() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let a = ssehub::RedisBroker::connect(&url).await.unwrap();
    let b = ssehub::RedisBroker::connect(&url).await.unwrap();
    two_nodes_share_events_and_resume(Arc::new(a), Arc::new(b)).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_servers() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    let a = ssehub::NatsBroker::connect(url.clone()).await.unwrap();
    let b = ssehub::NatsBroker::connect(url).await.unwrap();
    two_nodes_share_events_and_resume(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test]
async fn memory_single_node_for_comparison() {
    let broker: Arc<dyn Broker> = Arc::new(ssehub::MemoryBroker::new());
    two_nodes_share_events_and_resume(broker.clone(), broker).await;
}

/// One demo process (a node) on `backend`; killed (SIGKILL) when dropped.
struct NodeProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn node_process(backend: &str) -> NodeProcess {
    let port = ssehub_test_support::free_port();
    let child = fixture::comments_cmd()
        .args(["--addr", &format!("127.0.0.1:{port}"), "--backend", backend])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the demo");
    let node = NodeProcess {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    assert!(
        ssehub_test_support::wait_for_port(port, Duration::from_secs(60)).await,
        "the demo did not listen on {port}"
    );
    node
}

async fn sessions(addr: SocketAddr, id: &str) -> u64 {
    let v: serde_json::Value = reqwest::get(format!("http://{addr}/api/sessions/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["sessions"].as_u64().unwrap()
}

/// Two demo processes on one broker: each shows the sessions of both ("2 viewing"), and when
/// one is SIGKILLed with its viewer's stream open, the other drops it within the presence
/// window (15 s by default; the time taken is printed).
async fn presence_survives_a_killed_node(backend: &str) {
    let a = node_process(backend).await;
    let mut b = node_process(backend).await;
    let id = ssehub::conformance::unique_id("presence");
    let _on_a = open(a.addr, &id, None).await;
    let _on_b = open(b.addr, &id, None).await;
    ssehub_test_support::wait_until_within("2 viewing on both nodes", WAIT * 3, async || {
        sessions(a.addr, &id).await == 2 && sessions(b.addr, &id).await == 2
    })
    .await;
    let killed = tokio::time::Instant::now();
    b.child.kill().expect("SIGKILL");
    let _ = b.child.wait();
    ssehub_test_support::wait_until_within("the killed node drops out", WAIT * 6, async || {
        sessions(a.addr, &id).await == 1
    })
    .await;
    eprintln!(
        "presence ({backend}): a SIGKILLed node dropped out of the count after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_drops_a_killed_node() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    presence_survives_a_killed_node(&url).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_presence_drops_a_killed_node() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    presence_survives_a_killed_node(&url).await;
}
