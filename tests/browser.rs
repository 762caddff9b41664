//! The comments demo in a real browser (Debian's headless Chromium): the native `EventSource`
//! shows the live count, and after the server side drops its connection it reconnects with
//! `Last-Event-ID` and shows the comments it missed, replayed from history.
//!
//! Skips when Chromium is not installed, unless `SSEHUB_REQUIRE_BROWSER=1` (CI sets it).

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use ssehub::MemoryBroker;
use ssehub_test_support::chromium::{self, Browser};
use ssehub_test_support::proxy::TcpProxy;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_live_counts_and_resumes_after_a_dropped_connection() {
    if !chromium::available() {
        return;
    }
    let state = comments::AppState::new(Arc::new(MemoryBroker::new())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let app = comments::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // The browser talks to the server through a proxy that can cut its connections.
    let proxy = TcpProxy::start(server).await.unwrap();
    let page = format!("http://{}/?discussion=web", proxy.addr());
    let browser = Browser::launch(&page).await.unwrap();

    let count = "document.getElementById('count')?.textContent ?? null";
    let status = "document.getElementById('status')?.textContent ?? null";
    browser
        .wait_for(status, &json!("connected"), LIMIT)
        .await
        .unwrap();
    browser.wait_for(count, &json!("0"), LIMIT).await.unwrap();

    // A comment added elsewhere shows up live.
    let post = || async {
        let res = reqwest::Client::new()
            .post(format!("http://{server}/api/comments/web"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    };
    post().await;
    browser.wait_for(count, &json!("1"), LIMIT).await.unwrap();

    // Drop the connection from the server side and keep the browser out while two more
    // comments are added: it cannot have seen them live.
    proxy.refuse(true);
    proxy.drop_all();
    browser
        .wait_for(status, &json!("disconnected"), LIMIT)
        .await
        .unwrap();
    post().await;
    post().await;
    assert_eq!(browser.eval(count).await.unwrap(), json!("1"));
    proxy.refuse(false);

    // EventSource reconnects by itself, sends Last-Event-ID, and gets the missed events.
    browser
        .wait_for(status, &json!("connected"), LIMIT)
        .await
        .unwrap();
    browser.wait_for(count, &json!("3"), LIMIT).await.unwrap();
    let resumed = proxy.heads().iter().any(|h| {
        h.starts_with("GET /api/sse/comments/web")
            && h.to_lowercase().contains("\r\nlast-event-id: ")
    });
    assert!(
        resumed,
        "the browser reconnected with Last-Event-ID: {:?}",
        proxy.heads()
    );
    let log = browser
        .eval("document.getElementById('log').textContent")
        .await
        .unwrap();
    assert!(
        !log.as_str().unwrap_or_default().contains("reset"),
        "resumed, not reset: {log}"
    );
}
