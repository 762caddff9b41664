//! `Serve::lean_streams`: event stream requests served by the lean driver (chunked, closed
//! after the stream, the client's leaving noticed), everything else by hyper unchanged
//! (keep-alive, bodies, pipelining, upgrades, HTTP/2 prior knowledge, no smuggling), layers
//! applied, limits and deadlines kept, graceful shutdown waiting for lean streams, and the same
//! answers as hyper for a corpus of odd request heads.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_millis(500);

/// What the test routes share: streams dropped (their guard ran), and a switch that ends
/// `/held` streams.
#[derive(Clone, Default)]
struct Shared {
    dropped: Arc<AtomicUsize>,
    end_held: Arc<Notify>,
}

/// Counts a dropped stream body (what runs ssehub's `on_disconnect`).
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn event_stream(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// `data: 0` at once, then a keep-alive comment every 50 ms, forever.
async fn endless(State(s): State<Shared>) -> Response {
    let guard = Guard(s.dropped.clone());
    let first = futures_util::stream::once(async { "data: 0\n\n".to_owned() });
    let ticks = futures_util::stream::unfold(guard, |g| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((": ka\n\n".to_owned(), g))
    });
    event_stream(Body::from_stream(
        first.chain(ticks).map(Ok::<_, std::io::Error>),
    ))
}

/// Three events, then the end.
async fn finite() -> Response {
    let events = (0..3).map(|n| Ok::<_, std::io::Error>(format!("id: {n}\ndata: {n}\n\n")));
    event_stream(Body::from_stream(futures_util::stream::iter(events)))
}

/// `data: held` and then nothing until `end_held` is notified.
async fn held(State(s): State<Shared>) -> Response {
    let end = s.end_held.clone();
    let first = futures_util::stream::once(async { "data: held\n\n".to_owned() });
    let last = futures_util::stream::once(async move {
        end.notified().await;
        "data: bye\n\n".to_owned()
    });
    event_stream(Body::from_stream(
        first.chain(last).map(Ok::<_, std::io::Error>),
    ))
}

async fn require_token(req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::AUTHORIZATION) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, "no token").into_response()
    }
}

fn app(shared: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: String| async move { body }))
        .route("/sse", get(endless))
        .route("/finite", get(finite))
        .route("/held", get(held))
        .route(
            "/secret",
            get(finite).route_layer(middleware::from_fn(require_token)),
        )
        .with_state(shared)
}

async fn start_with(
    lean: bool,
    shared: Shared,
    configure: impl FnOnce(ssehub_axum::Serve) -> ssehub_axum::Serve,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = configure(ssehub_axum::serve(listener, app(shared)).lean_streams(lean));
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

async fn start(lean: bool) -> (SocketAddr, Shared) {
    let shared = Shared::default();
    (start_with(lean, shared.clone(), |s| s).await, shared)
}

/// Everything the server sends until it closes, until nothing came for `quiet`, or for at
/// most ten times `quiet` in all.
async fn read_for(conn: &mut TcpStream, quiet: Duration) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let end = tokio::time::Instant::now() + quiet * 10;
    loop {
        let until = end.min(tokio::time::Instant::now() + quiet);
        match tokio::time::timeout_at(until, conn.read(&mut buf)).await {
            Err(_) => return (all, false),
            Ok(Ok(0) | Err(_)) => return (all, true),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Send `request` on a new connection; the bytes back and whether the server closed.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let (bytes, closed) = read_for(&mut conn, Duration::from_millis(700)).await;
    (String::from_utf8_lossy(&bytes).into_owned(), closed)
}

fn served_lean(response: &str) -> bool {
    head_of(response)
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
}

/// The status line and headers, each line ending with CRLF.
fn head_of(response: &str) -> String {
    format!(
        "{}\r\n",
        response.split("\r\n\r\n").next().unwrap_or_default()
    )
}

const STREAM_HEAD: &str = "Host: x\r\nAccept: text/event-stream\r\n";

#[tokio::test]
async fn a_stream_is_served_lean_chunked_and_closed_after_its_end() {
    let (addr, _) = start(true).await;
    let (text, closed) = exchange(
        addr,
        format!("GET /finite HTTP/1.1\r\n{STREAM_HEAD}\r\n").as_bytes(),
    )
    .await;
    assert!(closed, "not closed after the stream: {text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
    let headers: Vec<&str> = lines.collect();
    for expected in [
        "content-type: text/event-stream",
        "transfer-encoding: chunked",
        "connection: close",
    ] {
        assert!(
            headers.contains(&expected),
            "{expected} missing: {headers:?}"
        );
    }
    assert!(
        headers.iter().any(|h| h.starts_with("date: ")),
        "{headers:?}"
    );
    assert_eq!(
        body,
        "f\r\nid: 0\ndata: 0\n\n\r\nf\r\nid: 1\ndata: 1\n\n\r\nf\r\nid: 2\ndata: 2\n\n\r\n0\r\n\r\n"
    );
    // HTTP/1.0: no chunks, the end of the connection ends the body.
    let (text, closed) = exchange(
        addr,
        b"GET /finite HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    assert!(closed);
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.ends_with("\r\n\r\nid: 0\ndata: 0\n\nid: 1\ndata: 1\n\nid: 2\ndata: 2\n\n"));
}

#[tokio::test]
async fn a_client_leaving_a_lean_stream_is_noticed_and_keep_alives_pass() {
    let (addr, shared) = start(true).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET /sse HTTP/1.1\r\n{STREAM_HEAD}\r\n").as_bytes())
        .await
        .unwrap();
    let (bytes, closed) = read_for(&mut conn, Duration::from_millis(400)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(!closed);
    assert!(served_lean(&text), "{text}");
    assert!(text.contains("data: 0\n\n"), "{text}");
    assert!(text.matches(": ka\n\n").count() >= 3, "{text}");
    assert_eq!(shared.dropped.load(Ordering::SeqCst), 0);
    drop(conn);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A client that sends more bytes on a lean stream breaks the one-request rule: closed.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET /sse HTTP/1.1\r\n{STREAM_HEAD}\r\n").as_bytes())
        .await
        .unwrap();
    let (first, _) = read_for(&mut conn, Duration::from_millis(200)).await;
    assert!(served_lean(&String::from_utf8_lossy(&first)));
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (rest, closed) = read_for(&mut conn, Duration::from_secs(5)).await;
    assert!(closed, "still open");
    assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"));
}

#[tokio::test]
async fn reqwest_reads_a_lean_stream() {
    let (addr, shared) = start(true).await;
    let client = reqwest::Client::new();
    let text = client
        .get(format!("http://{addr}/finite"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        "id: 0\ndata: 0\n\nid: 1\ndata: 1\n\nid: 2\ndata: 2\n\n"
    );
    let res = client
        .get(format!("http://{addr}/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["connection"], "close");
    let mut events = eventsource_stream::Eventsource::eventsource(res.bytes_stream());
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.data, "0");
    drop(events);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn other_requests_go_to_hyper() {
    let (addr, _) = start(true).await;
    // Keep-alive: two requests on one connection, neither closed.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (bytes, closed) = read_for(&mut conn, Duration::from_millis(300)).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(!closed && text.starts_with("HTTP/1.1 200 OK") && text.ends_with("hello"));
        assert!(!served_lean(&text), "{text}");
    }
    // A body.
    let (text, _) = exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Length: 4\r\n\r\nping",
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("ping"),
        "{text}"
    );
    assert!(!served_lean(&text));
    // A stream request pipelined with a second request: hyper answers both.
    let (text, _) = exchange(
        addr,
        format!("GET /finite HTTP/1.1\r\n{STREAM_HEAD}\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(
        text.contains("data: 2") && text.ends_with("hello"),
        "{text}"
    );
    // An upgrade request.
    let (text, _) = exchange(
        addr,
        format!("GET /finite HTTP/1.1\r\n{STREAM_HEAD}Connection: upgrade\r\nUpgrade: foo\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && !served_lean(&text),
        "{text}"
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_goes_to_hyper() {
    let (addr, _) = start(true).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for path in ["/", "/finite"] {
        let res = client
            .get(format!("http://{addr}{path}"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.version(), reqwest::Version::HTTP_2);
        assert_eq!(res.status(), 200);
        assert!(!res.text().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_body_on_a_stream_request_is_not_smuggled() {
    let (addr, _) = start(true).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let with_length = format!(
        "GET /finite HTTP/1.1\r\n{STREAM_HEAD}Content-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let chunked = format!(
        "GET /finite HTTP/1.1\r\n{STREAM_HEAD}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    for request in [with_length, chunked] {
        let (text, _) = exchange(addr, request.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(!served_lean(&text), "{text}");
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "smuggled: {text}");
        assert!(!text.contains("404"), "{text}");
    }
}

#[tokio::test]
async fn a_refusal_from_a_layer_reaches_the_client_and_closes() {
    let (addr, _) = start(true).await;
    let (text, closed) = exchange(
        addr,
        format!("GET /secret HTTP/1.1\r\n{STREAM_HEAD}\r\n").as_bytes(),
    )
    .await;
    assert!(closed);
    assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
    let head = head_of(&text).to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-length: 8\r\n"), "{text}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nno token"), "{text}");
    // With the token, the stream.
    let (text, _) = exchange(
        addr,
        format!("GET /secret HTTP/1.1\r\n{STREAM_HEAD}Authorization: t\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.contains("data: 2"),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_heads_are_hyper_s_to_refuse() {
    let (addr, _) = start(true).await;
    // Over the lean driver's 16 KiB: hyper serves it, as without the driver.
    let big = format!(
        "GET /finite HTTP/1.1\r\n{STREAM_HEAD}X-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (text, _) = exchange(addr, big.as_bytes()).await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && !served_lean(&text),
        "{text}"
    );
    // Over hyper's own limit (about 400 KB): 431.
    let huge = format!(
        "GET /finite HTTP/1.1\r\n{STREAM_HEAD}X-Big: {}\r\n\r\n",
        "a".repeat(500_000)
    );
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let _ = conn.write_all(huge.as_bytes()).await;
    let (bytes, closed) = read_for(&mut conn, Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "{text}");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stream_request_head_that_dawdles_is_cut_off() {
    let shared = Shared::default();
    let addr = start_with(true, shared, |s| s.header_read_timeout(Some(DEADLINE))).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if conn
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            _ => assert!(i < 19, "the slow head was still accepted"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn graceful_shutdown_waits_for_lean_streams() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = ssehub_axum::serve(listener, app(shared.clone()))
        .lean_streams(true)
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
    let mut server = tokio::spawn(async move { server.await.unwrap() });
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET /held HTTP/1.1\r\n{STREAM_HEAD}\r\n").as_bytes())
        .await
        .unwrap();
    let (first, _) = read_for(&mut stream, Duration::from_millis(300)).await;
    assert!(String::from_utf8_lossy(&first).contains("data: held"));
    // A connection that has sent nothing yet does not hold the server.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut server)
            .await
            .is_err(),
        "the server ended with a stream open"
    );
    let (_, idle_closed) = read_for(&mut idle, Duration::from_secs(2)).await;
    assert!(idle_closed, "an idle connection was kept through shutdown");
    shared.end_held.notify_one();
    let (rest, closed) = read_for(&mut stream, Duration::from_secs(5)).await;
    assert!(closed && String::from_utf8_lossy(&rest).contains("data: bye"));
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server did not end after its last stream")
        .unwrap();
}

/// The body of a response: after its head, de-chunked when chunked.
fn body_of(response: &str) -> String {
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return String::new();
    };
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test]
async fn lean_and_hyper_answer_odd_heads_alike() {
    let (lean, _) = start(true).await;
    let (hyper, _) = start(false).await;
    let a = "Accept: text/event-stream";
    let corpus: Vec<String> = vec![
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("get /finite HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nhOsT: x\r\naCCEPT: TEXT/EVENT-STREAM\r\n\r\n"),
        format!("GET /finite HTTP/1.1\nHost: x\n{a}\n\n"),
        format!("\r\nGET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nX-Fold: a\r\n b\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\nHost: y\r\n{a}\r\n\r\n"),
        format!(
            "GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nX-Huge: {}\r\n\r\n",
            "h".repeat(30_000)
        ),
        format!("G@T /finite HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nX-Nul: a\0b\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\n{a}\r\n\r\n"),
        format!("GET http://x/finite HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.0\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.0\r\n{a}\r\nConnection: keep-alive\r\n\r\n"),
        format!("GET /finite HTTP/2.0\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nContent-Length: 0\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nContent-Length: -1\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nTransfer-Encoding: gzip\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nX Space: 1\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nNoColon\r\n\r\n"),
        format!("GET /fin ite HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /nowhere HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /secret HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /echo HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite?x=%20&y HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nConnection: close\r\n\r\n"),
        format!("GET * HTTP/1.1\r\nHost: x\r\n{a}\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}, text/html;q=0.5\r\n\r\n"),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n"),
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        format!("GET /finite HTTP/1.1\r\nHost: x\r\n{a}\r\nX-Bin: \u{e9}t\u{e9}\r\n\r\n"),
    ];
    let answers = futures_util::future::join_all(corpus.iter().map(|head| async move {
        let (l, h) = tokio::join!(
            exchange(lean, head.as_bytes()),
            exchange(hyper, head.as_bytes())
        );
        (head, l.0, h.0)
    }))
    .await;
    let mut lean_served = 0;
    for (head, l, h) in answers {
        let status = |r: &str| r.lines().next().unwrap_or_default().to_owned();
        assert_eq!(status(&l), status(&h), "{head:?}\nlean: {l}\nhyper: {h}");
        // Bodies match too: the lean path frames them differently (`Connection: close`,
        // chunked or sized) but carries the same bytes. The `date` header and keep-alive
        // legitimately differ: a lean connection closes after its one response.
        assert_eq!(body_of(&l), body_of(&h), "{head:?}\nlean: {l}\nhyper: {h}");
        if served_lean(&l) && !head.contains("Connection: close") {
            lean_served += 1;
        }
    }
    assert!(
        lean_served >= 8,
        "only {lean_served} heads took the lean path"
    );
}
