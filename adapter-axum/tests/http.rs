//! The HTTP adapter over real TCP and as a tower service, on purpose-built endpoints: hooks,
//! disconnects, slow clients, capacity, the layer's pass-through, keep-alives and the raw wire.
//! (The end-to-end tests on the comments example stay in the facade's `tests/http.rs`.)

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use ssehub_axum::{PathParams, SseEndpoint, SseLayer};
use ssehub_core::sse_parser::SseParser;
use ssehub_core::{ChannelManager, QueueLimits};
use ssehub_memory::MemoryBroker;
use ssehub_test_support::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(10);

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
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

    /// Read to the end of the stream; the last retry hint seen.
    async fn until_end(&mut self) -> Option<u64> {
        while self.pump().await {}
        self.parser.retry()
    }
}

fn manager() -> ChannelManager<u64> {
    ChannelManager::builder(MemoryBroker::new())
        .key_prefix("t")
        .linger(Duration::ZERO)
        .build()
        .unwrap()
}

#[tokio::test]
async fn validate_and_authorize_hooks() {
    let m = manager();
    let endpoint = SseEndpoint::new(m.clone(), "/sse/{tenant}/{room}")
        .unwrap()
        .validate(|p: &PathParams| p.get("room").is_some_and(|r| r.starts_with("room")))
        .authorize(|parts: &http::request::Parts, p: &PathParams| {
            let token = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let tenant = p.get("tenant").unwrap_or_default().to_owned();
            async move {
                match token {
                    None => Err(http::StatusCode::UNAUTHORIZED),
                    Some(t) if t == format!("Bearer {tenant}") => Ok(()),
                    Some(_) => Err(http::StatusCode::FORBIDDEN),
                }
            }
        });
    let addr = serve(Router::new().route_service(endpoint.pattern(), endpoint.clone())).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/sse/acme/room1");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let res = client
        .get(&url)
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let bad = format!("http://{addr}/sse/acme/lobby");
    let res = client
        .get(&bad)
        .header("authorization", "Bearer acme")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = client
        .get(&url)
        .header("authorization", "Bearer acme")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(m.total_sessions(), 1);
}

#[tokio::test]
async fn disconnect_runs_on_disconnect_once_and_frees_the_channel() {
    let m = manager();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let endpoint = SseEndpoint::new(m.clone(), "/sse/{id}")
        .unwrap()
        .on_disconnect(move |_p: &PathParams| {
            c2.fetch_add(1, Ordering::SeqCst);
        });
    let addr = serve(Router::new().layer(SseLayer::new(endpoint))).await;
    let c = Raw::open(&format!("http://{addr}/sse/one")).await;
    wait_until("one session", async || m.session_count("one") == 1).await;
    drop(c);
    wait_until("on_disconnect ran", async || {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_until("channel and subscription released", async || {
        m.channel_count() == 0 && m.broker().active_subscriptions() == 0
    })
    .await;
    assert_eq!(m.session_count("one"), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly once");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_others_keep_receiving() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .queue_limits(QueueLimits::new(8, 256 * 1024))
        .build()
        .unwrap();
    let disconnected = Arc::new(AtomicUsize::new(0));
    let d2 = disconnected.clone();
    let endpoint = SseEndpoint::new(m.clone(), "/sse/{id}")
        .unwrap()
        .on_disconnect(move |_p: &PathParams| {
            d2.fetch_add(1, Ordering::SeqCst);
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = ssehub_axum::WriteTimeoutListener::new(listener, Duration::from_millis(500));
    let app = Router::new().route_service("/sse/{id}", endpoint);
    tokio::spawn(async move { axum::serve(listener, app).await });
    // The slow client sends its request and never reads.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /sse/s HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut fast = open(&format!("http://{addr}/sse/s"), None).await;
    wait_until("both clients connected", async || m.session_count("s") == 2).await;
    let payload = "x".repeat(32 * 1024);
    // Publish until the slow client is cut off: its queue bound, then the write timeout (500 ms)
    // closing its connection. A bound far above what that takes on a loaded machine.
    let mut received = 0;
    for _ in 0..4000 {
        m.publish("s", &payload).await.unwrap();
        let e = next(&mut fast).await;
        assert_eq!(e.data.len(), payload.len() + 2);
        received += 1;
        if disconnected.load(Ordering::SeqCst) == 1 {
            break;
        }
    }
    wait_until("the slow client cut off", async || {
        disconnected.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(m.session_count("s"), 1, "the fast client is still there");
    m.publish("s", &"after".to_owned()).await.unwrap();
    assert_eq!(next(&mut fast).await.data, "\"after\"");
    assert!(
        received < 4000,
        "the slow client was cut off while the fast one received"
    );
    drop(slow);
}

#[tokio::test]
async fn over_capacity_answers_retry_or_503() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_sessions(1)
        .build()
        .unwrap();
    let endpoint = SseEndpoint::new(m.clone(), "/sse/{id}").unwrap();
    let strict = endpoint
        .clone()
        .unavailable(ssehub_axum::Unavailable::ServiceUnavailable);
    let addr = serve(Router::new().route_service("/sse/{id}", endpoint)).await;
    let strict_addr = serve(Router::new().route_service("/sse/{id}", strict)).await;
    let _first = Raw::open(&format!("http://{addr}/sse/a")).await;
    wait_until("one session", async || m.total_sessions() == 1).await;
    let mut second = Raw::open(&format!("http://{addr}/sse/a")).await;
    let hint = second.until_end().await.expect("retry");
    assert!(hint >= 3000);
    let res = reqwest::get(format!("http://{strict_addr}/sse/a"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_full_channel_table_answers_503_with_retry_after_whatever_the_policy() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_channels(1)
        .build()
        .unwrap();
    // The default policy answers other refusals with `200` + `retry:`; a full channel table is
    // said plainly.
    let endpoint = SseEndpoint::new(m.clone(), "/sse/{id}").unwrap();
    let addr = serve(Router::new().route_service("/sse/{id}", endpoint)).await;
    let _first = Raw::open(&format!("http://{addr}/sse/a")).await;
    wait_until("one channel", async || m.channel_count() == 1).await;
    let res = reqwest::get(format!("http://{addr}/sse/b")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    // Another session on the open channel is no new channel: it is served.
    let res = reqwest::get(format!("http://{addr}/sse/a")).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_layer_passes_other_requests_through_untouched() {
    let m = manager();
    let endpoint = SseEndpoint::new(m.clone(), "/events/{id}").unwrap();
    let inner = tower::service_fn(|req: http::Request<String>| async move {
        let body = format!("inner saw {} {}", req.method(), req.uri());
        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
    });
    let svc = tower::ServiceBuilder::new()
        .layer(SseLayer::new(endpoint))
        .service(inner);
    let res = svc
        .clone()
        .oneshot(
            http::Request::post("/other?x=1")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"inner saw POST /other?x=1");
    let res = svc
        .oneshot(
            http::Request::get("/events/42")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&frame[..], b"retry: 3000\n\n");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_comments_every_fifteen_seconds() {
    let m = manager();
    let endpoint = SseEndpoint::new(m.clone(), "/events/{id}").unwrap();
    let res = endpoint
        .clone()
        .oneshot(http::Request::get("/events/k").body(String::new()).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut parser = SseParser::new();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    parser.feed(&first);
    let start = tokio::time::Instant::now();
    for i in 1..=3 {
        let f = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b":\n\n");
        assert!(start.elapsed() >= Duration::from_secs(15 * i));
        parser.feed(&f);
    }
    assert_eq!(parser.comments(), 3);
    assert!(parser.take_events().is_empty());
}

#[tokio::test]
async fn raw_wire_is_spec_exact() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .event_name(|_| "note")
        .build()
        .unwrap();
    let endpoint = SseEndpoint::new(m.clone(), "/e/{id}").unwrap();
    let addr = serve(Router::new().route_service("/e/{id}", endpoint)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /e/w HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    wait_until("one session", async || m.session_count("w") == 1).await;
    let nasty = "line1\r\nevent: forged\rid: 666\nretry: 1\n\ndata: x\u{0}é🌍".to_owned();
    let id = m.publish("w", &nasty).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut body_started = false;
    while events.is_empty() {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&buf[..n]);
        if !body_started {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                raw.drain(..i + 4);
                body_started = true;
            } else {
                continue;
            }
        }
        // De-chunk: HTTP/1.1 chunked encoding, "<hex>\r\n<data>\r\n".
        while let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
            let len = usize::from_str_radix(std::str::from_utf8(&raw[..i]).unwrap(), 16).unwrap();
            if raw.len() < i + 2 + len + 2 {
                break;
            }
            parser.feed(&raw[i + 2..i + 2 + len]);
            raw.drain(..i + 2 + len + 2);
        }
        events.extend(parser.take_events());
    }
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "note");
    assert_eq!(events[0].id.as_deref(), Some(id.as_str()));
    let decoded: String = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(decoded, nasty);
    assert_eq!(parser.retry(), Some(3000));
}

/// Over HTTP/2 (h2c with prior knowledge, as behind a proxy that speaks h2 to its upstream):
/// many streams on one connection, each with its events; a resume from `Last-Event-ID` on the
/// same connection; a `reset` for an unknown id; keep-alive comments; and a stream closed by the
/// client leaves its channel while the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_over_http2() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    let endpoint = SseEndpoint::new(m.clone(), "/h2/{id}")
        .unwrap()
        .keep_alive(Some(Duration::from_millis(200)));
    let addr = serve(Router::new().merge(endpoint.into_router())).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let get = |path: String, last: Option<String>| {
        let client = client.clone();
        async move {
            let mut req = client.get(format!("http://{addr}{path}"));
            if let Some(id) = last {
                req = req.header("last-event-id", id);
            }
            let res = tokio::time::timeout(WAIT, req.send())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["content-type"], "text/event-stream");
            let events: Events = Box::pin(
                res.bytes_stream()
                    .eventsource()
                    .map(|e| e.expect("well-formed event stream")),
            );
            events
        }
    };

    // 50 streams on one connection, each on its own channel.
    let mut streams = Vec::new();
    for i in 0..50 {
        streams.push(get(format!("/h2/{i}"), None).await);
    }
    wait_until("50 sessions", async || m.total_sessions() == 50).await;
    let mut ids = Vec::new();
    for i in 0..50u64 {
        ids.push(m.publish(&i.to_string(), &i).await.unwrap());
    }
    for (i, s) in streams.iter_mut().enumerate() {
        let e = next(s).await;
        assert_eq!(e.data, i.to_string());
        assert_eq!(e.id, ids[i].as_str());
    }

    // A client closes one stream: its channel goes, the others and the connection stay.
    drop(streams.remove(0));
    wait_until("one stream gone", async || m.total_sessions() == 49).await;
    let more = m.publish("1", &100).await.unwrap();
    assert_eq!(next(&mut streams[0]).await.data, "100");

    // Resume on the same connection: exactly the missed events.
    let missed = [
        m.publish("0", &7).await.unwrap(),
        m.publish("0", &8).await.unwrap(),
    ];
    let mut resumed = get("/h2/0".into(), Some(ids[0].as_str().to_owned())).await;
    let e = next(&mut resumed).await;
    assert_eq!((e.data.as_str(), e.id.as_str()), ("7", missed[0].as_str()));
    let e = next(&mut resumed).await;
    assert_eq!((e.data.as_str(), e.id.as_str()), ("8", missed[1].as_str()));

    // An unknown id: a reset.
    let mut reset = get("/h2/0".into(), Some("zz9-5".into())).await;
    let e = next(&mut reset).await;
    assert_eq!(e.event, "reset");

    // Keep-alive comments reach an idle stream (read raw, since the parser drops comments).
    let res = client
        .get(format!("http://{addr}/h2/quiet"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let mut body = res.bytes_stream();
    let mut seen = Vec::new();
    while !seen.windows(3).any(|w| w == b":\n\n") {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("a keep-alive in time")
            .expect("stream open")
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    let _ = more;
}
