//! The snapshot rule over HTTP: the initial event is computed after the session joined the live
//! feed (nothing published meanwhile is lost), an exact resume carries only the missed events,
//! and a reset comes before the initial event.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http_body_util::BodyExt;
use ssehub_axum::{PathParams, SseEndpoint};
use ssehub_core::sse_parser::{ParsedEvent, SseParser};
use ssehub_core::{ChannelManager, EventId};
use ssehub_memory::MemoryBroker;
use tower::ServiceExt;

fn manager() -> ChannelManager<String> {
    ChannelManager::builder(MemoryBroker::new())
        .key_prefix("snap")
        .build()
        .unwrap()
}

/// Open `path` (with a `Last-Event-ID` when given) and read until `n` events arrived.
async fn events(
    endpoint: SseEndpoint<String>,
    path: &str,
    last_event_id: Option<&str>,
    n: usize,
) -> Vec<ParsedEvent> {
    let mut req = http::Request::get(path);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = endpoint
        .oneshot(req.body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut parser = SseParser::new();
    let mut got = Vec::new();
    while got.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame in time")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            parser.feed(&data);
            got.extend(parser.take_events());
        }
    }
    got
}

#[tokio::test]
async fn an_event_published_while_the_snapshot_is_computed_is_not_lost() {
    let m = manager();
    let publisher = m.clone();
    let endpoint = SseEndpoint::new(m.clone(), "/s/{id}")
        .unwrap()
        .initial_event(move |p: PathParams| {
            let publisher = publisher.clone();
            async move {
                let id = p.get("id").unwrap_or_default().to_owned();
                // Someone publishes while the page's snapshot is being read.
                publisher.publish(&id, &"during".to_owned()).await.unwrap();
                Some("snapshot".to_owned())
            }
        });
    let got = events(endpoint, "/s/1", None, 2).await;
    assert_eq!(got[0].data, "\"snapshot\"");
    assert_eq!(got[0].id, None);
    assert_eq!(got[1].data, "\"during\"");
    assert!(got[1].id.is_some());
}

#[tokio::test]
async fn an_exact_resume_carries_only_the_missed_events() {
    let m = manager();
    let endpoint = SseEndpoint::new(m.clone(), "/s/{id}")
        .unwrap()
        .initial_event(|_| async { Some("snapshot".to_owned()) });
    let mut ids: Vec<EventId> = Vec::new();
    for i in 0..3 {
        ids.push(m.publish("2", &format!("e{i}")).await.unwrap());
    }
    let got = events(endpoint, "/s/2", Some(ids[0].as_str()), 2).await;
    let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["\"e1\"", "\"e2\""]);
    assert_eq!(got[1].id.as_deref(), Some(ids[2].as_str()));
}

#[tokio::test]
async fn a_reset_comes_before_the_initial_event() {
    let m = manager();
    let endpoint = SseEndpoint::new(m.clone(), "/s/{id}")
        .unwrap()
        .initial_event(|_| async { Some("snapshot".to_owned()) });
    let got = events(endpoint, "/s/3", Some("no-such-epoch-1"), 2).await;
    assert_eq!(got[0].event, "reset");
    assert_eq!(got[1].data, "\"snapshot\"");
}
