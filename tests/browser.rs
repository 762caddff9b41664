//! The comments demo in a real browser (Debian's headless Chromium): the page's one native
//! `EventSource`, on the multiplexing endpoint, shows the live count, and after the server side drops its connection it reconnects with
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

/// One test's browsers at a time: several Chromium instances starting at once on two cores
/// make chromedriver miss its session request.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_live_counts_and_resumes_after_a_dropped_connection() {
    if !chromium::available() {
        return;
    }
    let _one_at_a_time = BROWSERS.lock().await;
    let state = comments::AppState::new(Arc::new(MemoryBroker::new())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let app = comments::app(state.clone());
    tokio::spawn(async move { comments::serve(listener, app).await });
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
        h.starts_with("GET /api/sse?channel=comments%2Fweb&")
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

/// The fixture page of `ten_channels_share_one_connection`: one `EventSource` on ten channels
/// of the multiplexing endpoint, then ten separate `EventSource`s for comparison.
const TEN_CHANNELS: &str = r#"<!doctype html><meta charset="utf-8"><title>ten</title><script>
window.got = {};
const channels = [];
for (let i = 0; i < 5; i++) channels.push(`comments/ten${i}`, `votes/ten${i}`);
const es = new EventSource('/api/sse?' + channels.map((c) => 'channel=' + encodeURIComponent(c)).join('&'));
for (const c of channels) {
  es.addEventListener(c, (e) => { window.got[c] = (window.got[c] || 0) + 1; });
}
window.separate = [];
window.openSeparate = () => {
  for (let i = 0; i < 10; i++) {
    const s = new EventSource(`/api/sse/comments/sep${i}`);
    s.got = 0;
    s.onmessage = () => { s.got += 1; };
    window.separate.push(s);
  }
};
</script>"#;

/// One page, ten channels, one HTTP/1.1 connection: every channel's initial and live events
/// arrive. Ten separate `EventSource`s on the same origin stall past the browser's six
/// connections per origin: the ones beyond never open, and their events never arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_channels_share_one_connection_where_ten_event_sources_stall() {
    if !chromium::available() {
        return;
    }
    let _one_at_a_time = BROWSERS.lock().await;
    let state = comments::AppState::new(Arc::new(MemoryBroker::new())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let app = comments::app(state.clone()).route(
        "/ten",
        axum::routing::get(|| async { axum::response::Html(TEN_CHANNELS) }),
    );
    tokio::spawn(async move { comments::serve(listener, app).await });
    let browser = Browser::launch(&format!("http://{server}/ten"))
        .await
        .unwrap();

    // The ten initial events, over one stream.
    browser
        .wait_for("Object.keys(window.got).length", &json!(10), LIMIT)
        .await
        .unwrap();
    assert_eq!(state.comments.total_sessions(), 5);
    assert_eq!(state.votes.total_sessions(), 5);
    // A live event on the last channel.
    reqwest::Client::new()
        .post(format!("http://{server}/api/votes/ten4"))
        .json(&json!({"vote": "up"}))
        .send()
        .await
        .unwrap();
    browser
        .wait_for("window.got['votes/ten4']", &json!(2), LIMIT)
        .await
        .unwrap();

    // Now ten separate EventSources: with the multiplexed one open, five more connections fit
    // (Chromium allows six per origin over HTTP/1.1).
    browser.eval("window.openSeparate()").await.unwrap();
    let open = "window.separate.filter((s) => s.readyState === 1).length";
    browser
        .wait_for(&format!("{open} >= 5"), &json!(true), LIMIT)
        .await
        .unwrap();
    for i in 0..10 {
        reqwest::Client::new()
            .post(format!("http://{server}/api/comments/sep{i}"))
            .send()
            .await
            .unwrap();
    }
    // The open ones get their initial event and the comment; the others are stuck before
    // their request was even sent (the server never saw them), so they get nothing.
    let opened = browser.eval(open).await.unwrap().as_u64().unwrap();
    assert!(opened < 10, "{opened} of 10 separate EventSources opened");
    let delivered = "window.separate.filter((s) => s.got === 2).length";
    browser
        .wait_for(delivered, &json!(opened), LIMIT)
        .await
        .unwrap();
    let stalled = "window.separate.filter((s) => s.readyState === 0 && s.got === 0).length";
    assert_eq!(browser.eval(stalled).await.unwrap(), json!(10 - opened));
    assert_eq!(state.comments.total_sessions() as u64, 5 + opened);
    eprintln!(
        "ten channels: 1 multiplexed connection carried all 10; of 10 separate EventSources {opened} opened, {} stalled",
        10 - opened
    );
}

/// Two tabs on two nodes sharing Redis: the same comment count, the same votes and "2
/// viewing" on both; "1 viewing" once one tab is closed.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_on_two_nodes_see_the_same_page() {
    if !chromium::available() {
        return;
    }
    let _one_at_a_time = BROWSERS.lock().await;
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let broker = ssehub::RedisBroker::connect(&url).await.unwrap();
        let store = comments::Store::open(&url).await.unwrap();
        let state = comments::AppState::with_store(Arc::new(broker), store).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = comments::app(state);
        tokio::spawn(async move { comments::serve(listener, app).await });
        nodes.push(addr);
    }
    let id = ssehub_core::conformance::unique_id("tabs");
    let tab_a = Browser::launch(&format!("http://{}/?discussion={id}", nodes[0]))
        .await
        .unwrap();
    let tab_b = Browser::launch(&format!("http://{}/?discussion={id}", nodes[1]))
        .await
        .unwrap();
    let text = |sel: &str| format!("document.getElementById('{sel}')?.textContent ?? null");
    for tab in [&tab_a, &tab_b] {
        tab.wait_for(&text("status"), &json!("connected"), LIMIT)
            .await
            .unwrap();
        tab.wait_for(&text("viewers"), &json!("2 viewing"), LIMIT)
            .await
            .unwrap();
    }
    let client = reqwest::Client::new();
    for _ in 0..3 {
        client
            .post(format!("http://{}/api/comments/{id}", nodes[0]))
            .send()
            .await
            .unwrap();
    }
    client
        .post(format!("http://{}/api/votes/{id}", nodes[1]))
        .json(&json!({"vote": "up"}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("http://{}/api/votes/{id}", nodes[0]))
        .json(&json!({"vote": "down"}))
        .send()
        .await
        .unwrap();
    for tab in [&tab_a, &tab_b] {
        tab.wait_for(&text("count"), &json!("3"), LIMIT)
            .await
            .unwrap();
        tab.wait_for(&text("up-count"), &json!("1"), LIMIT)
            .await
            .unwrap();
        tab.wait_for(&text("down-count"), &json!("1"), LIMIT)
            .await
            .unwrap();
    }
    drop(tab_b);
    tab_a
        .wait_for(&text("viewers"), &json!("1 viewing"), LIMIT)
        .await
        .unwrap();
}
