//! The React demo (`clients/typescript/demo`) in 8 tabs of one headless Chromium over HTTP/1.1:
//! `@ssehub/client` shares ONE stream between the tabs (the tab holding the endpoint's Web Lock
//! has the `EventSource` and relays its events over `BroadcastChannel`).
//!
//! - every tab is live and the server has one stream (`GET /api/sessions/{id}` shows 1);
//! - the tab holding the stream closes: another takes over from the last id, the next events
//!   reach every remaining tab exactly once, and the server still has one stream;
//! - a tab subscribes to a new channel: the shared stream takes it in (re-opened with every
//!   channel's position) without losing the others' events;
//! - the holding tab goes offline (DevTools network emulation, `Network.emulateNetworkConditions`
//!   through chromedriver's CDP endpoint) and back online: it resumes from the last id, and
//!   every tab gets what was published meanwhile, once;
//! - the holding tab is frozen (`Page.setWebLifecycleState`): another takes over within
//!   seconds, from the last id.
//!
//! The demo records what option B's hook received (`window.__ssehubEvents`) and the
//! `EventSource`s the page created (`window.__ssehubSources`), see `demo/src/probes.ts`.
//!
//! Skips when Chromium or the demo build is missing, unless `SSEHUB_REQUIRE_BROWSER=1` (CI sets
//! it, and builds the demo first: `cd clients/typescript && npm ci && npm run build:demo`).

#![allow(clippy::unwrap_used)]

mod fixture;
use fixture::comments;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use ssehub::MemoryBroker;
use ssehub_test_support::chromium::{self, Browser};

const TABS: usize = 8;
const LIMIT: Duration = Duration::from_secs(30);

/// The comment counts (of published events, with an id) option B's hook received in this tab.
const COUNTS: &str =
    "JSON.stringify((window.__ssehubEvents ?? []).filter((e) => e.id).map((e) => e.n))";
/// How many `EventSource`s are open in this tab.
const OPEN: &str = "(window.__ssehubSources ?? []).filter((es) => es.readyState !== 2).length";
const STATUS: &str = "document.querySelector('#option-b .status')?.textContent ?? null";

async fn post(addr: SocketAddr, id: &str) {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/comments/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// `GET /api/sessions/{id}`: the streams open on the discussion's comments.
async fn sessions(addr: SocketAddr, id: &str) -> u64 {
    let body: Value = reqwest::get(format!("http://{addr}/api/sessions/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["sessions"].as_u64().unwrap()
}

/// Wait until the server has exactly `n` streams on `id`, and stays there a moment.
async fn one_stream(addr: SocketAddr, id: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut stable = 0;
    loop {
        let n = sessions(addr, id).await;
        stable = if n == 1 { stable + 1 } else { 0 };
        if stable >= 5 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id}: {n} server streams, expected 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tabs' open `EventSource`s: which tab holds the stream, and that only one does.
async fn holder(browser: &Browser, tabs: &[String]) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let mut holding = Vec::new();
        for tab in tabs {
            browser.switch_to(tab).await.unwrap();
            let n = browser.eval(OPEN).await.unwrap().as_u64().unwrap();
            for _ in 0..n {
                holding.push(tab.clone());
            }
        }
        if holding.len() == 1 {
            return holding.remove(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} open EventSources in {} tabs, expected one",
            holding.len(),
            tabs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every tab's option B received exactly these published comment counts.
async fn every_tab_saw(browser: &Browser, tabs: &[String], counts: &[u64]) {
    let expected = json!(serde_json::to_string(counts).unwrap());
    for tab in tabs {
        browser.switch_to(tab).await.unwrap();
        browser
            .wait_for(COUNTS, &expected, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("tab {tab}: {e}"));
    }
    // Nothing repeated on its way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for tab in tabs {
        browser.switch_to(tab).await.unwrap();
        assert_eq!(browser.eval(COUNTS).await.unwrap(), expected, "tab {tab}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tabs_share_one_stream_across_hand_overs_new_channels_and_offline() {
    let dist = comments::react_dist();
    let built = dist.join("index.html").is_file();
    let what = format!(
        "the React demo build ({}): cd clients/typescript && npm ci && npm run build:demo",
        dist.display()
    );
    if !chromium::available_with(&[(&what, built)]) {
        return;
    }
    let state = comments::AppState::new(Arc::new(MemoryBroker::new())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = comments::app(state.clone());
    // Plain HTTP: HTTP/1.1, six connections per origin; eight streams could not all be open.
    tokio::spawn(async move { comments::serve(listener, app).await });
    let id = "tabs";
    let page = format!("http://{addr}/react/?discussion={id}");

    let browser = Browser::launch(&page).await.unwrap();
    let mut tabs = vec![browser.tab().await.unwrap()];
    for _ in 1..TABS {
        tabs.push(browser.new_tab(&page).await.unwrap());
    }
    assert_eq!(browser.tabs().await.unwrap().len(), TABS);
    for tab in &tabs {
        browser.switch_to(tab).await.unwrap();
        browser
            .wait_for(STATUS, &json!("connected"), LIMIT)
            .await
            .unwrap_or_else(|e| panic!("tab {tab}: {e}"));
        // The initial count: from the stream, relayed, or replayed to a tab that joined later.
        browser
            .wait_for(
                "document.querySelector('#option-b .count')?.textContent ?? null",
                &json!("0"),
                LIMIT,
            )
            .await
            .unwrap_or_else(|e| panic!("tab {tab}: {e}"));
    }

    // 1. Eight live tabs, one server stream, one EventSource in all the tabs.
    let first = holder(&browser, &tabs).await;
    one_stream(addr, id).await;
    post(addr, id).await;
    every_tab_saw(&browser, &tabs, &[1]).await;

    // 2. The tab holding the stream closes: another takes over, from the last id.
    browser.switch_to(&first).await.unwrap();
    browser.close_tab().await.unwrap();
    tabs.retain(|t| t != &first);
    post(addr, id).await;
    every_tab_saw(&browser, &tabs, &[1, 2]).await;
    let second = holder(&browser, &tabs).await;
    assert_ne!(second, first);
    one_stream(addr, id).await;

    // 3. A tab that does not hold the stream subscribes to a new channel (another
    //    discussion's comments): the shared stream takes it in; an event published meanwhile
    //    on the others is not lost.
    let other = "tabs-other";
    let follower = tabs.iter().find(|t| **t != second).unwrap().clone();
    browser.switch_to(&follower).await.unwrap();
    browser
        .eval(&format!(
            "(window.__other = [], window.__ssehubConnect('/api/sse', {{ channel: 'comments/{other}', \
             onEvent: (e) => window.__other.push(e.commentCount) }}), true)"
        ))
        .await
        .unwrap();
    post(addr, id).await;
    browser.switch_to(&follower).await.unwrap();
    browser
        .wait_for("JSON.stringify(window.__other)", &json!("[0]"), LIMIT)
        .await
        .unwrap();
    post(addr, other).await;
    browser
        .wait_for("JSON.stringify(window.__other)", &json!("[0,1]"), LIMIT)
        .await
        .unwrap();
    every_tab_saw(&browser, &tabs, &[1, 2, 3]).await;
    assert_eq!(
        holder(&browser, &tabs).await,
        second,
        "the same tab holds it"
    );
    one_stream(addr, id).await;
    one_stream(addr, other).await;

    // 4. The holding tab goes offline (DevTools network emulation), comments are published,
    //    and it comes back online: it resumes from the last id, every tab gets them once.
    browser.switch_to(&second).await.unwrap();
    let conditions = |offline: bool| {
        json!({
            "offline": offline,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        })
    };
    browser.cdp("Network.enable", json!({})).await.unwrap();
    browser
        .cdp("Network.emulateNetworkConditions", conditions(true))
        .await
        .unwrap();
    browser
        .wait_for("navigator.onLine", &json!(false), LIMIT)
        .await
        .unwrap();
    browser
        .wait_for(STATUS, &json!("disconnected"), LIMIT)
        .await
        .unwrap();
    assert_eq!(browser.eval(OPEN).await.unwrap(), json!(0));
    post(addr, id).await;
    post(addr, id).await;
    // Every tab (they learn it from the holder) shows the stream down, and nothing new.
    for tab in &tabs {
        browser.switch_to(tab).await.unwrap();
        browser
            .wait_for(STATUS, &json!("disconnected"), LIMIT)
            .await
            .unwrap_or_else(|e| panic!("tab {tab}: {e}"));
        assert_eq!(browser.eval(COUNTS).await.unwrap(), json!("[1,2,3]"));
    }
    browser.switch_to(&second).await.unwrap();
    browser
        .cdp("Network.emulateNetworkConditions", conditions(false))
        .await
        .unwrap();
    every_tab_saw(&browser, &tabs, &[1, 2, 3, 4, 5]).await;
    for tab in &tabs {
        browser.switch_to(tab).await.unwrap();
        browser
            .wait_for(STATUS, &json!("connected"), LIMIT)
            .await
            .unwrap_or_else(|e| panic!("tab {tab}: {e}"));
        // A resumed stream: no reset.
        assert_eq!(
            browser
                .eval("document.querySelector('#option-a .resets')?.textContent ?? null")
                .await
                .unwrap(),
            json!("")
        );
    }
    assert_eq!(holder(&browser, &tabs).await, second);
    one_stream(addr, id).await;

    // 5. The holding tab is frozen (as Chrome freezes a background tab): it releases the
    //    stream on `freeze`, and another tab takes over at once, from the last id.
    browser.switch_to(&second).await.unwrap();
    let frozen_at = tokio::time::Instant::now();
    browser
        .cdp("Page.setWebLifecycleState", json!({ "state": "frozen" }))
        .await
        .unwrap();
    let others: Vec<String> = tabs.iter().filter(|t| **t != second).cloned().collect();
    let third = holder(&browser, &others).await;
    let took = frozen_at.elapsed();
    assert!(took < Duration::from_secs(5), "the take-over took {took:?}");
    post(addr, id).await;
    every_tab_saw(&browser, &others, &[1, 2, 3, 4, 5, 6]).await;
    one_stream(addr, id).await;
    // Back from the freeze, it takes part again (without the stream): as a tab that joins,
    // it gets the last event of each of its channels (comment 6), and, as it may have missed
    // more while frozen, its hooks are told to refetch (`not-resumed`); then the next events.
    browser.switch_to(&second).await.unwrap();
    browser
        .cdp("Page.setWebLifecycleState", json!({ "state": "active" }))
        .await
        .unwrap();
    browser
        .wait_for(STATUS, &json!("connected"), LIMIT)
        .await
        .unwrap();
    post(addr, id).await;
    browser
        .wait_for(COUNTS, &json!("[1,2,3,4,5,6,7]"), LIMIT)
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelector('#option-a .resets')?.textContent ?? null",
            &json!("not-resumed"),
            LIMIT,
        )
        .await
        .unwrap();
    every_tab_saw(&browser, &others, &[1, 2, 3, 4, 5, 6, 7]).await;
    assert_eq!(holder(&browser, &tabs).await, third);
    one_stream(addr, id).await;
    drop(browser);
    state.endpoint.shutdown();
}
