//! The React demo (`clients/typescript/demo`, built to `demo/dist`) in headless Chromium: the
//! seed's hooks (options A, B and C) show the count, refetch after a comment is posted, and
//! refetch every query after the server sends `reset` (the server restarted with a new epoch,
//! so the browser's Last-Event-ID is unknown to it).
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
use ssehub_test_support::proxy::TcpProxy;

const LIMIT: Duration = Duration::from_secs(30);

/// One run of the comments app on `addr`; `stop` ends its streams and closes its listener.
struct Server {
    state: comments::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(addr: SocketAddr) -> Server {
        let state = comments::AppState::new(Arc::new(MemoryBroker::new())).unwrap();
        // The old listener may take a moment to go away.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries > 100 => panic!("cannot bind {addr}: {e}"),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = comments::app(state.clone());
        let task = tokio::spawn(async move {
            let _ = comments::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Server {
            state,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        self.state.endpoint.shutdown();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

async fn post(addr: SocketAddr, id: &str) {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/comments/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn text(selector: &str) -> String {
    format!("document.querySelector('{selector}')?.textContent ?? null")
}

async fn fetches(browser: &Browser) -> Value {
    let v = browser
        .eval("JSON.stringify(window.__ssehubFetches ?? {})")
        .await
        .unwrap();
    serde_json::from_str(v.as_str().unwrap()).unwrap()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_hooks_show_counts_refetch_after_posts_and_after_a_reset() {
    let dist = comments::react_dist();
    let built = dist.join("index.html").is_file();
    let what = format!(
        "the React demo build ({}): cd clients/typescript && npm ci && npm run build:demo",
        dist.display()
    );
    if !chromium::available_with(&[(&what, built)]) {
        return;
    }
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = Server::start(addr).await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let id = "react";
    let browser = Browser::launch(&format!("http://{}/react/?discussion={id}", proxy.addr()))
        .await
        .unwrap();

    let status_a = text("#option-a .status");
    let status_b = text("#option-b .status");
    let count_a = text("#option-a .count");
    let list_a = text("#option-a .list-count");
    let count_b = text("#option-b .count");
    let count_c = text("#option-c .count");
    let resets = text("#option-a .resets");
    for s in [&status_a, &status_b] {
        browser
            .wait_for(s, &json!("connected"), LIMIT)
            .await
            .unwrap();
    }
    for c in [&count_a, &list_a, &count_b, &count_c] {
        browser.wait_for(c, &json!("0"), LIMIT).await.unwrap();
    }
    // Three hooks on one endpoint, one EventSource: one session on the server.
    assert_eq!(
        server.state.comments.session_count(id),
        1,
        "one shared stream"
    );

    // A comment posted elsewhere: queries refetch (A, C) and the handler sees it (B).
    let before = fetches(&browser).await;
    post(addr, id).await;
    for c in [&count_a, &list_a, &count_b, &count_c] {
        browser.wait_for(c, &json!("1"), LIMIT).await.unwrap();
    }
    let after = fetches(&browser).await;
    for key in ["a-counts", "a-comments", "c"] {
        assert!(
            n(&after, key) > n(&before, key),
            "{key} refetched: {before} -> {after}"
        );
    }

    // The server restarts (memory backend: a new epoch), with comments added while the
    // browser is kept out. Its Last-Event-ID is unknown to the new server: `reset`.
    proxy.refuse(true);
    proxy.drop_all();
    server.stop().await;
    browser
        .wait_for(&status_a, &json!("disconnected"), LIMIT)
        .await
        .unwrap();
    let server = Server::start(addr).await;
    for _ in 0..3 {
        post(addr, id).await;
    }
    let before = fetches(&browser).await;
    proxy.refuse(false);

    browser
        .wait_for(&resets, &json!("epoch-changed"), LIMIT)
        .await
        .unwrap();
    for c in [&count_a, &list_a, &count_b, &count_c] {
        browser.wait_for(c, &json!("3"), LIMIT).await.unwrap();
    }
    let after = fetches(&browser).await;
    for key in ["a-counts", "a-comments", "c"] {
        assert!(
            n(&after, key) > n(&before, key),
            "{key} refetched after reset: {before} -> {after}"
        );
    }
    // (A reset is only sent to a client that sent a Last-Event-ID: the browser resumed.)
    assert_eq!(
        server.state.comments.session_count(id),
        1,
        "one shared stream"
    );
    browser
        .wait_for(&status_a, &json!("connected"), LIMIT)
        .await
        .unwrap();
    drop(browser);
    server.stop().await;
}
