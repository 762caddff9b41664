//! End to end over real TCP on the comments example, read with a published SSE parser
//! (`eventsource-stream`) for normal traffic and the spec-following test parser for byte-level
//! checks. The adapter's own behaviour on purpose-built endpoints is tested in
//! `adapter-axum/tests/http.rs`.

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use ssehub::MemoryBroker;
use ssehub::sse_parser::SseParser;
use ssehub_test_support::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn demo() -> (SocketAddr, comments::AppState) {
    let state = comments::AppState::new(Arc::new(MemoryBroker::new())).expect("state");
    (serve(comments::app(state.clone())).await, state)
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>;

async fn connect(url: &str, last_event_id: Option<&str>) -> (reqwest::Response, Option<Events>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let res = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("connect in time")
        .expect("send");
    (res, None)
}

async fn open(url: &str, last_event_id: Option<&str>) -> Events {
    let (res, _) = connect(url, last_event_id).await;
    assert_eq!(res.status(), 200);
    Box::pin(
        res.bytes_stream()
            .eventsource()
            .map(|e| e.expect("well-formed event stream")),
    )
}

async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("event in time")
        .expect("stream open")
}

/// A client reading with the spec-following parser, which also reports `retry:` and comments.
struct Raw {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    parser: SseParser,
    events: std::collections::VecDeque<ssehub::sse_parser::ParsedEvent>,
}

impl Raw {
    async fn open(url: &str) -> Self {
        let (res, _) = connect(url, None).await;
        assert_eq!(res.status(), 200);
        Raw {
            body: Box::pin(res.bytes_stream()),
            parser: SseParser::new(),
            events: Default::default(),
        }
    }

    /// The next chunk, parsed; `false` when the stream ended.
    async fn pump(&mut self) -> bool {
        match tokio::time::timeout(WAIT, self.body.next())
            .await
            .expect("data in time")
        {
            Some(Ok(chunk)) => {
                self.parser.feed(&chunk);
                self.events.extend(self.parser.take_events());
                true
            }
            _ => false,
        }
    }

    async fn next_event(&mut self) -> ssehub::sse_parser::ParsedEvent {
        while self.events.is_empty() {
            assert!(self.pump().await, "stream ended");
        }
        self.events.pop_front().expect("event")
    }

    /// Read to the end of the stream; the last retry hint seen.
    async fn until_end(&mut self) -> Option<u64> {
        while self.pump().await {}
        self.parser.retry()
    }
}

async fn post(addr: SocketAddr, id: &str) -> serde_json::Value {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/comments/{id}"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

#[tokio::test]
async fn headers_retry_and_initial_event() {
    let (addr, state) = demo().await;
    post(addr, "d1").await;
    let (res, _) = connect(&format!("http://{addr}/api/sse/comments/d1"), None).await;
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-length").is_none());
    let mut raw = Raw {
        body: Box::pin(res.bytes_stream()),
        parser: SseParser::new(),
        events: Default::default(),
    };
    let initial = raw.next_event().await;
    assert_eq!(
        raw.parser.retry(),
        Some(3000),
        "retry hint before the initial event"
    );
    assert_eq!(initial.id, None);
    assert_eq!(initial.event, "message");
    let v: serde_json::Value = serde_json::from_str(&initial.data).expect("json");
    assert_eq!(v["type"], "comment-added");
    assert_eq!(v["discussionId"], "d1");
    assert_eq!(v["commentCount"], 1);
    assert!(v["timestamp"].as_u64().is_some());
    assert_eq!(state.comments.session_count("d1"), 1);
}

/// Skip the retry hint and the initial event.
/// Open a stream; a fresh one (no `last`) starts with the initial event, which is read here.
/// A resume starts with exactly the missed events, or with a `reset` then the initial event.
async fn open_live(addr: SocketAddr, id: &str, last: Option<&str>) -> Events {
    let mut events = open(&format!("http://{addr}/api/sse/comments/{id}"), last).await;
    if last.is_none() {
        let initial = next(&mut events).await;
        assert!(initial.id.is_empty());
    }
    events
}

#[tokio::test]
async fn publish_reaches_two_hundred_subscribers() {
    let (addr, state) = demo().await;
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(open_live(addr, "big", None).await);
    }
    wait_until("200 sessions", async || {
        state.comments.session_count("big") == 200
    })
    .await;
    for n in 1..=3u64 {
        post(addr, "big").await;
        for c in &mut clients {
            let e = next(c).await;
            let v: serde_json::Value = serde_json::from_str(&e.data).expect("json");
            assert_eq!(v["commentCount"], n);
            assert!(!e.id.is_empty());
        }
    }
}

#[tokio::test]
async fn resume_with_last_event_id_gets_exactly_the_missed_events() {
    let (addr, state) = demo().await;
    let mut c = open_live(addr, "r", None).await;
    post(addr, "r").await;
    let seen = next(&mut c).await;
    drop(c);
    wait_until("no session left on r", async || {
        state.comments.session_count("r") == 0
    })
    .await;
    for _ in 0..5 {
        post(addr, "r").await;
    }
    // Header.
    let mut c = open_live(addr, "r", Some(&seen.id)).await;
    let mut counts = Vec::new();
    for _ in 0..5 {
        let e = next(&mut c).await;
        assert_eq!(e.event, "message");
        let v: serde_json::Value = serde_json::from_str(&e.data).expect("json");
        counts.push(v["commentCount"].as_u64().expect("count"));
    }
    assert_eq!(counts, [2, 3, 4, 5, 6]);
    // Query parameter (polyfills), and the header wins over it.
    let url = format!("http://{addr}/api/sse/comments/r?lastEventId={}", seen.id);
    let mut q = open(&url, None).await;
    // An exact resume: no initial event, the first missed event first.
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&next(&mut q).await.data).unwrap()["commentCount"],
        2
    );
    let mut both = open(&url, Some("junk id")).await;
    // Not resumable: the reset, then the initial event.
    assert_eq!(next(&mut both).await.event, "reset");
    assert!(next(&mut both).await.id.is_empty());
}

#[tokio::test]
async fn unknown_or_malformed_ids_get_reset_not_an_error() {
    let (addr, _) = demo().await;
    for bad in ["123-456", "not valid!", "%41", "\"quoted\""] {
        let mut c = open(&format!("http://{addr}/api/sse/comments/u"), None).await;
        drop(c.next().await);
        let mut c = open_live(addr, "u", Some(bad)).await;
        let e = next(&mut c).await;
        assert_eq!(e.event, "reset", "for {bad:?}");
        post(addr, "u").await;
        assert_eq!(next(&mut c).await.event, "message");
    }
}

#[tokio::test]
async fn bad_requests_are_answered_before_any_stream() {
    let (addr, state) = demo().await;
    let client = reqwest::Client::new();
    for path in [
        "/api/sse/comments/a:b",
        "/api/sse/comments/%2A",
        "/api/sse/comments/a%0Ab",
    ] {
        let res = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{path}");
        assert!(res.text().await.unwrap().contains("invalid"));
    }
    let long = "x".repeat(300);
    let res = client
        .get(format!("http://{addr}/api/sse/comments/{long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let res = client
            .request(method.clone(), format!("http://{addr}/api/sse/comments/ok"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method}");
        assert_eq!(res.headers()["allow"], "GET, HEAD");
    }
    let res = client
        .head(format!("http://{addr}/api/sse/comments/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(state.comments.total_sessions(), 0);
    assert_eq!(state.comments.channel_count(), 0);
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_a_retry_hint() {
    let (addr, state) = demo().await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = Raw::open(&format!("http://{addr}/api/sse/comments/s{}", i % 4)).await;
        c.next_event().await; // the initial event
        clients.push(c);
    }
    wait_until("20 sessions", async || {
        state.comments.total_sessions() == 20
    })
    .await;
    state.endpoint.shutdown();
    let mut hints = std::collections::HashSet::new();
    for mut c in clients {
        let r = c.until_end().await.expect("retry hint");
        assert!((3000..=5000).contains(&r), "{r}");
        hints.insert(r);
    }
    assert!(hints.len() > 1, "final retry hints are spread");
    wait_until("no session left", async || {
        state.comments.total_sessions() == 0
    })
    .await;
    // New streams are told to come back later, with a 200 so browsers do.
    let mut c = Raw::open(&format!("http://{addr}/api/sse/comments/s0")).await;
    assert!(c.until_end().await.is_some());
    assert!(c.events.is_empty());
}

#[tokio::test]
async fn compression_in_the_stack_leaves_the_stream_alone() {
    let (_, state) = demo().await;
    let app = comments::app(state.clone()).layer(tower_http::compression::CompressionLayer::new());
    let addr = serve(app).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /api/sse/comments/z HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("commentCount") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(!text.contains("content-encoding"), "{text}");
    assert!(text.contains("retry: 3000"));
    // The HTML page is still compressed, so the layer is active.
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn the_demo_exposes_prometheus_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // A local recorder for this test's thread only would miss the hub's tasks: install globally
    // (once per test binary; no other test here installs one).
    metrics::set_global_recorder(recorder).expect("first recorder");

    let state = comments::AppState::new(Arc::new(MemoryBroker::new()))
        .unwrap()
        .with_metrics(handle);
    let addr = serve(comments::app(state.clone())).await;
    let mut c = Raw::open(&format!("http://{addr}/api/sse/comments/m")).await;
    c.next_event().await;
    post(addr, "m").await;
    c.next_event().await;
    let mut bad = Raw::open(&format!("http://{addr}/api/sse/comments/m")).await;
    drop(bad.next_event().await);
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ssehub_sessions",
        "ssehub_channels",
        "ssehub_events_published_total",
        "ssehub_events_delivered_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}
