//! A real browser's `EventSource` (Debian's headless Chromium) receives a fixture set byte-exact:
//! multi-line data, line breaks of every kind, unicode (U+2028, U+2029, a BOM, U+10FFFF, NUL),
//! data that tries to forge fields, named events, and payloads of exactly the maximum (1 MiB) on
//! the typed JSON path and on the raw broker path. One byte more is refused and never sent.
//!
//! Skips when Chromium is not installed, unless `SSEHUB_REQUIRE_BROWSER=1` (CI sets it).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use serde_json::{Value, json};
use ssehub::{ChannelManager, Error, EventName, MemoryBroker, Message, SseEndpoint};
use ssehub_test_support::chromium::{self, Browser};

const LIMIT: Duration = Duration::from_secs(30);
const MAX: usize = 1024 * 1024;

/// Every event name a fixture uses; the page listens for each.
const NAMES: [&str; 5] = [
    "message",
    "comment-added",
    "with space",
    "ünïcode-名前",
    "x:y.z",
];

/// The page records every event it gets, with its type, data and lastEventId.
fn page() -> String {
    let names = serde_json::to_string(&NAMES).unwrap();
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>fixtures</title><script>
window.received = [];
window.opened = false;
const es = new EventSource("/events/fixtures");
es.onopen = () => {{ window.opened = true; }};
for (const name of {names}) {{
  es.addEventListener(name, (e) => {{
    window.received.push({{ type: e.type, data: e.data, lastEventId: e.lastEventId }});
  }});
}}
</script>"#
    )
}

/// What a browser delivers for raw data: every CRLF and lone CR becomes LF (the SSE spec's line
/// breaks); everything else arrives as sent.
fn as_delivered(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Raw fixtures: (event name, data) published with `broker().publish`.
fn raw_fixtures() -> Vec<(&'static str, String)> {
    let mut big = String::with_capacity(MAX);
    let line = "0123456789abcdef ünï 🎉\r\n";
    while big.len() + line.len() <= MAX {
        big.push_str(line);
    }
    while big.len() < MAX {
        big.push('x');
    }
    assert_eq!(big.len(), MAX);
    vec![
        ("message", "hello".into()),
        ("message", String::new()),
        ("message", "line one\nline two\nline three".into()),
        ("message", "trailing newline\n".into()),
        ("message", "\nleading newline".into()),
        ("message", "\n\n".into()),
        ("message", "crlf\r\nbetween".into()),
        ("message", "lone\rcr\r".into()),
        (
            "message",
            "x\r\nevent: evil\r\nid: 666\r\nretry: 1\r\n\r\ndata: forged\nid\nretry:5".into(),
        ),
        ("message", " leading space and trailing space ".into()),
        ("message", ":not a comment\n: nor this".into()),
        ("message", "tab\tand\u{b}vertical tab\u{c}form feed".into()),
        ("message", "Zürich — 日本語 — ελληνικά — 🎉👩‍👩‍👧".into()),
        ("message", "line\u{2028}separator\u{2029}paragraph".into()),
        ("message", "\u{feff}starts with a BOM".into()),
        ("message", "last scalar \u{10ffff} and \u{fffd}".into()),
        ("message", "nul \0 inside".into()),
        ("comment-added", "a named event".into()),
        ("with space", "a name with a space".into()),
        ("ünïcode-名前", "a unicode name".into()),
        ("x:y.z", "a name with separators".into()),
        ("message", big),
    ]
}

/// Typed fixtures: values published with `manager.publish`; the browser gets their JSON text.
fn typed_fixtures() -> Vec<Value> {
    let mut big = json!({ "name": "comment-added", "text": "" });
    let overhead = serde_json::to_string(&big).unwrap().len();
    big["text"] = Value::String("y".repeat(MAX - overhead));
    assert_eq!(serde_json::to_string(&big).unwrap().len(), MAX);
    vec![
        json!({ "text": "quotes \" backslash \\ newline \n cr \r tab \t" }),
        json!({ "name": "comment-added", "text": "Zürich 🎉 \u{2028}\u{2029}\u{feff}\u{0}" }),
        json!(["nested", { "a": [1, 2.5, null, true] }, "\u{10ffff}"]),
        big,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_receives_every_fixture_byte_exact() {
    if !chromium::available() {
        return;
    }
    let manager = ChannelManager::<Value>::builder(MemoryBroker::new())
        .key_prefix("fixtures")
        .event_name(|v| match v["name"].as_str() {
            Some("comment-added") => "comment-added",
            _ => "message",
        })
        .build()
        .unwrap();
    let initial = json!({ "initial": "snapshot \u{2028} ünï", "n": 1 });
    let initial_for_endpoint = initial.clone();
    let endpoint = SseEndpoint::new(manager.clone(), "/events/{id}")
        .unwrap()
        .initial_event(move |_| {
            let v = initial_for_endpoint.clone();
            async move { Some(v) }
        });
    let app = Router::new()
        .route("/", get(|| async { Html(page()) }))
        .merge(endpoint.into_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { ssehub::serve(listener, app).lean_streams(true).await });

    let browser = Browser::launch(&format!("http://{addr}/")).await.unwrap();
    browser
        .wait_for("window.opened === true", &json!(true), LIMIT)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while manager.session_count("fixtures") != 1 {
        assert!(tokio::time::Instant::now() < deadline, "no session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The initial event: no id, so lastEventId stays empty.
    let mut expected = vec![json!({
        "type": "message",
        "data": serde_json::to_string(&initial).unwrap(),
        "lastEventId": "",
    })];
    let topic = manager.topic("fixtures").unwrap();
    for (name, data) in raw_fixtures() {
        let message = Message::new(data.clone()).with_event(EventName::new(name).unwrap());
        let id = manager.broker().publish(&topic, message).await.unwrap();
        expected
            .push(json!({ "type": name, "data": as_delivered(&data), "lastEventId": id.as_str() }));
    }
    for value in typed_fixtures() {
        let id = manager.publish("fixtures", &value).await.unwrap();
        let name = value["name"].as_str().unwrap_or("message");
        expected.push(json!({
            "type": name,
            "data": serde_json::to_string(&value).unwrap(),
            "lastEventId": id.as_str(),
        }));
    }
    // One byte over the maximum is refused on both paths, before anything is sent.
    let over = Message::new("z".repeat(MAX + 1));
    assert!(matches!(
        manager.broker().publish(&topic, over).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    let over = Value::String("z".repeat(MAX - 1)); // 2 quotes: MAX + 1 bytes of JSON
    assert!(matches!(
        manager.publish("fixtures", &over).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    // A last small event marks the end: everything before it has been delivered.
    let id = manager.publish("fixtures", &json!("end")).await.unwrap();
    expected.push(json!({ "type": "message", "data": "\"end\"", "lastEventId": id.as_str() }));

    browser
        .wait_for("window.received.length", &json!(expected.len()), LIMIT)
        .await
        .unwrap();
    let received = browser.eval("window.received").await.unwrap();
    let received = received.as_array().unwrap();
    assert_eq!(received.len(), expected.len());
    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        if got != want {
            let short = |v: &Value| {
                let s = v.to_string();
                if s.len() > 300 {
                    format!("{}… ({} bytes)", &s[..s.floor_char_boundary(300)], s.len())
                } else {
                    s
                }
            };
            panic!("fixture {i}: got {}\nwant {}", short(got), short(want));
        }
    }
    // Nothing else arrives (the refused payloads above were never sent).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        browser.eval("window.received.length").await.unwrap(),
        json!(expected.len())
    );
    eprintln!(
        "browser fixtures: {} events byte-exact in Chromium (incl. 2 of exactly {MAX} bytes)",
        expected.len()
    );
}
