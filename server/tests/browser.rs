//! A page in headless Chromium subscribes to the hub with a token through `@ssehub/client`
//! (`connect` with `getToken`, from the package's built `dist/`), across the hub's CORS: every
//! event arrives once, in order, while the short-lived token expires twice and the client
//! reconnects with a fresh one and its last id.
//!
//! Skips when Chromium or the package build is missing, unless `SSEHUB_REQUIRE_BROWSER=1` (CI
//! sets it, and builds the package first: `cd clients/typescript && npm ci && npm run build`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use common::{Hub, KEY, SECRET, now, token_with, unique};
use serde_json::{Value, json};
use ssehub_test_support::chromium::{self, Browser};

const LIMIT: Duration = Duration::from_secs(30);
/// Each token lives this long: the stream ends at its expiry and the client takes a new one.
const TOKEN_SECS: u64 = 2;

fn dist() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../clients/typescript/dist"
    ))
}

struct Page {
    channel: String,
    hub: String,
    tokens: AtomicUsize,
}

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>token</title><body>
<script type="module">
import { connect } from '/dist/index.js';
window.events = [];
window.resets = [];
window.connected = false;
const cfg = await (await fetch('/config')).json();
connect(cfg.hub + '/v1/sse', {
  channel: cfg.channel,
  getToken: async () => (await fetch('/token')).text(),
  onEvent: (e) => window.events.push(e),
  onReset: (r) => window.resets.push(r.reason),
  onConnectionChange: (c) => { window.connected = c; },
});
</script>"#;

fn routes(page: Arc<Page>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/config",
            get(|State(p): State<Arc<Page>>| async move {
                axum::Json(json!({"hub": p.hub, "channel": p.channel}))
            }),
        )
        .route(
            "/token",
            get(|State(p): State<Arc<Page>>| async move {
                p.tokens.fetch_add(1, Ordering::SeqCst);
                let claims = json!({
                    "sub": "page",
                    "exp": now() + TOKEN_SECS,
                    "ssehub.subscribe": [p.channel],
                });
                token_with(SECRET, &claims)
            }),
        )
        .route(
            "/dist/{file}",
            get(|Path(file): Path<String>| async move {
                let ok = file.ends_with(".js")
                    && file.bytes().all(|b| b.is_ascii_lowercase() || b == b'.');
                match ok.then(|| std::fs::read(dist().join(&file))) {
                    Some(Ok(js)) => {
                        ([(header::CONTENT_TYPE, "text/javascript")], js).into_response()
                    }
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .with_state(page)
}

/// Serve the page on `port` (freed a moment ago, once the hub was told its origin).
async fn serve_on(page: Arc<Page>, port: u16) {
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(e) if tries > 100 => panic!("port {port}: {e}"),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let app = routes(page);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

#[tokio::test]
async fn a_page_subscribes_with_expiring_tokens_through_the_client() {
    let built = dist().join("index.js").exists();
    if !chromium::available_with(&[(
        "the client package build (cd clients/typescript && npm ci && npm run build)",
        built,
    )]) {
        return;
    }
    // The hub's CORS names the page's origin: take a free port for the page first.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_port = probe.local_addr().unwrap().port();
    drop(probe);
    let origin = format!("http://127.0.0.1:{page_port}");
    let hub = Hub::start(&[
        "--publish-key",
        KEY,
        "--jwt-secret",
        SECRET,
        "--cors-origin",
        &origin,
    ])
    .await;
    let page = Arc::new(Page {
        channel: unique("browser/token"),
        hub: format!("http://{}", hub.addr),
        tokens: AtomicUsize::new(0),
    });
    serve_on(page.clone(), page_port).await;
    let browser = Browser::launch(&format!("{origin}/")).await.unwrap();
    browser
        .wait_for("window.connected", &json!(true), LIMIT)
        .await
        .unwrap();
    // Publish across at least two expiries; each event is published once the previous one
    // arrived, so a reconnect in between must resume from the last id to see the next.
    let events = 8;
    for n in 0..events {
        hub.publish(&page.channel, json!({ "n": n })).await;
        browser
            .wait_for("window.events.length", &json!(n + 1), LIMIT)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let got: Value = browser.eval("window.events").await.unwrap();
    let want: Vec<Value> = (0..events).map(|n| json!({ "n": n })).collect();
    assert_eq!(got, json!(want), "every event once, in order");
    assert_eq!(
        browser.eval("window.resets").await.unwrap(),
        json!([]),
        "no reset"
    );
    let tokens = page.tokens.load(Ordering::SeqCst);
    assert!(
        tokens >= 3,
        "the client took a fresh token at each expiry: {tokens} tokens"
    );
}
