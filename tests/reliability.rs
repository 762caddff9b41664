//! Reliability and abuse, with the faults injected for real: clients that churn, vanish, stop
//! reading or go silent; hostile names, ids, origins. (Leaks: `tests/leaks.rs`, alone in its
//! process so its memory reading is its own; broker faults: each backend's `tests/faults.rs`.)
//! Every wait is bounded; nothing asserts on wall-clock durations.
//!
//! Sizes are CI-sized; `SSEHUB_CHURN_SECS` and `SSEHUB_CHURN_RATE` scale the churn test up to
//! the 30 s at 1,000 events/s.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use ssehub::adapter::WriteTimeoutListener;
use ssehub::{Broker, ChannelManager, MemoryBroker, PathParams, SseEndpoint};
use ssehub_test_support::proxy::TcpProxy;
use ssehub_test_support::sse_client::SseClient;
use ssehub_test_support::wait_until;

const LIMIT: Duration = Duration::from_secs(30);

struct Server<E = u64> {
    addr: SocketAddr,
    manager: ChannelManager<E>,
    endpoint: SseEndpoint<E>,
    disconnects: Arc<AtomicUsize>,
}

async fn serve<E: serde::Serialize + Send + Sync + 'static>(
    broker: Arc<dyn Broker>,
    tune: impl FnOnce(SseEndpoint<E>) -> SseEndpoint<E>,
) -> Server<E> {
    // Warnings (a broker gap, a lagging subscription) show with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let manager = ChannelManager::<E>::builder_dyn(broker)
        .key_prefix("rel")
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    let disconnects = Arc::new(AtomicUsize::new(0));
    let d = disconnects.clone();
    let endpoint = tune(
        SseEndpoint::new(manager.clone(), "/events/{id}")
            .unwrap()
            .retry(Duration::from_millis(200))
            .on_disconnect(move |_p: &PathParams| {
                d.fetch_add(1, Ordering::SeqCst);
            }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = WriteTimeoutListener::new(listener, Duration::from_secs(1));
    let app = Router::new().merge(endpoint.clone().into_router());
    tokio::spawn(async move { ssehub::serve(listener, app).lean_streams(true).await });
    Server {
        addr,
        manager,
        endpoint,
        disconnects,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 200 clients reconnect in a loop with their Last-Event-ID while events are published; each
/// must see every event exactly once, in order, with no reset.
///
/// `max_quota` bounds how many events a client reads before it reconnects, at 250 events/s
/// (scaled with the rate, so clients reconnect as often at any rate; NATS replays cost a
/// JetStream consumer each, about 4-12 ms here, so its clients reconnect less often).
async fn resume_under_churn(broker: Arc<dyn Broker>, max_quota: u64) {
    let secs = env_u64("SSEHUB_CHURN_SECS", 6);
    let rate = env_u64("SSEHUB_CHURN_RATE", 250);
    let total = secs * rate;
    let server = serve::<u64>(broker, |e| e).await;
    let rid = ssehub_core::conformance::unique_id("churn");
    let path = format!("/events/{rid}");
    // Reconnect as often per second of events at any rate: the quota scales with the rate.
    let max_quota = (max_quota * rate / 250).max(1);
    let mut first = Vec::new();
    for _ in 0..200 {
        let c = SseClient::connect(server.addr, &path, &[]).await.unwrap();
        assert_eq!(c.status(), 200);
        first.push(c);
    }
    wait_until("200 sessions", async || {
        server.manager.session_count(&rid) == 200
    })
    .await;
    let reconnects = Arc::new(AtomicUsize::new(0));
    let cut_off = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, mut c) in first.into_iter().enumerate() {
        let path = path.clone();
        let reconnects = reconnects.clone();
        let cut_off = cut_off.clone();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut next = 0u64;
            let mut last = String::new();
            let mut seed = i as u64 * 7919 + 1;
            loop {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let quota = 1 + (seed >> 33) % max_quota;
                for _ in 0..quota {
                    // A stream the server ended (this client fell a queue behind and was cut
                    // off, or its replay could not be answered and it was asked to retry) is
                    // resumed like a browser would: reconnect with the last id.
                    let Some(e) = c.next_event().await else {
                        assert!(!c.stalled(), "client {i} stalled at {next}");
                        cut_off.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    assert_ne!(e.event, "reset", "client {i} got a reset at {next}");
                    let n: u64 = e.data.parse().unwrap();
                    assert_eq!(n, next, "client {i}: gap or duplicate");
                    // The id of the last event consumed (the client may have parsed more).
                    last = e.id.clone().unwrap();
                    next += 1;
                    if next == total {
                        return;
                    }
                }
                drop(c);
                reconnects.fetch_add(1, Ordering::Relaxed);
                c = SseClient::connect(addr, &path, &[("last-event-id", &last)])
                    .await
                    .unwrap();
                assert_eq!(c.status(), 200);
            }
        }));
    }
    let pace = Duration::from_secs(1) / u32::try_from(rate).unwrap();
    let mut tick = tokio::time::interval(pace);
    for n in 0..total {
        tick.tick().await;
        server.manager.publish(&rid, &n).await.unwrap();
    }
    // Generous: on a loaded machine the clients may trail the publisher by a lot; this bounds
    // the test, it measures nothing.
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("clients finish")
            .unwrap();
    }
    eprintln!(
        "churn: {total} events at {rate}/s, 200 clients, {} reconnects ({} after the server \
         ended a stream: a client cut off behind its queue, or refused while a replay could not \
         be answered), all contiguous",
        reconnects.load(Ordering::Relaxed),
        cut_off.load(Ordering::Relaxed)
    );
    assert!(
        reconnects.load(Ordering::Relaxed) >= 200,
        "every client reconnected at least once on average"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_under_churn_memory() {
    resume_under_churn(
        Arc::new(MemoryBroker::builder().history(100_000).build()),
        40,
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_under_churn_redis() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let b = ssehub::RedisBroker::builder(&url)
        .history(100_000)
        .build()
        .await
        .unwrap();
    resume_under_churn(Arc::new(b), 40).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_under_churn_nats() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    let b = ssehub::NatsBroker::builder(url)
        .prefix(format!("churn{}", std::process::id()))
        .history(100_000)
        .build()
        .await
        .unwrap();
    resume_under_churn(Arc::new(b), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_checked_again_on_every_reconnect() {
    let allowed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let a = allowed.clone();
    let server = serve::<u64>(Arc::new(MemoryBroker::new()), move |e| {
        e.authorize(move |_parts: &http::request::Parts, _p: &PathParams| {
            let ok = a.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(http::StatusCode::FORBIDDEN)
                }
            }
        })
    })
    .await;
    let mut c = SseClient::connect(server.addr, "/events/secret", &[])
        .await
        .unwrap();
    server.manager.publish("secret", &1).await.unwrap();
    let e = c.next_event().await.unwrap();
    let last = c.last_event_id().to_owned();
    assert_eq!(e.data, "1");
    drop(c);
    server.manager.publish("secret", &2).await.unwrap();
    allowed.store(false, Ordering::SeqCst);
    let mut again = SseClient::connect(server.addr, "/events/secret", &[("last-event-id", &last)])
        .await
        .unwrap();
    assert_eq!(again.status(), 403);
    assert!(
        again.until_end().await.is_empty(),
        "no replayed events after revocation"
    );
    assert!(!again.stalled(), "the refusal is a complete response");
    assert!(!String::from_utf8_lossy(again.body()).contains("data:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_network_goes_silent_is_detected_and_freed() {
    let server = serve::<String>(Arc::new(MemoryBroker::new()), |e| {
        e.keep_alive(Some(Duration::from_millis(200)))
    })
    .await;
    let proxy = TcpProxy::start(server.addr).await.unwrap();
    let mut c = SseClient::connect(proxy.addr(), "/events/silent", &[])
        .await
        .unwrap();
    server
        .manager
        .publish("silent", &"hello".to_owned())
        .await
        .unwrap();
    assert!(c.next_event().await.is_some());
    proxy.blackhole(true);
    let silent_at = std::time::Instant::now();
    let mut published = 0u64;
    // Events keep coming; the silent client's buffers fill, its writes stall, and the write
    // timeout (or the queue bound) frees it. Bounded by count, not time.
    let payload = "x".repeat(16 * 1024);
    for n in 1..10_000u64 {
        server.manager.publish("silent", &payload).await.unwrap();
        published = n;
        if server.disconnects.load(Ordering::SeqCst) == 1 {
            break;
        }
        if n % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    wait_until("the silent client is freed", async || {
        server.disconnects.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_until("no session left", async || {
        server.manager.total_sessions() == 0
    })
    .await;
    eprintln!(
        "silent network: client freed {:.2} s after it went silent, {published} events of 16 KiB \
         published meanwhile",
        silent_at.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_clients_dropped_at_once_all_resume_gap_free() {
    let clients_n = env_u64("SSEHUB_DROP_CLIENTS", 5_000) as usize;
    let server = serve::<u64>(
        Arc::new(MemoryBroker::builder().history(10_000).build()),
        |e| e,
    )
    .await;
    let mut clients = Vec::with_capacity(clients_n);
    for _ in 0..clients_n {
        clients.push(
            SseClient::connect(server.addr, "/events/crowd", &[])
                .await
                .unwrap(),
        );
    }
    wait_until("all connected", async || {
        server.manager.session_count("crowd") == clients_n
    })
    .await;
    for n in 0..5u64 {
        server.manager.publish("crowd", &n).await.unwrap();
    }
    let mut last_ids = Vec::with_capacity(clients_n);
    for c in &mut clients {
        for n in 0..5u64 {
            assert_eq!(c.next_event().await.unwrap().data, n.to_string());
        }
        last_ids.push(c.last_event_id().to_owned());
    }
    drop(clients); // every connection at once
    let dropped_at = std::time::Instant::now();
    let publisher = {
        let m = server.manager.clone();
        tokio::spawn(async move {
            for n in 5..105u64 {
                m.publish("crowd", &n).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for chunk in last_ids.chunks(clients_n.div_ceil(8)) {
        let chunk = chunk.to_vec();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut open = Vec::new();
            for last in &chunk {
                let c = SseClient::connect(addr, "/events/crowd", &[("last-event-id", last)])
                    .await
                    .unwrap();
                assert_eq!(c.status(), 200);
                open.push(c);
            }
            for c in &mut open {
                for n in 5..105u64 {
                    let e = c.next_event().await.expect("resumed stream");
                    assert_eq!(
                        e.data,
                        n.to_string(),
                        "gap or duplicate after the mass drop"
                    );
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("resumed in time")
            .unwrap();
    }
    publisher.await.unwrap();
    eprintln!(
        "mass drop: {clients_n} clients dropped at once, all reconnected with Last-Event-ID and \
         read 100 events each gap-free within {:.1} s",
        dropped_at.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_spreads_a_thousand_reconnects() {
    let server = serve::<u64>(Arc::new(MemoryBroker::new()), |e| {
        e.retry(Duration::from_secs(1))
            .retry_jitter(Duration::from_secs(10))
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..1000 {
        clients.push(
            SseClient::connect(server.addr, &format!("/events/s{}", i % 10), &[])
                .await
                .unwrap(),
        );
    }
    wait_until("1000 sessions", async || {
        server.manager.total_sessions() == 1000
    })
    .await;
    server.endpoint.shutdown();
    let mut hints = Vec::new();
    for c in &mut clients {
        c.until_end().await;
        assert!(!c.stalled(), "shutdown must end every stream");
        hints.push(c.retry().unwrap());
    }
    wait_until("every on_disconnect ran", async || {
        server.disconnects.load(Ordering::SeqCst) == 1000
    })
    .await;
    hints.sort_unstable();
    let (lo, hi) = (hints[0], hints[hints.len() - 1]);
    assert!(lo >= 1000 && hi <= 11_000);
    // Spread over the jitter window: each tenth of it holds some clients, none holds most.
    let mut buckets = [0usize; 10];
    for h in &hints {
        buckets[usize::try_from((h - 1000) / 1001).unwrap().min(9)] += 1;
    }
    assert!(
        buckets.iter().all(|b| *b > 20 && *b < 250),
        "retry hints not spread: {buckets:?}"
    );
    eprintln!("shutdown: 1000 retry hints {lo}..{hi} ms, per tenth of the window {buckets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_channel_names_are_refused_without_reaching_a_channel() {
    let server = serve::<u64>(Arc::new(MemoryBroker::new()), |e| e).await;
    let long = "a".repeat(129);
    for path in [
        "/events/",
        "/events/%00",
        "/events/a%0D%0Aevent:%20x",
        "/events/%FF%FE",
        "/events/a%3Ab",
        "/events/%2A",
        "/events/a%20b",
        "/events/%3E",
        "/events/a%5Bb%5D",
        "/events/a%7Bb%7D",
        &format!("/events/{long}"),
    ] {
        let mut c = SseClient::connect(server.addr, path, &[]).await.unwrap();
        assert!(
            c.status() == 400 || c.status() == 404,
            "{path}: {}",
            c.status()
        );
        c.until_end().await;
        assert!(!c.stalled(), "{path}: the refusal is a complete response");
    }
    // A percent-encoded non-ASCII id is decoded and served.
    let c = SseClient::connect(server.addr, "/events/Z%C3%BCrich", &[])
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
    wait_until("decoded id", async || {
        server.manager.session_count("Zürich") == 1
    })
    .await;
    assert_eq!(server.manager.total_sessions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_id_from_another_channel_never_replays_that_channel() {
    let server = serve::<u64>(Arc::new(MemoryBroker::new()), |e| e).await;
    for n in 0..5 {
        server
            .manager
            .publish("tenant-a", &(1000 + n))
            .await
            .unwrap();
    }
    let id_a = server.manager.publish("tenant-a", &1005).await.unwrap();
    for n in 0..3 {
        server
            .manager
            .publish("tenant-b", &(2000 + n))
            .await
            .unwrap();
    }
    let mut c = SseClient::connect(
        server.addr,
        "/events/tenant-b",
        &[("last-event-id", id_a.as_str())],
    )
    .await
    .unwrap();
    server.manager.publish("tenant-b", &2003).await.unwrap();
    loop {
        let e = c.next_event().await.unwrap();
        if e.event == "reset" {
            continue;
        }
        let n: u64 = e.data.parse().unwrap();
        assert!(n >= 2000, "tenant a's event {n} leaked into tenant b");
        if n == 2003 {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_with_credentials_echoes_the_exact_origin_and_allows_last_event_id() {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let manager = ChannelManager::<u64>::builder(MemoryBroker::new())
        .build()
        .unwrap();
    let endpoint = SseEndpoint::new(manager, "/events/{id}").unwrap();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::exact(http::HeaderValue::from_static(
            "https://app.example",
        )))
        .allow_credentials(true)
        .allow_methods([http::Method::GET])
        .allow_headers([http::HeaderName::from_static("last-event-id")]);
    let app = Router::new()
        .layer(ssehub::SseLayer::new(endpoint))
        .layer(cors);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { ssehub::serve(listener, app).lean_streams(true).await });

    let mut pre = SseClient::request(
        addr,
        "OPTIONS",
        "/events/x",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "last-event-id"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(pre.status(), 200);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("last-event-id")
    );
    pre.until_end().await;

    let get = SseClient::connect(addr, "/events/x", &[("origin", "https://app.example")])
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        get.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(get.header("content-type"), Some("text/event-stream"));
    let evil = SseClient::connect(addr, "/events/x", &[("origin", "https://evil.example")])
        .await
        .unwrap();
    // `exact` always names the one allowed origin, so a browser on another origin is refused.
    assert_ne!(
        evil.header("access-control-allow-origin"),
        Some("https://evil.example")
    );
    assert_ne!(evil.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_at_and_over_the_maximum() {
    let m =
        ChannelManager::<String>::builder(MemoryBroker::builder().max_payload(64 * 1024).build())
            .build()
            .unwrap();
    let mut s = m
        .subscribe("big", ssehub::SubscribeOptions::new())
        .await
        .unwrap();
    let at = "x".repeat(64 * 1024 - 2); // JSON quotes make it exactly the maximum
    m.publish("big", &at).await.unwrap();
    let over = "x".repeat(64 * 1024 - 1);
    assert!(matches!(
        m.publish("big", &over).await,
        Err(ssehub::Error::PayloadTooLarge { .. })
    ));
    use futures_util::StreamExt;
    let mut p = ssehub_core::sse_parser::SseParser::new();
    let mut events = Vec::new();
    while events.is_empty() {
        let chunk = tokio::time::timeout(LIMIT, s.next())
            .await
            .unwrap()
            .unwrap();
        p.feed(&chunk);
        events = p.take_events();
    }
    assert_eq!(events[0].data.len(), 64 * 1024);
    assert_eq!(events.len(), 1, "the refused event was never delivered");
}
