//! The multiplexing endpoint: several channels on one response, each event labelled with its
//! channel, ids that resume every channel exactly, a reset per channel, refusals that name the
//! channel, and the channel limit.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use ssehub_axum::{MultiplexEndpoint, PathParams, SseEndpoint};
use ssehub_core::multiplex::decode_positions;
use ssehub_core::sse_parser::{ParsedEvent, SseParser};
use ssehub_core::{ChannelManager, EventId};
use ssehub_memory::MemoryBroker;
use tower::ServiceExt;

struct App {
    comments: ChannelManager<String>,
    votes: ChannelManager<String>,
    mux: MultiplexEndpoint,
    disconnects: Arc<AtomicUsize>,
}

/// Comments and votes on one broker, each endpoint with an initial event naming its channel;
/// `votes/secret` is refused by `authorize`.
fn app() -> App {
    let broker = MemoryBroker::new();
    let comments = ChannelManager::<String>::builder(broker.clone())
        .key_prefix("comments")
        .build()
        .unwrap();
    let votes = ChannelManager::<String>::builder(broker)
        .key_prefix("votes")
        .build()
        .unwrap();
    let disconnects = Arc::new(AtomicUsize::new(0));
    let d = disconnects.clone();
    let comments_endpoint = SseEndpoint::new(comments.clone(), "/sse/comments/{discussionId}")
        .unwrap()
        .initial_event(|p: PathParams| async move {
            Some(format!("comments of {}", p.get("discussionId")?))
        })
        .on_disconnect(move |_p: &PathParams| {
            d.fetch_add(1, Ordering::SeqCst);
        });
    let votes_endpoint = SseEndpoint::new(votes.clone(), "/sse/votes/{discussionId}")
        .unwrap()
        .initial_event(|p: PathParams| async move {
            Some(format!("votes of {}", p.get("discussionId")?))
        })
        .authorize(|_parts, p: &PathParams| {
            let refused = p.get("discussionId") == Some("secret");
            async move {
                if refused {
                    Err(StatusCode::FORBIDDEN)
                } else {
                    Ok(())
                }
            }
        });
    let mux = MultiplexEndpoint::new("/sse")
        .keep_alive(None)
        .channel("comments", comments_endpoint)
        .unwrap()
        .channel("votes", votes_endpoint)
        .unwrap();
    App {
        comments,
        votes,
        mux,
        disconnects,
    }
}

struct Stream {
    body: ssehub_axum::SseBody,
    parser: SseParser,
}

impl Stream {
    async fn next(&mut self, n: usize) -> Vec<ParsedEvent> {
        let mut got: Vec<ParsedEvent> = Vec::new();
        while got.len() < n {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("a frame in time")
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.parser.feed(&data);
                got.extend(self.parser.take_events());
            }
        }
        assert_eq!(got.len(), n, "exactly {n} events: {got:?}");
        got
    }

    /// Nothing more arrives within a short wait.
    async fn quiet(&mut self) {
        let more = tokio::time::timeout(Duration::from_millis(200), self.body.frame()).await;
        if let Ok(Some(Ok(frame))) = more
            && let Ok(data) = frame.into_data()
        {
            self.parser.feed(&data);
            let events = self.parser.take_events();
            assert!(events.is_empty(), "unexpected events: {events:?}");
        }
    }
}

/// A body's text, read until `done` says it holds enough.
async fn read_until<B>(body: &mut B, done: impl Fn(&str) -> bool) -> String
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut text = String::new();
    while !done(&text) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    text
}

async fn request(
    mux: &MultiplexEndpoint,
    method: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> http::Response<ssehub_axum::SseBody> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("/sse?{query}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    mux.clone()
        .oneshot(req.body(String::new()).unwrap())
        .await
        .unwrap()
}

async fn open(mux: &MultiplexEndpoint, query: &str, last_event_id: Option<&str>) -> Stream {
    let res = request(mux, "GET", query, last_event_id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    Stream {
        body: res.into_body(),
        parser: SseParser::new(),
    }
}

async fn refusal(mux: &MultiplexEndpoint, method: &str, query: &str) -> (StatusCode, String) {
    let res = request(mux, method, query, None).await;
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const BOTH: &str = "channel=comments/1&channel=votes/1";

#[tokio::test]
async fn events_say_their_channel_and_ids_hold_every_channel_position() {
    let app = app();
    let mut s = open(&app.mux, BOTH, None).await;
    // A fresh connect: each channel's initial event, labelled, without an id.
    let mut initial = s.next(2).await;
    initial.sort_by(|a, b| a.event.cmp(&b.event));
    assert_eq!(initial[0].event, "comments/1");
    assert_eq!(initial[0].data, "\"comments of 1\"");
    assert_eq!(initial[1].event, "votes/1");
    assert_eq!(initial[1].data, "\"votes of 1\"");
    assert!(initial.iter().all(|e| e.id.is_none()));

    let v1 = app.votes.publish("1", &"v1".into()).await.unwrap();
    let got = s.next(1).await;
    assert_eq!(got[0].event, "votes/1");
    let entries = decode_positions(got[0].id.as_deref().unwrap(), 2).unwrap();
    assert_eq!(entries, [None, Some(v1.as_str().to_owned())]);

    let c1 = app
        .comments
        .publish_named("1", &"c1".into(), "comment-added")
        .await
        .unwrap();
    let got = s.next(1).await;
    assert_eq!(got[0].event, "comments/1:comment-added");
    let entries = decode_positions(got[0].id.as_deref().unwrap(), 2).unwrap();
    assert_eq!(
        entries,
        [Some(c1.as_str().to_owned()), Some(v1.as_str().to_owned())]
    );
    // Another discussion's events are not this connection's.
    app.votes.publish("2", &"other".into()).await.unwrap();
    s.quiet().await;

    drop(s);
    assert_eq!(
        app.disconnects.load(Ordering::SeqCst),
        1,
        "on_disconnect ran"
    );
    assert_eq!(app.comments.session_count("1"), 0);
    assert_eq!(app.votes.session_count("1"), 0);
}

#[tokio::test]
async fn a_reconnect_resumes_every_channel_exactly() {
    let app = app();
    let mut s = open(&app.mux, BOTH, None).await;
    s.next(2).await; // the initial events
    for i in 0..3 {
        app.comments.publish("1", &format!("c{i}")).await.unwrap();
        app.votes.publish("1", &format!("v{i}")).await.unwrap();
    }
    let seen = s.next(6).await;
    let last = seen.last().unwrap().id.clone().unwrap();
    drop(s);

    // Missed while away: two comments, three votes, interleaved.
    let mut missed_comments: Vec<EventId> = Vec::new();
    let mut missed_votes: Vec<EventId> = Vec::new();
    for i in 3..5 {
        missed_votes.push(app.votes.publish("1", &format!("v{i}")).await.unwrap());
        missed_comments.push(app.comments.publish("1", &format!("c{i}")).await.unwrap());
    }
    missed_votes.push(app.votes.publish("1", &"v5".into()).await.unwrap());

    let mut s = open(&app.mux, BOTH, Some(&last)).await;
    let got = s.next(5).await;
    // Only the missed events, each channel in its own order, no initial event, no reset.
    let of = |channel: &str| -> Vec<String> {
        got.iter()
            .filter(|e| e.event == channel)
            .map(|e| e.data.clone())
            .collect()
    };
    assert_eq!(of("comments/1"), ["\"c3\"", "\"c4\""]);
    assert_eq!(of("votes/1"), ["\"v3\"", "\"v4\"", "\"v5\""]);
    let entries = decode_positions(got.last().unwrap().id.as_deref().unwrap(), 2).unwrap();
    assert_eq!(
        entries,
        [
            Some(missed_comments[1].as_str().to_owned()),
            Some(missed_votes[2].as_str().to_owned())
        ]
    );
    s.quiet().await;
}

#[tokio::test]
async fn a_channel_that_cannot_resume_gets_its_own_reset_and_the_others_resume() {
    let app = app();
    let c1 = app.comments.publish("1", &"c1".into()).await.unwrap();
    let c2 = app.comments.publish("1", &"c2".into()).await.unwrap();
    // The votes position is from another epoch (a restarted broker, say).
    let last = format!("~{c1}.zzz9-5");
    let mut s = open(&app.mux, BOTH, Some(&last)).await;
    let got = s.next(3).await;
    let comments: Vec<&ParsedEvent> = got.iter().filter(|e| e.event == "comments/1").collect();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].data, "\"c2\"");
    let reset = got.iter().position(|e| e.event == "reset").unwrap();
    let payload: serde_json::Value = serde_json::from_str(&got[reset].data).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"reason": "epoch-changed", "channel": "votes/1"})
    );
    let initial = got.iter().position(|e| e.event == "votes/1").unwrap();
    assert!(reset < initial, "the reset comes before the initial event");
    assert_eq!(got[initial].data, "\"votes of 1\"");
    // The votes channel now starts afresh: no id of this stream, before or after its reset,
    // carries the position it could not resume from.
    for e in &got {
        let entries = decode_positions(e.id.as_deref().unwrap(), 2).unwrap();
        assert_eq!(entries[1], None, "{e:?}");
    }
    let v = app.votes.publish("1", &"v".into()).await.unwrap();
    let got = s.next(1).await;
    let entries = decode_positions(got[0].id.as_deref().unwrap(), 2).unwrap();
    assert_eq!(
        entries,
        [Some(c2.as_str().to_owned()), Some(v.as_str().to_owned())]
    );
}

#[tokio::test]
async fn an_id_that_is_not_multiplexed_resets_every_channel() {
    let app = app();
    let mut s = open(&app.mux, BOTH, Some("plain-1")).await;
    let got = s.next(4).await;
    let resets: Vec<serde_json::Value> = got
        .iter()
        .filter(|e| e.event == "reset")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(resets.len(), 2);
    for r in resets {
        assert_eq!(r["reason"], "malformed-id");
    }
}

#[tokio::test]
async fn refusals_name_the_channel() {
    let app = app();
    let (status, body) = refusal(&app.mux, "GET", "channel=comments/1&channel=votes/secret").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("votes/secret"), "{body}");
    // Refused before anything opened.
    assert_eq!(app.comments.session_count("1"), 0);

    let (status, body) = refusal(&app.mux, "GET", "channel=likes/1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("likes/1"), "{body}");

    for bad in [
        "",
        "x=1",
        "channel=comments",
        "channel=comments/",
        "channel=comments/a:b",
    ] {
        let (status, _) = refusal(&app.mux, "GET", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let (status, body) = refusal(&app.mux, "GET", "channel=votes/1&channel=votes/1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("twice"), "{body}");

    let (status, _) = refusal(&app.mux, "POST", BOTH).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn at_most_32_channels_by_default() {
    let app = app();
    let query = |n: usize| -> String {
        (0..n)
            .map(|i| format!("channel=comments/{i}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let (status, body) = refusal(&app.mux, "GET", &query(33)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("at most 32"), "{body}");

    let mut s = open(&app.mux, &query(32), None).await;
    let initial = s.next(32).await;
    assert!(initial.iter().all(|e| e.id.is_none()));
    for i in 0..32 {
        assert_eq!(app.comments.session_count(&i.to_string()), 1);
    }
    // The id of the last channel's event holds 32 entries.
    let id = app.comments.publish("31", &"x".into()).await.unwrap();
    let got = s.next(1).await;
    let entries = decode_positions(got[0].id.as_deref().unwrap(), 32).unwrap();
    assert_eq!(entries[31].as_deref(), Some(id.as_str()));
    assert!(entries[..31].iter().all(Option::is_none));

    let small = app.mux.clone().max_channels(2);
    let (status, _) = refusal(&small, "GET", &query(3)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn ndjson_and_head_work_on_the_multiplexed_endpoint() {
    let app = app();
    let req = http::Request::get(format!("/sse?{BOTH}"))
        .header("accept", "application/x-ndjson")
        .body(String::new())
        .unwrap();
    let res = app.mux.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let mut body = res.into_body();
    let text = read_until(&mut body, |t| {
        t.lines()
            .filter(|l| l.contains("\"type\":\"event\""))
            .count()
            >= 2
    })
    .await;
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["type"] == "event")
        .collect();
    let mut names: Vec<&str> = events
        .iter()
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["comments/1", "votes/1"]);
    drop(body);
    assert_eq!(app.comments.session_count("1"), 0);

    let res = request(&app.mux, "HEAD", BOTH, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(app.comments.session_count("1"), 0, "HEAD opens no session");
}

#[tokio::test]
async fn a_channel_that_delivered_nothing_still_resumes_exactly() {
    let app = app();
    // The votes topic has history, but this connection will get no vote before it drops.
    app.votes.publish("1", &"v0".into()).await.unwrap();
    let mut s = open(&app.mux, BOTH, None).await;
    s.next(2).await; // the initial events
    app.comments.publish("1", &"c1".into()).await.unwrap();
    let got = s.next(1).await;
    assert_eq!(got[0].event, "comments/1");
    let last = got[0].id.clone().unwrap();
    // The id already holds the votes topic's position (its newest event at connect).
    let entries = decode_positions(&last, 2).unwrap();
    assert!(entries[1].is_some(), "{last}");
    drop(s);

    app.votes.publish("1", &"v1".into()).await.unwrap();
    app.comments.publish("1", &"c2".into()).await.unwrap();
    let mut s = open(&app.mux, BOTH, Some(&last)).await;
    let mut got: Vec<(String, String)> = s
        .next(2)
        .await
        .into_iter()
        .map(|e| (e.event, e.data))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("comments/1".to_owned(), "\"c2\"".to_owned()),
            ("votes/1".to_owned(), "\"v1\"".to_owned())
        ],
        "exactly the missed events, no initial event"
    );
    s.quiet().await;
}

#[tokio::test]
async fn the_layer_serves_the_multiplexed_endpoint_in_front_of_any_service() {
    use tower::Layer;
    let app = app();
    let inner = tower::service_fn(|_req: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new("inner".to_owned()))
    });
    let svc = ssehub_axum::SseLayer::new(app.mux.clone()).layer(inner);

    let res = svc
        .clone()
        .oneshot(
            http::Request::get("/elsewhere")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"inner");

    let res = svc
        .oneshot(
            http::Request::get(format!("/sse?{BOTH}"))
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let text = read_until(&mut body, |t| t.matches("event: ").count() >= 2).await;
    assert!(
        text.contains("event: comments/1\n") && text.contains("event: votes/1\n"),
        "{text}"
    );
}
