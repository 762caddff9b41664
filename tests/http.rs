//! End to end over real TCP on the comments example, read with a published SSE parser
//! (`eventsource-stream`) for normal traffic and the spec-following test parser for byte-level
//! checks. The adapter's own behaviour on purpose-built endpoints is tested in
//! `adapter-axum/tests/http.rs`.
//!
//! Also the demo's own surface: its command line (the built example binary: `--help`, an
//! unknown flag, `SSEHUB_ADDR`), `/healthz`, `/metrics` listing every ssehub metric from
//! startup, `/api/sessions`, votes, and the numbers two nodes share through Redis or NATS.

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::{comments, comments_cmd};

use std::net::SocketAddr;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use ssehub::{Broker, Capabilities, EventId, MemoryBroker, Message, Replay, Subscription, Topic};
use ssehub_core::sse_parser::SseParser;
use ssehub_test_support::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { comments::serve(listener, router).await });
    addr
}

async fn demo() -> (SocketAddr, comments::AppState) {
    let state = comments::AppState::new(Arc::new(MemoryBroker::new())).expect("state");
    (serve(comments::app(state.clone())).await, state)
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>;

async fn connect(url: &str, last_event_id: Option<&str>) -> (reqwest::Response, Option<Events>) {
    // The `Accept` header `EventSource` sends, which the demo's lean driver serves.
    let mut req = reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream");
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
    events: std::collections::VecDeque<ssehub_core::sse_parser::ParsedEvent>,
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

    async fn next_event(&mut self) -> ssehub_core::sse_parser::ParsedEvent {
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
    // Written by the lean HTTP/1 driver (`comments::serve`): one stream per connection.
    assert_eq!(h["connection"], "close");
    assert_eq!(h["transfer-encoding"], "chunked");
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

/// Every metric name `core/src/metric_names.rs` defines (its `pub const NAME: &str = "ssehub_…"`
/// lines), read from the source so that a metric added there is checked here too.
fn metric_names() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/core/src/metric_names.rs");
    let source = std::fs::read_to_string(path).expect("core/src/metric_names.rs");
    let names: Vec<String> = source
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"ssehub_"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect();
    assert!(names.len() >= 11, "metric names in {path}: {names:?}");
    names
}

/// Every ssehub metric is in this Prometheus text, the labelled ones with every known label.
fn assert_every_metric(text: &str) {
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    for name in metric_names() {
        assert!(
            samples
                .iter()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "{name} missing from:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} not described in:\n{text}"
        );
    }
    for reason in [
        "malformed-id",
        "out-of-window",
        "no-history",
        "broker-gap",
        "overflow",
        "history-trimmed",
        "epoch-changed",
        "data-lost",
    ] {
        let sample = format!("ssehub_resets_total{{reason=\"{reason}\"}}");
        assert!(text.contains(&sample), "{sample} missing from:\n{text}");
    }
    for backend in ["memory", "redis", "nats"] {
        let sample = format!("ssehub_broker_reconnects_total{{backend=\"{backend}\"}}");
        assert!(text.contains(&sample), "{sample} missing from:\n{text}");
    }
}

#[tokio::test]
async fn the_demo_exposes_prometheus_metrics() {
    // What the demo's `main` does: install the recorder globally (a local recorder for this
    // test's thread only would miss the hub's tasks; once per test binary, no other test here
    // installs one), then register every metric at zero.
    let handle = comments::install_metrics().expect("first recorder");

    let state = comments::AppState::new(Arc::new(MemoryBroker::new()))
        .unwrap()
        .with_metrics(handle);
    let addr = serve(comments::app(state.clone())).await;
    // Every metric is there before any event.
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_every_metric(&text);
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

// ---- The command line: the built example binary. ----

#[test]
fn cli_help_prints_the_usage() {
    let out = comments_cmd().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for part in [
        "Usage:",
        "--addr <HOST:PORT>",
        "SSEHUB_ADDR",
        "127.0.0.1:3000",
        "--backend",
        "SSEHUB_BACKEND",
        "memory",
    ] {
        assert!(help.contains(part), "{part:?} missing from:\n{help}");
    }
}

#[test]
fn cli_refuses_an_unknown_flag_with_exit_2_and_the_usage() {
    for args in [
        &["--port", "3001"][..],
        &["--no-such-flag"],
        &["--backend", "carrier-pigeon"],
        &["--addr", "no-port"],
    ] {
        let out = comments_cmd().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        if args[0] == "--no-such-flag" || args[0] == "--port" {
            assert!(stderr.contains("Usage: "), "{args:?}: {stderr}");
        }
    }
}

/// Kills the child when dropped, so a failed assertion leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn cli_listens_on_ssehub_addr_with_every_metric_from_startup() {
    let port = ssehub_test_support::free_port();
    let mut server = Running(
        comments_cmd()
            .env("SSEHUB_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let health = loop {
        if let Ok(res) = client.get(format!("{base}/healthz")).send().await {
            break res;
        }
        assert!(server.0.try_wait().unwrap().is_none(), "the example exited");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer on {base}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.status(), 200);
    let v: serde_json::Value = health.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({ "status": "ok", "backend": "memory" })
    );
    // Before any event, `main` has every metric registered.
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_every_metric(&text);
    // Streams are served by the lean driver by default (`Connection: close`: one per connection).
    assert_eq!(
        stream_connection_header(&base).await.as_deref(),
        Some("close")
    );
}

/// The `Connection` header of a stream's response from the demo at `base`.
async fn stream_connection_header(base: &str) -> Option<String> {
    let res = reqwest::Client::new()
        .get(format!("{base}/api/sse/comments/lean"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.headers()
        .get("connection")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cli_lean_streams_false_serves_streams_with_hyper() {
    let port = ssehub_test_support::free_port();
    let _server = Running(
        comments_cmd()
            .args(["--lean-streams", "false"])
            .env("SSEHUB_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(ssehub_test_support::wait_for_port(port, WAIT).await);
    let base = format!("http://127.0.0.1:{port}");
    // hyper keeps the connection alive after the stream.
    assert_eq!(stream_connection_header(&base).await, None);
}

// ---- /healthz, /api/sessions, votes, and the store shared by two nodes. ----

#[tokio::test]
async fn healthz_answers_200_with_the_backend() {
    let (addr, _) = demo().await;
    let res = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({ "status": "ok", "backend": "memory" })
    );
}

/// A memory broker whose health check fails, as a broker that lost its server does.
#[derive(Debug)]
struct Unhealthy(MemoryBroker);

#[async_trait::async_trait]
impl Broker for Unhealthy {
    async fn publish(&self, topic: &Topic, message: Message) -> ssehub::Result<EventId> {
        self.0.publish(topic, message).await
    }
    async fn subscribe(&self, topic: &Topic) -> ssehub::Result<Subscription> {
        self.0.subscribe(topic).await
    }
    async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> ssehub::Result<Replay> {
        self.0.replay(topic, after, limit).await
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
        self.0.id_order(a, b)
    }
    fn active_subscriptions(&self) -> usize {
        self.0.active_subscriptions()
    }
    async fn health(&self) -> ssehub::Result<()> {
        Err(ssehub::Error::broker(
            "test",
            true,
            "connection refused",
            None,
        ))
    }
}

#[tokio::test]
async fn healthz_answers_503_with_the_error_when_the_broker_is_down() {
    let state = comments::AppState::new(Arc::new(Unhealthy(MemoryBroker::new()))).unwrap();
    let addr = serve(comments::app(state)).await;
    let res = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["backend"], "unhealthy");
    assert!(
        v["error"].as_str().unwrap().contains("connection refused"),
        "{v}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn healthz_follows_a_real_redis_going_down() {
    use ssehub_test_support::redis::{RedisOptions, RedisServer};
    use ssehub_test_support::server::BrokerServer;
    let Some(mut server) =
        ssehub_test_support::or_skip(RedisServer::start(RedisOptions::new()).await)
    else {
        return;
    };
    let broker = ssehub::RedisBroker::connect(&server.url()).await.unwrap();
    let state = comments::AppState::new(Arc::new(broker)).unwrap();
    let addr = serve(comments::app(state)).await;
    let res = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v, serde_json::json!({ "status": "ok", "backend": "redis" }));
    server.kill();
    let res = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["backend"], "redis");
    assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
}

async fn get_json(url: String) -> (u16, serde_json::Value) {
    let res = reqwest::get(url).await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn sessions_counts_the_open_streams_of_a_discussion() {
    let (addr, _) = demo().await;
    let sessions = async || get_json(format!("http://{addr}/api/sessions/sess")).await;
    assert_eq!(
        sessions().await,
        (200, serde_json::json!({ "sessions": 0 }))
    );
    let first = open_live(addr, "sess", None).await;
    let second = open_live(addr, "sess", None).await;
    // A stream of another discussion, and the same discussion's votes, are not counted.
    let _other = open_live(addr, "other", None).await;
    let _votes = open(&format!("http://{addr}/api/sse/votes/sess"), None).await;
    wait_until("two sessions", async || {
        sessions().await == (200, serde_json::json!({ "sessions": 2 }))
    })
    .await;
    drop(first);
    drop(second);
    wait_until("no session", async || {
        sessions().await == (200, serde_json::json!({ "sessions": 0 }))
    })
    .await;
    let (status, v) = get_json(format!("http://{addr}/api/sessions/a:b")).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("invalid"), "{v}");
}

async fn vote(addr: SocketAddr, id: &str, body: &str) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/votes/{id}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn data(e: &Event) -> serde_json::Value {
    serde_json::from_str(&e.data).unwrap()
}

#[tokio::test]
async fn votes_keep_totals_and_reach_the_votes_stream() {
    let (addr, _) = demo().await;
    let mut stream = open(&format!("http://{addr}/api/sse/votes/v1"), None).await;
    let initial = next(&mut stream).await;
    assert!(initial.id.is_empty());
    let v = data(&initial);
    assert_eq!(
        (&v["type"], &v["discussionId"], &v["up"], &v["down"]),
        (&"vote-cast".into(), &"v1".into(), &0.into(), &0.into())
    );
    for (body, up, down) in [
        (r#"{"vote":"up"}"#, 1, 0),
        (r#"{"vote":"up"}"#, 2, 0),
        (r#"{"vote":"down"}"#, 2, 1),
    ] {
        let (status, answer) = vote(addr, "v1", body).await;
        assert_eq!(status, 200, "{answer}");
        let event = next(&mut stream).await;
        assert!(!event.id.is_empty());
        assert_eq!(event.event, "message");
        for v in [&answer, &data(&event)] {
            assert_eq!(v["type"], "vote-cast");
            assert_eq!(v["discussionId"], "v1");
            assert_eq!(
                (v["up"].as_u64(), v["down"].as_u64()),
                (Some(up), Some(down))
            );
            assert!(v["timestamp"].as_u64().is_some());
        }
    }
    assert_eq!(
        get_json(format!("http://{addr}/api/votes/v1")).await,
        (
            200,
            serde_json::json!({ "discussionId": "v1", "up": 2, "down": 1 })
        )
    );
    // The comments of v1 are untouched, and a new votes stream starts from the totals.
    assert_eq!(
        get_json(format!("http://{addr}/api/comments/v1")).await.1["commentCount"],
        0
    );
    let mut late = open(&format!("http://{addr}/api/sse/votes/v1"), None).await;
    let v = data(&next(&mut late).await);
    assert_eq!((v["up"].as_u64(), v["down"].as_u64()), (Some(2), Some(1)));
}

#[tokio::test]
async fn votes_answer_400_to_anything_but_up_or_down() {
    let (addr, _) = demo().await;
    let mut stream = open(&format!("http://{addr}/api/sse/votes/v2"), None).await;
    next(&mut stream).await;
    for body in [
        r#"{"vote":"sideways"}"#,
        r#"{"vote":"UP"}"#,
        r#"{"vote":1}"#,
        r#"{"vote":null}"#,
        r#"{}"#,
        r#"{"votes":"up"}"#,
        r#"{"vote":"up","extra":true}"#,
        r#"["up"]"#,
        r#""up""#,
        r#"{"vote":"up""#,
        "up",
        "",
    ] {
        let (status, v) = vote(addr, "v2", body).await;
        assert_eq!(status, 400, "{body:?}: {v}");
        assert!(v["error"].is_string(), "{body:?}: {v}");
    }
    let client = reqwest::Client::new();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = client
            .post(format!("http://{addr}/api/votes/v2"))
            .body(r#"{"vote":"up"}"#);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 400, "{content_type:?}");
    }
    // An invalid discussion id is refused too.
    assert_eq!(vote(addr, "a:b", r#"{"vote":"up"}"#).await.0, 400);
    // Nothing was counted or published: the next event is the next good vote's.
    assert_eq!(
        get_json(format!("http://{addr}/api/votes/v2")).await.1,
        serde_json::json!({ "discussionId": "v2", "up": 0, "down": 0 })
    );
    assert_eq!(vote(addr, "v2", r#"{"vote":"down"}"#).await.0, 200);
    let v = data(&next(&mut stream).await);
    assert_eq!((v["up"].as_u64(), v["down"].as_u64()), (Some(0), Some(1)));
}

/// Two nodes over two brokers on one shared server, each with its own connection to the shared
/// store: a comment or a vote made on one gives the same numbers on the other.
#[cfg(any(feature = "redis", feature = "nats"))]
async fn two_nodes_share_counts(url: &str, a: Arc<dyn Broker>, b: Arc<dyn Broker>) {
    let node = async |broker| {
        let store = comments::Store::open(url).await.unwrap();
        let state = comments::AppState::with_store(broker, store).unwrap();
        serve(comments::app(state)).await
    };
    let (a, b) = (node(a).await, node(b).await);
    let id = ssehub_core::conformance::unique_id("shared-counts");
    assert_eq!(post(a, &id).await["commentCount"], 1);
    assert_eq!(post(a, &id).await["commentCount"], 2);
    let (status, v) = get_json(format!("http://{b}/api/comments/{id}")).await;
    assert_eq!((status, &v["commentCount"]), (200, &2.into()), "{v}");
    // The next comment, on B, counts on from A's.
    assert_eq!(post(b, &id).await["commentCount"], 3);
    // A fresh stream on A starts from the shared count.
    let mut on_a = open(&format!("http://{a}/api/sse/comments/{id}"), None).await;
    assert_eq!(data(&next(&mut on_a).await)["commentCount"], 3);
    // Votes likewise.
    assert_eq!(vote(a, &id, r#"{"vote":"up"}"#).await.0, 200);
    let (_, v) = vote(b, &id, r#"{"vote":"down"}"#).await;
    assert_eq!((v["up"].as_u64(), v["down"].as_u64()), (Some(1), Some(1)));
    for node in [a, b] {
        assert_eq!(
            get_json(format!("http://{node}/api/votes/{id}")).await.1,
            serde_json::json!({ "discussionId": id, "up": 1, "down": 1 })
        );
    }
    // Concurrent votes on both nodes are all counted (Redis: HINCRBY; NATS: compare-and-set).
    let votes = (0..10).map(|i| vote(if i % 2 == 0 { a } else { b }, &id, r#"{"vote":"up"}"#));
    for (status, _) in futures_util::future::join_all(votes).await {
        assert_eq!(status, 200);
    }
    assert_eq!(
        get_json(format!("http://{b}/api/votes/{id}")).await.1["up"],
        11
    );
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis_share_counts() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let a = ssehub::RedisBroker::connect(&url).await.unwrap();
    let b = ssehub::RedisBroker::connect(&url).await.unwrap();
    two_nodes_share_counts(&url, Arc::new(a), Arc::new(b)).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_nats_share_counts() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    let a = ssehub::NatsBroker::connect(url.clone()).await.unwrap();
    let b = ssehub::NatsBroker::connect(url.clone()).await.unwrap();
    two_nodes_share_counts(&url, Arc::new(a), Arc::new(b)).await;
}
