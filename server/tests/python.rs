//! The Python publisher example (`server/examples/publish.py`, standard library only) against
//! the built hub: it publishes, its idempotency key makes a repeat answer the same id, a
//! retry after a lost reply stores nothing new, and a refusal is reported.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::{Hub, KEY, unique};
use serde_json::{Value, json};
use ssehub_test_support::proxy::TcpProxy;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/publish.py");

async fn python(args: &[&str]) -> Output {
    tokio::process::Command::new("python3")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 (the example needs only its standard library)")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

/// The events of `channel` after `since`.
async fn after(hub: &Hub, channel: &str, since: &str) -> Vec<Value> {
    let h = hub
        .get_json(&format!("/v1/history/{channel}?since={since}"))
        .await;
    h["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_python_example_publishes_once_per_key() {
    let hub = Hub::with_backend("memory").await;
    let ch = unique("py/comments");
    let anchor = hub.publish(&ch, json!(0)).await;
    let url = hub.url("");
    let publish = |key: &'static str| {
        let (url, ch) = (url.clone(), ch.clone());
        async move {
            python(&[
                SCRIPT,
                "--url",
                &url,
                "--key",
                KEY,
                &ch,
                r#"{"text": "hi"}"#,
                "--event",
                "comment-added",
                "--idempotency-key",
                key,
            ])
            .await
        }
    };
    let id = stdout(&publish("k-1").await);
    assert_eq!(
        stdout(&publish("k-1").await),
        id,
        "a repeat answers the same id"
    );
    assert_eq!(
        after(&hub, &ch, &anchor).await,
        vec![json!({"id": id, "event": "comment-added", "data": {"text": "hi"}})]
    );
    // publish_many, as a module.
    let code = format!(
        "import sys; sys.path.insert(0, {dir:?}); from publish import Publisher; \
         print(' '.join(Publisher({url:?}, {KEY:?}).publish_many([({ch:?}, 1, None), ({ch:?}, 2, 'two')])))",
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples"),
    );
    let ids = stdout(&python(&["-c", &code]).await);
    let events = after(&hub, &ch, &id).await;
    let stored: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.split(' ').collect::<Vec<_>>(), stored);
    assert_eq!(events[1]["event"], "two");
    // A wrong key: exit status 1 and the hub's reason.
    let out = python(&[SCRIPT, "--url", &url, "--key", "wrong", &ch, "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_retry_after_a_lost_reply_stores_nothing_new() {
    let hub = Hub::with_backend("memory").await;
    let proxy = TcpProxy::start(hub.addr).await.unwrap();
    let ch = unique("py/retry");
    let anchor = hub.publish(&ch, json!(0)).await;
    // The hub carries out the first request; its answer never reaches Python.
    proxy.drop_replies(true);
    let code = format!(
        "import sys; sys.path.insert(0, {dir:?}); from publish import Publisher; \
         print(Publisher('http://{addr}', {KEY:?}, timeout=1.0).publish({ch:?}, {{'n': 1}}))",
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples"),
        addr = proxy.addr(),
    );
    let run = tokio::spawn(async move { python(&["-c", &code]).await });
    common::eventually("the first request stored", async || {
        after(&hub, &ch, &anchor).await.len() == 1
    })
    .await;
    proxy.drop_replies(false);
    proxy.drop_all();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap();
    let id = stdout(&out);
    let events = after(&hub, &ch, &anchor).await;
    assert_eq!(events, vec![json!({"id": id, "data": {"n": 1}})]);
}
