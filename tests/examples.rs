//! The examples a user copies work end to end: `examples/memory.rs` (axum) and
//! `examples/tower.rs` (hyper and tower, no router), each served on a free port and read with a
//! published SSE parser (`eventsource-stream`). The Redis and NATS examples are only built
//! (`cargo build --examples --all-features`); the comments demo has its own tests.

#![allow(clippy::unwrap_used)]

#[path = "../examples/memory.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod memory_example;

#[path = "../examples/tower.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod tower_example;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};

const WAIT: Duration = Duration::from_secs(10);

type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// A stream on `url`, once the server answered 200 (so its session is subscribed).
async fn open(url: &str) -> Events {
    let res = tokio::time::timeout(WAIT, reqwest::Client::new().get(url).send())
        .await
        .expect("connect in time")
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    Box::pin(
        res.bytes_stream()
            .eventsource()
            .map(|e| e.expect("well-formed event stream")),
    )
}

async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("event in time")
        .expect("stream open")
}

/// `POST /api/rooms/{room}` with `text`: the status and the answer's body.
async fn post(addr: SocketAddr, room: &str, text: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/api/rooms/{room}"))
        .body(text.to_owned())
        .send()
        .await
        .expect("post");
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn status(addr: SocketAddr, method: reqwest::Method, path: &str) -> u16 {
    reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Two messages posted to `lobby` reach a stream open on it, in order, with the ids the posts
/// answered; another room's message does not.
async fn posted_messages_reach_the_stream(addr: SocketAddr) {
    let mut lobby = open(&format!("http://{addr}/api/sse/rooms/lobby")).await;
    let (code, other) = post(addr, "other", "elsewhere").await;
    assert_eq!(code, 200, "{other}");
    for text in ["hello", "again"] {
        let (code, id) = post(addr, "lobby", text).await;
        assert_eq!(code, 200, "{id}");
        let event = next(&mut lobby).await;
        assert_eq!(event.id, id.trim());
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(
            data,
            serde_json::json!({ "type": "message", "room": "lobby", "text": text })
        );
    }
}

#[tokio::test]
async fn memory_example_streams_what_is_posted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = memory_example::app().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.with_state::<()>(()).into_make_service()).await
    });
    posted_messages_reach_the_stream(addr).await;
    assert_eq!(
        status(addr, reqwest::Method::GET, "/nothing/here").await,
        404
    );
}

#[tokio::test]
async fn tower_example_streams_what_is_posted_and_answers_404_otherwise() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tower_example::serve(listener));
    posted_messages_reach_the_stream(addr).await;
    // The fallback service answers what the SSE layer does not own.
    assert_eq!(
        status(addr, reqwest::Method::GET, "/nothing/here").await,
        404
    );
    assert_eq!(
        status(addr, reqwest::Method::GET, "/api/rooms/lobby").await,
        405
    );
    // The SSE layer answers its own paths, whatever the method.
    assert_eq!(
        status(addr, reqwest::Method::POST, "/api/sse/rooms/lobby").await,
        405
    );
}
