//! Two hubs on one broker (Redis, NATS): publish on one and subscribe on the other with the same
//! ids, resume across hubs, presence across hubs, idempotency across hubs; and a broker that
//! goes away answers `503` with `Retry-After`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Hub, KEY, client, token, unique};
use serde_json::{Value, json};
use ssehub_test_support::sse_client::SseClient;

async fn two_hubs_share_everything(url: &str) {
    let (a, b) = (Hub::with_backend(url).await, Hub::with_backend(url).await);
    let ch = unique("cluster");
    let t = token("alice", &["cluster/*"]);
    let path = common::sse_path(&[&ch], &format!("&token={t}"));
    // Publish on A, subscribe on B: the same id.
    let mut on_b = SseClient::connect(b.addr, &path, &[]).await.unwrap();
    assert_eq!(on_b.status(), 200);
    let id1 = a.publish(&ch, json!({"n": 1})).await;
    let e = on_b.next_event().await.unwrap();
    assert_eq!(
        (e.event.as_str(), e.data.as_str()),
        (ch.as_str(), r#"{"n":1}"#)
    );
    assert_eq!(e.id.as_deref(), Some(format!("~{id1}").as_str()));
    // Resume on A from B's id: exactly the events published meanwhile.
    let last = e.id.unwrap();
    drop(on_b);
    let id2 = b.publish(&ch, json!({"n": 2})).await;
    let id3 = a.publish(&ch, json!({"n": 3})).await;
    let mut on_a = SseClient::connect(a.addr, &path, &[("last-event-id", last.as_str())])
        .await
        .unwrap();
    let e2 = on_a.next_event().await.unwrap();
    let e3 = on_a.next_event().await.unwrap();
    assert_eq!(e2.id.as_deref(), Some(format!("~{id2}").as_str()));
    assert_eq!(
        (e2.data.as_str(), e3.data.as_str()),
        (r#"{"n":2}"#, r#"{"n":3}"#)
    );
    assert_eq!(e3.id.as_deref(), Some(format!("~{id3}").as_str()));
    // Presence across hubs: alice on A, bob on B, seen from both.
    let bob = token("bob", &["cluster/*"]);
    let _on_b = SseClient::connect(
        b.addr,
        &common::sse_path(&[&ch], &format!("&token={bob}")),
        &[],
    )
    .await
    .unwrap();
    for hub in [&a, &b] {
        common::eventually("alice and bob on both hubs", async || {
            let p = hub.presence(&ch).await;
            p["connections"] == 2
                && p["users"]
                    == json!([{"sub": "alice", "connections": 1}, {"sub": "bob", "connections": 1}])
        })
        .await;
    }
    // Idempotency across hubs: the same key on A then B publishes once.
    let send = async |hub: &Hub| {
        let res = client()
            .post(hub.url(&format!("/v1/publish/{ch}")))
            .bearer_auth(KEY)
            .header("idempotency-key", format!("once-{ch}"))
            .json(&json!({"data": "once"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["id"].clone()
    };
    let first = send(&a).await;
    assert_eq!(send(&b).await, first);
    let end = a.publish(&ch, json!("end")).await;
    let mut seen = Vec::new();
    loop {
        let e = on_a.next_event().await.unwrap();
        seen.push(e.data);
        if e.id.as_deref() == Some(format!("~{end}").as_str()) {
            break;
        }
    }
    assert_eq!(seen, ["\"once\"", "\"end\""]);
    // History on either hub reads the same events.
    let h: Value = b
        .get_json(&format!("/v1/history/{ch}?since={id1}&limit=2"))
        .await;
    assert_eq!(h["complete"], true);
    assert_eq!(h["events"][0]["id"], id2.as_str());
    assert_eq!(h["events"][1]["id"], id3.as_str());
}

#[tokio::test]
async fn two_hubs_on_redis() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    two_hubs_share_everything(&url).await;
}

#[tokio::test]
async fn two_hubs_on_nats() {
    let Some(url) = ssehub_test_support::nats::nats_url().await else {
        return;
    };
    two_hubs_share_everything(&url).await;
}

#[tokio::test]
async fn a_lost_broker_is_503_with_retry_after() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let upstream = url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    let upstream: std::net::SocketAddr = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = ssehub_test_support::proxy::TcpProxy::start(upstream)
        .await
        .unwrap();
    let hub = Hub::with_backend(&format!("redis://{}", proxy.addr())).await;
    let ch = unique("lost");
    hub.publish(&ch, json!(1)).await;
    proxy.refuse(true);
    proxy.drop_all();
    common::eventually("503 from publish", async || {
        let res = client()
            .post(hub.url(&format!("/v1/publish/{ch}")))
            .bearer_auth(KEY)
            .json(&json!({"data": 2}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        res.status() == 503 && res.headers().get("retry-after").is_some()
    })
    .await;
    let res = client().get(hub.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().starts_with("broker"),
        "{body}"
    );
    // Back again: publishing works.
    proxy.refuse(false);
    common::eventually("200 again", async || {
        client()
            .post(hub.url(&format!("/v1/publish/{ch}")))
            .bearer_auth(KEY)
            .json(&json!({"data": 3}))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}
