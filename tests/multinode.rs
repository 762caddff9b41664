//! Two demo servers in one test, on different ports, sharing one Redis (then one NATS): a
//! subscriber on A receives what is published on B, in order; a client that leaves A and
//! reconnects to B with its `Last-Event-ID` receives exactly what it missed — on one channel,
//! and on several channels of one multiplexed connection; presence counts the sessions of both
//! nodes, pushes it live, and drops a SIGKILLed node.

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ssehub::Broker;
use ssehub_core::sse_parser::ParsedEvent;
use ssehub_test_support::sse_client::SseClient;

const WAIT: Duration = Duration::from_secs(20);

async fn node(broker: Arc<dyn Broker>) -> (SocketAddr, comments::AppState) {
    let state = comments::AppState::new(broker).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = comments::app(state.clone());
    tokio::spawn(async move { comments::serve(listener, app).await });
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
    let id = ssehub_core::conformance::unique_id("multinode");
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

async fn post_vote(addr: SocketAddr, id: &str) -> u64 {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/votes/{id}"))
        .json(&serde_json::json!({"vote": "up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    v["up"].as_u64().unwrap()
}

/// `GET /api/sse?channel=comments/{id}&channel=votes/{id}` on `addr`.
async fn open_multiplexed(addr: SocketAddr, id: &str, last: Option<&str>) -> SseClient {
    let headers: Vec<(&str, &str)> = last.map(|l| ("last-event-id", l)).into_iter().collect();
    let path = format!("/api/sse?channel=comments/{id}&channel=votes/{id}");
    let c = SseClient::connect(addr, &path, &headers).await.unwrap();
    assert_eq!(c.status(), 200);
    c
}

/// One connection, two channels, two nodes: what was missed on each channel while away is
/// replayed on the other node exactly — per channel, in order, no initial event, no reset —
/// including the channel that delivered nothing on the first connection.
async fn multiplexed_resume_across_nodes(a: Arc<dyn Broker>, b: Arc<dyn Broker>) {
    let (addr_a, state_a) = node(a).await;
    let (addr_b, _state_b) = node(b).await;
    let id = ssehub_core::conformance::unique_id("mux");
    // Both topics have history before the client comes; on this connection only comments will
    // arrive, so the votes channel's position is the one it got at connect (its topic's tail).
    post_vote(addr_b, &id).await;
    post(addr_b, &id).await;
    let mut on_a = open_multiplexed(addr_a, &id, None).await;
    let mut initial = [next(&mut on_a).await, next(&mut on_a).await];
    initial.sort_by(|x, y| x.event.cmp(&y.event));
    assert_eq!(initial[0].event, format!("comments/{id}"));
    assert_eq!(initial[1].event, format!("votes/{id}"));
    let (mut comments, votes) = (Vec::new(), Vec::<u64>::new());
    for _ in 0..3 {
        comments.push(post(addr_b, &id).await);
    }
    let mut last_id = String::new();
    let (mut got_comments, mut got_votes) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let e = next(&mut on_a).await;
        last_id = e.id.clone().expect("a live event has an id");
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        if e.event == format!("comments/{id}") {
            got_comments.push(v["commentCount"].as_u64().unwrap());
        } else {
            assert_eq!(e.event, format!("votes/{id}"));
            got_votes.push(v["up"].as_u64().unwrap());
        }
    }
    assert_eq!((got_comments, got_votes), (comments, votes));

    drop(on_a);
    ssehub_test_support::wait_until("A's session gone", async || {
        state_a.comments.session_count(&id) == 0 && state_a.votes.session_count(&id) == 0
    })
    .await;
    let (mut missed_comments, mut missed_votes) = (Vec::new(), Vec::new());
    for i in 0..5 {
        if i % 2 == 0 {
            missed_votes.push(post_vote(addr_a, &id).await);
        } else {
            missed_comments.push(post(addr_a, &id).await);
        }
    }
    let mut on_b = open_multiplexed(addr_b, &id, Some(&last_id)).await;
    let (mut replayed_comments, mut replayed_votes) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let e = next(&mut on_b).await;
        assert!(e.id.is_some(), "no initial event on an exact resume: {e:?}");
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        if e.event == format!("comments/{id}") {
            replayed_comments.push(v["commentCount"].as_u64().unwrap());
        } else {
            assert_eq!(e.event, format!("votes/{id}"), "resumed, not reset: {e:?}");
            replayed_votes.push(v["up"].as_u64().unwrap());
        }
    }
    assert_eq!(
        replayed_comments, missed_comments,
        "the missed comments, in order"
    );
    assert_eq!(replayed_votes, missed_votes, "the missed votes, in order");
    // Live again, with nothing extra in between.
    let after = post_vote(addr_a, &id).await;
    let e = next(&mut on_b).await;
    assert_eq!(e.event, format!("votes/{id}"));
    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(v["up"].as_u64(), Some(after));
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_multiplexed_resume_across_nodes() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let a = ssehub::RedisBroker::connect(&url).await.unwrap();
    let b = ssehub::RedisBroker::connect(&url).await.unwrap();
    multiplexed_resume_across_nodes(Arc::new(a), Arc::new(b)).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_multiplexed_resume_across_nodes() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    let a = ssehub::NatsBroker::connect(url.clone()).await.unwrap();
    let b = ssehub::NatsBroker::connect(url).await.unwrap();
    multiplexed_resume_across_nodes(Arc::new(a), Arc::new(b)).await;
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

/// Two servers on a Redis Cluster (3 masters, sharded pub/sub).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_two_servers() {
    let Some(url) = ssehub_test_support::redis_cluster::redis_cluster_url().await else {
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
    let id = ssehub_core::conformance::unique_id("presence");
    // A viewer of A's live presence channel (which is not itself a comments stream).
    let mut viewers = SseClient::connect(a.addr, &format!("/api/sse?channel=presence/{id}"), &[])
        .await
        .unwrap();
    assert_eq!(viewers.status(), 200);
    let joined = tokio::time::Instant::now();
    let _on_a = open(a.addr, &id, None).await;
    let _on_b = open(b.addr, &id, None).await;
    ssehub_test_support::wait_until_within("2 viewing on both nodes", WAIT * 3, async || {
        sessions(a.addr, &id).await == 2 && sessions(b.addr, &id).await == 2
    })
    .await;
    until_viewing(&mut viewers, &id, 2).await;
    eprintln!(
        "presence ({backend}): \"2 viewing\" pushed on A {:.2} s after the two streams opened",
        joined.elapsed().as_secs_f64()
    );
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
    until_viewing(&mut viewers, &id, 1).await;
    eprintln!(
        "presence ({backend}): \"1 viewing\" pushed on A {:.1} s after the SIGKILL",
        killed.elapsed().as_secs_f64()
    );
}

/// Read presence events of `presence/{id}` until one says `n` sessions.
async fn until_viewing(viewers: &mut SseClient, id: &str, n: u64) {
    loop {
        let e = next(viewers).await;
        assert_eq!(e.event, format!("presence/{id}"));
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["type"], "presence");
        assert_eq!(v["discussionId"], id);
        if v["sessions"].as_u64() == Some(n) {
            return;
        }
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_drops_a_killed_node() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    presence_survives_a_killed_node(&url).await;
}

/// Two demo processes started with `--backend redis+cluster://…`: a comment posted on one
/// reaches a stream on the other, and both keep the same count in the cluster.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_demo_processes_share_events_and_counts() {
    let Some(url) = ssehub_test_support::redis_cluster::redis_cluster_url().await else {
        return;
    };
    let a = node_process(&url).await;
    let b = node_process(&url).await;
    let id = ssehub_core::conformance::unique_id("cluster-demo");
    let mut on_b = open(b.addr, &id, None).await;
    for _ in 0..5 {
        let n = post(a.addr, &id).await;
        assert_eq!(count(&next(&mut on_b).await), n);
    }
    let res = reqwest::get(format!("http://{}/api/comments/{id}", b.addr))
        .await
        .unwrap();
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["commentCount"].as_u64(), Some(5), "B reads A's count");
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_presence_drops_a_killed_node() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    presence_survives_a_killed_node(&url).await;
}
