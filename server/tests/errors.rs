//! Every error status of the HTTP API, and how the binary refuses to start.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Hub, KEY, SECRET, client, now, token, token_with, unique};
use serde_json::{Value, json};
use ssehub_test_support::sse_client::SseClient;

async fn post(hub: &Hub, path: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = client().post(hub.url(path)).json(&body);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

#[tokio::test]
async fn publishing_errors() {
    let hub = Hub::with_backend("memory").await;
    let ch = unique("errors");
    let path = format!("/v1/publish/{ch}");
    let data = json!({"data": 1});
    // 401: none, a wrong key, an expired or badly signed JWT.
    let (s, b) = post(&hub, &path, None, data.clone()).await;
    assert_eq!(s, 401);
    error_of(&b);
    assert_eq!(post(&hub, &path, Some("wrong"), data.clone()).await.0, 401);
    let expired = token_with(SECRET, &json!({"exp": now() - 10, "ssehub.publish": "*"}));
    assert_eq!(post(&hub, &path, Some(&expired), data.clone()).await.0, 401);
    let forged = token_with("other", &json!({"exp": now() + 60, "ssehub.publish": "*"}));
    assert_eq!(post(&hub, &path, Some(&forged), data.clone()).await.0, 401);
    // 403: a JWT whose `ssehub.publish` does not match; 200 when it does.
    let narrow = token_with(
        SECRET,
        &json!({"exp": now() + 60, "ssehub.publish": ["elsewhere/*"]}),
    );
    let (s, b) = post(&hub, &path, Some(&narrow), data.clone()).await;
    assert_eq!(s, 403);
    assert_eq!(b["channel"], ch.as_str());
    let wide = token_with(
        SECRET,
        &json!({"exp": now() + 60, "ssehub.publish": "errors/*"}),
    );
    assert_eq!(post(&hub, &path, Some(&wide), data.clone()).await.0, 200);
    // 400: a bad channel name, a bad body, a bad event name, a bad idempotency key.
    for bad in ["/v1/publish/a%20b", "/v1/publish/a:b", "/v1/publish/reset"] {
        let (s, b) = post(&hub, bad, Some(KEY), data.clone()).await;
        assert_eq!(s, 400, "{bad}");
        error_of(&b);
    }
    let long = format!("/v1/publish/{}", "x".repeat(201));
    assert_eq!(post(&hub, &long, Some(KEY), data.clone()).await.0, 400);
    assert_eq!(
        post(&hub, &path, Some(KEY), json!({"nodata": 1})).await.0,
        400
    );
    assert_eq!(
        post(&hub, &path, Some(KEY), json!({"data": 1, "event": "a b"}))
            .await
            .0,
        400
    );
    assert_eq!(
        post(
            &hub,
            &path,
            Some(KEY),
            json!({"data": 1, "event": "e".repeat(65)})
        )
        .await
        .0,
        400
    );
    let res = client()
        .post(hub.url(&path))
        .bearer_auth(KEY)
        .header("idempotency-key", "has space")
        .json(&data)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = client()
        .post(hub.url(&path))
        .bearer_auth(KEY)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // 413: data over 1 MiB (the default); just under passes.
    let big = "x".repeat(1024 * 1024);
    let (s, b) = post(&hub, &path, Some(KEY), json!({ "data": big })).await;
    assert_eq!(s, 413);
    error_of(&b);
    let fits = "x".repeat(1024 * 1024 - 2);
    assert_eq!(
        post(&hub, &path, Some(KEY), json!({ "data": fits }))
            .await
            .0,
        200
    );
    // The batch: 1,001 events, a bad channel inside, a channel a JWT does not allow.
    let events: Vec<Value> = (0..1001)
        .map(|i| json!({"channel": ch, "data": i}))
        .collect();
    assert_eq!(
        post(&hub, "/v1/publish", Some(KEY), json!({ "events": events }))
            .await
            .0,
        400
    );
    let bad = json!({"events": [{"channel": ch, "data": 1}, {"channel": "a b", "data": 2}]});
    assert_eq!(post(&hub, "/v1/publish", Some(KEY), bad).await.0, 400);
    let other = json!({"events": [{"channel": ch, "data": 1}, {"channel": "x/1", "data": 2}]});
    let (s, b) = post(&hub, "/v1/publish", Some(&wide), other).await;
    assert_eq!((s, b["channel"].as_str()), (403, Some("x/1")));
    let big_batch = json!({"events": [{"channel": ch, "data": "x".repeat(1024 * 1024 + 1)}]});
    assert_eq!(post(&hub, "/v1/publish", Some(KEY), big_batch).await.0, 413);
    assert_eq!(
        post(&hub, "/v1/publish", None, json!({"events": []}))
            .await
            .0,
        401
    );
    // Presence and history need publish credentials too.
    let res = client()
        .get(hub.url(&format!("/v1/presence/{ch}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = client()
        .get(hub.url(&format!("/v1/history/{ch}?since=x-1")))
        .bearer_auth(&narrow)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = client()
        .get(hub.url(&format!("/v1/history/{ch}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn subscribing_errors() {
    let hub = Hub::with_backend("memory").await;
    let ch = unique("sub-errors");
    let path = common::sse_path(&[&ch], "");
    let get = async |path: &str, headers: &[(&str, &str)]| {
        let mut c = SseClient::connect(hub.addr, path, headers).await.unwrap();
        let status = c.status();
        let body = if status == 200 {
            Value::Null
        } else {
            c.until_end().await;
            serde_json::from_slice(c.body()).unwrap()
        };
        (status, body)
    };
    // 401: no token, a bad one, an expired one, one without `exp`.
    assert_eq!(get(&path, &[]).await.0, 401);
    assert_eq!(get(&format!("{path}&token=nope"), &[]).await.0, 401);
    let expired = token_with(
        SECRET,
        &json!({"sub": "a", "exp": now() - 5, "ssehub.subscribe": "*"}),
    );
    let (s, b) = get(&format!("{path}&token={expired}"), &[]).await;
    assert_eq!(s, 401);
    assert!(error_of(&b).contains("expired"), "{b}");
    let no_exp = token_with(SECRET, &json!({"sub": "a", "ssehub.subscribe": "*"}));
    assert_eq!(get(&format!("{path}&token={no_exp}"), &[]).await.0, 401);
    // 403 names the channel the token does not allow.
    let other = unique("elsewhere");
    let t = token("alice", &["sub-errors/*"]);
    let (s, b) = get(
        &common::sse_path(&[&ch, &other], &format!("&token={t}")),
        &[],
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(b["channel"], other.as_str());
    assert!(error_of(&b).contains(&other));
    // 400: no channel, a bad name, a repeated one, too many.
    let auth = format!("Bearer {}", token("alice", &["*"]));
    let h = [("authorization", auth.as_str())];
    assert_eq!(get("/v1/sse", &h).await.0, 400);
    assert_eq!(get("/v1/sse?channel=a%20b", &h).await.0, 400);
    assert_eq!(get(&common::sse_path(&[&ch, &ch], ""), &h).await.0, 400);
    let many: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(get(&common::sse_path(&many, ""), &h).await.0, 400);
    // A token in the header, the query or the cookie opens the stream.
    assert_eq!(get(&path, &h).await.0, 200);
    let cookie = format!("ssehub_token={}", token("alice", &["*"]));
    assert_eq!(get(&path, &[("cookie", cookie.as_str())]).await.0, 200);
}

#[tokio::test]
async fn too_many_connections_is_503_with_retry_after() {
    let hub = Hub::start(&["--max-connections", "1"]).await;
    let path = common::sse_path(&[&unique("limit")], "");
    let first = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.header("retry-after").is_some());
}

#[tokio::test]
async fn startup_refusals() {
    // Development mode (no credentials) is for loopback only.
    let err = Hub::try_start(&["--addr", "0.0.0.0:0"])
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("--publish-key") && err.contains("--jwt-secret"),
        "{err}"
    );
    // With credentials, any address.
    let hub = Hub::start(&["--addr", "0.0.0.0:0", "--publish-key", KEY]).await;
    assert_eq!(hub.addr.ip().to_string(), "0.0.0.0");
    // An unknown flag: exit status 2 and the usage.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    // A config file with the same keys.
    let dir = std::env::temp_dir().join(format!("ssehub-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hub.toml");
    std::fs::write(
        &file,
        "publish-key = [\"from-file\"]\nbackend = \"memory\"\n",
    )
    .unwrap();
    let hub = Hub::start(&["--config", file.to_str().unwrap()]).await;
    let ch = unique("config");
    let res = client()
        .post(hub.url(&format!("/v1/publish/{ch}")))
        .bearer_auth("from-file")
        .json(&json!({"data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn limits_from_flags() {
    let hub = Hub::start(&[
        "--publish-key",
        KEY,
        "--max-data-bytes",
        "100",
        "--max-body-bytes",
        "1000",
    ])
    .await;
    let path = format!("/v1/publish/{}", unique("limits"));
    let (s, b) = post(&hub, &path, Some(KEY), json!({"data": "x".repeat(101)})).await;
    assert_eq!(s, 413);
    error_of(&b);
    assert_eq!(
        post(&hub, &path, Some(KEY), json!({"data": "x".repeat(90)}))
            .await
            .0,
        200
    );
    // A body over the body limit (at least the data limit and 64 KiB) is 413 too, in JSON.
    let (s, b) = post(&hub, &path, Some(KEY), json!({"data": "x".repeat(200_000)})).await;
    assert_eq!(s, 413);
    error_of(&b);
}

/// `--header-timeout`: a client that sends its request head a line at a time is cut off;
/// `--max-connections-per-ip`: connections over the cap are closed at once.
#[tokio::test]
async fn slow_heads_and_too_many_connections_from_one_address_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = Hub::start(&[
        "--publish-key",
        KEY,
        "--header-timeout",
        "1",
        "--max-connections-per-ip",
        "2",
    ])
    .await;
    let mut slow = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut cut = false;
    let mut buf = [0u8; 256];
    for i in 0..30 {
        // A header line every 300 ms: 9 s in all, the deadline is 1 s.
        if slow
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        let read = tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            cut = true;
            break;
        }
    }
    assert!(cut, "a request head sent over 9 s was still accepted");
    drop(slow);
    // The slow connection's place is free again once the hub noticed it closed.
    let open = |_: ()| async {
        let mut c = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut [0u8; 256]))
            .await
            .ok()?
            .ok()?;
        (n > 0).then_some(c)
    };
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held.len() < 2 {
        match open(()).await {
            Some(c) => held.push(c),
            None => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "two connections not served"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(open(()).await.is_none(), "a third connection was served");
}

/// `--lean-streams false`: streams are served by hyper (the connection is kept alive after).
#[tokio::test]
async fn lean_streams_false_serves_streams_with_hyper() {
    let hub = Hub::start(&[
        "--publish-key",
        KEY,
        "--jwt-secret",
        SECRET,
        "--lean-streams",
        "false",
    ])
    .await;
    let t = token("alice", &["c/*"]);
    let path = common::sse_path(&[&unique("c")], &format!("&token={t}"));
    let c = SseClient::connect(hub.addr, &path, &[]).await.unwrap();
    assert_eq!(c.status(), 200);
    assert_eq!(c.header("connection"), None);
}
