//! The hub alone on the memory backend: publish and subscribe, resume, idempotency, presence,
//! history, token expiry, operations.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Hub, KEY, SECRET, client, now, token, token_with, unique};
use serde_json::{Value, json};
use ssehub_test_support::sse_client::SseClient;

#[tokio::test]
async fn publish_and_subscribe_round_trip_and_resume() {
    let hub = Hub::with_backend("memory").await;
    let (a, b) = (unique("comments"), unique("votes"));
    let t = token("alice", &["comments/*", "votes/*"]);
    let path = common::sse_path(&[&a, &b], &format!("&token={t}"));
    let mut c = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
    assert_eq!(c.status(), 200);
    assert_eq!(c.header("content-type"), Some("text/event-stream"));
    // Served by the lean HTTP/1 driver (the default; `--lean-streams false` turns it off).
    assert_eq!(c.header("connection"), Some("close"));
    let id1 = hub.publish(&a, json!({"text": "hi"})).await;
    let e = c.next_event().await.unwrap();
    assert_eq!(e.event, a);
    assert_eq!(e.data, r#"{"text":"hi"}"#);
    // One id holds every channel's position: this one, and none yet for `b`.
    assert_eq!(e.id.as_deref(), Some(format!("~{id1}.").as_str()));
    assert_eq!(c.retry(), Some(1000));
    // A named event is `channel:name`; multi-line JSON arrives on one line.
    let res = client()
        .post(hub.url(&format!("/v1/publish/{b}")))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{\"data\": {\n \"up\": 1\n}, \"event\": \"voted\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id2 = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = c.next_event().await.unwrap();
    assert_eq!(e.event, format!("{b}:voted"));
    assert!(!e.data.contains('\n'));
    assert_eq!(
        serde_json::from_str::<Value>(&e.data).unwrap(),
        json!({"up": 1})
    );
    let last = e.id.clone().unwrap();
    assert!(last.ends_with(id2.rsplit('-').next().unwrap()), "{last}");
    // The batch: in order, across channels.
    let res = client()
        .post(hub.url("/v1/publish"))
        .bearer_auth(KEY)
        .json(&json!({"events": [
            {"channel": a, "data": 1},
            {"channel": a, "data": 2, "event": "n"},
            {"channel": b, "data": 3},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ids = res.json::<Value>().await.unwrap()["ids"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(ids, 3);
    let mut got: Vec<(String, String)> = [
        c.next_event().await.unwrap(),
        c.next_event().await.unwrap(),
        c.next_event().await.unwrap(),
    ]
    .into_iter()
    .map(|e| (e.event, e.data))
    .collect();
    // In order within a channel (not across channels).
    got.sort_by_key(|(event, _)| !event.starts_with(&a));
    assert_eq!(
        got,
        [
            (a.clone(), "1".to_owned()),
            (format!("{a}:n"), "2".to_owned()),
            (b.clone(), "3".to_owned()),
        ]
    );
    // Resume from an earlier id: exactly what came after it, on every channel.
    drop(c);
    let mut again = SseClient::connect(hub.addr, &path, &[("last-event-id", last.as_str())])
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(again.next_event().await.unwrap().data);
    }
    got.sort();
    assert_eq!(got, ["1", "2", "3"]);
    // `?lastEventId=` does the same; a malformed id resets every channel.
    let bad = format!("{path}&lastEventId=garbage");
    let mut reset = SseClient::connect(hub.addr, &bad, &[]).await.unwrap();
    let e = reset.next_event().await.unwrap();
    assert_eq!(e.event, "reset");
    let payload: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(payload["reason"], "malformed-id");
    assert_eq!(payload["channel"], a.as_str());
}

#[tokio::test]
async fn idempotency_key_answers_the_same_id_once() {
    let hub = Hub::with_backend("memory").await;
    let ch = unique("idem");
    let mut c = SseClient::connect(
        hub.addr,
        &common::sse_path(&[&ch], ""),
        &[("authorization", &format!("Bearer {KEY}"))],
    )
    .await
    .unwrap();
    let send = async |key: &str, body: Value, path: &str| {
        let res = client()
            .post(hub.url(path))
            .bearer_auth(KEY)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()
    };
    let path = format!("/v1/publish/{ch}");
    let first = send("k-1", json!({"data": 1}), &path).await;
    let again = send("k-1", json!({"data": 1}), &path).await;
    assert_eq!(first, again);
    let batch = json!({"events": [{"channel": ch, "data": 2}, {"channel": ch, "data": 3}]});
    let b1 = send("k-2", batch.clone(), "/v1/publish").await;
    let b2 = send("k-2", batch, "/v1/publish").await;
    assert_eq!(b1, b2);
    hub.publish(&ch, json!("end")).await;
    let mut seen = Vec::new();
    loop {
        let e = c.next_event().await.unwrap();
        if e.data == "\"end\"" {
            break;
        }
        seen.push(e.data);
    }
    assert_eq!(seen, ["1", "2", "3"]);
}

#[tokio::test]
async fn presence_lists_users_and_history_reads_back() {
    let hub = Hub::with_backend("memory").await;
    let ch = unique("room");
    let alice = token_with(
        SECRET,
        &json!({"sub": "alice", "exp": now() + 600, "ssehub.subscribe": "*",
                "ssehub.info": {"name": "Alice"}}),
    );
    let path = common::sse_path(&[&ch], &format!("&token={alice}"));
    let _a1 = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
    let _a2 = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
    let bob = format!("Bearer {}", token("bob", &["room/*"]));
    let _b = SseClient::connect(
        hub.addr,
        &common::sse_path(&[&ch], ""),
        &[("authorization", bob.as_str())],
    )
    .await
    .unwrap();
    common::eventually("three connections", async || {
        hub.presence(&ch).await["connections"] == 3
    })
    .await;
    let p = hub.presence(&ch).await;
    assert_eq!(p["channel"], ch.as_str());
    assert_eq!(
        p["users"],
        json!([
            {"sub": "alice", "info": {"name": "Alice"}, "connections": 2},
            {"sub": "bob", "connections": 1},
        ])
    );
    // History: the events after an id, with their names; a gap is incomplete.
    let first = hub.publish(&ch, json!(1)).await;
    let res = client()
        .post(hub.url(&format!("/v1/publish/{ch}")))
        .bearer_auth(KEY)
        .json(&json!({"data": {"two": 2}, "event": "second"}))
        .send()
        .await
        .unwrap();
    let second = res.json::<Value>().await.unwrap()["id"].clone();
    hub.publish(&ch, json!(3)).await;
    let h: Value = hub
        .get_json(&format!("/v1/history/{ch}?since={first}&limit=1"))
        .await;
    assert_eq!(
        h,
        json!({"events": [{"id": second, "event": "second", "data": {"two": 2}}], "complete": true})
    );
    let h: Value = hub
        .get_json(&format!("/v1/history/{ch}?since=gone-1"))
        .await;
    assert_eq!(h, json!({"events": [], "complete": false}));
}

#[tokio::test]
async fn presence_events_on_request() {
    let hub = Hub::with_backend("memory").await;
    let ch = unique("watched");
    let t = token("carol", &["*"]);
    let mut watcher = SseClient::connect(
        hub.addr,
        &common::sse_path(&[&ch], &format!("&token={t}&presence=1")),
        &[],
    )
    .await
    .unwrap();
    let e = watcher.next_event().await.unwrap();
    assert_eq!(e.event, format!("{ch}:presence"));
    assert_eq!(e.data, r#"{"sessions":1,"joined":["carol"]}"#);
    // carol's second stream: one more session, no one joined.
    let _other = SseClient::connect(
        hub.addr,
        &common::sse_path(&[&ch], &format!("&token={t}")),
        &[],
    )
    .await
    .unwrap();
    let e = watcher.next_event().await.unwrap();
    assert_eq!(e.data, r#"{"sessions":2}"#);
    // Another user joins, then leaves.
    let erin = SseClient::connect(
        hub.addr,
        &common::sse_path(&[&ch], &format!("&token={}", token("erin", &["*"]))),
        &[],
    )
    .await
    .unwrap();
    let e = watcher.next_event().await.unwrap();
    assert_eq!(e.data, r#"{"sessions":3,"joined":["erin"]}"#);
    drop(erin);
    let e = watcher.next_event().await.unwrap();
    assert_eq!(e.data, r#"{"sessions":2,"left":["erin"]}"#);
    // Streams with and without presence events count together, users included.
    common::eventually("both streams in presence", async || {
        let p = hub.presence(&ch).await;
        p["connections"] == 2 && p["users"] == json!([{"sub": "carol", "connections": 2}])
    })
    .await;
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let hub = Hub::with_backend("memory").await;
    let ch = unique("expiry");
    let t = token_with(
        SECRET,
        &json!({"sub": "dave", "exp": now() + 2, "ssehub.subscribe": [ch]}),
    );
    let started = tokio::time::Instant::now();
    let mut c = SseClient::connect(
        hub.addr,
        &common::sse_path(&[&ch], &format!("&token={t}")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(c.status(), 200);
    hub.publish(&ch, json!("before")).await;
    let events = c.until_end().await;
    assert!(!c.stalled(), "the stream went silent instead of ending");
    assert_eq!(events.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(c.retry(), Some(1000));
    assert!(String::from_utf8_lossy(c.body()).ends_with("retry: 1000\n\n"));
}

#[tokio::test]
async fn operations() {
    let hub = Hub::start(&["--cors-origin", "https://app.example"]).await;
    let res = client().get(hub.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    hub.publish(&unique("metrics"), json!(1)).await;
    let text = client()
        .get(hub.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ssehub_hub_published_total"), "{text}");
    let res = client()
        .get(hub.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/publish/{channel}"]["post"]["responses"]["413"].is_object());
    let health = &doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"];
    let health = health["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    let health = &doc["components"]["schemas"][health.rsplit('/').next().unwrap()];
    assert_eq!(
        health["required"],
        json!(["status", "backend", "connections"])
    );
    // CORS for the configured origin only.
    let res = client()
        .request(reqwest::Method::OPTIONS, hub.url("/v1/publish/x"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example"
    );
    let res = client()
        .get(hub.url("/healthz"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // Graceful shutdown: an open stream ends with a retry hint, the process exits 0.
    let mut c = SseClient::connect(hub.addr, &common::sse_path(&[&unique("bye")], ""), &[])
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
    let reader = tokio::spawn(async move {
        c.until_end().await;
        (c.stalled(), c.retry())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = hub.terminate().await;
    assert!(status.success(), "{status:?}");
    let (stalled, retry) = reader.await.unwrap();
    assert!(!stalled);
    assert!(retry.unwrap() >= 1000);
}
