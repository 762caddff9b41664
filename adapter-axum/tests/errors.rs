//! The adapter's error paths: configuration mistakes are `Error::InvalidConfig` at startup, and a
//! broker error that retrying cannot fix answers `500` naming it (which stops an `EventSource`),
//! while a temporary one keeps the retry hint.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use http_body_util::BodyExt;
use ssehub_axum::{MultiplexEndpoint, SseEndpoint, Unavailable};
use ssehub_core::{
    Broker, Capabilities, ChannelManager, Error, EventId, Message, Replay, Result, Subscription,
    Topic,
};
use ssehub_memory::MemoryBroker;
use tower::ServiceExt;

fn manager() -> ChannelManager<u64> {
    ChannelManager::builder(MemoryBroker::new())
        .build()
        .unwrap()
}

#[test]
fn a_path_pattern_that_does_not_parse_is_a_configuration_error() {
    for bad in ["/a/{id", "/a/{*rest}/b", "/a/{}", "/a/{x}{y}"] {
        let Err(err) = SseEndpoint::new(manager(), bad) else {
            panic!("{bad} was accepted");
        };
        assert!(matches!(err, Error::InvalidConfig { .. }), "{bad}: {err:?}");
        assert!(!err.is_temporary());
        assert!(err.to_string().contains("path pattern"), "{err}");
    }
}

#[test]
fn a_bad_multiplexed_channel_name_or_pattern_is_a_configuration_error() {
    let endpoint = || SseEndpoint::new(manager(), "/api/sse/comments/{id}").unwrap();
    for bad in ["", "a/b", "a:b", &"x".repeat(65)] {
        let Err(err) = MultiplexEndpoint::new("/api/sse").channel(bad, endpoint()) else {
            panic!("{bad:?} was accepted");
        };
        assert!(
            matches!(err, Error::InvalidConfig { .. }),
            "{bad:?}: {err:?}"
        );
    }
    let no_capture = SseEndpoint::new(manager(), "/api/sse/fixed").unwrap();
    let err = MultiplexEndpoint::new("/api/sse")
        .channel("fixed", no_capture)
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    let err = MultiplexEndpoint::new("/api/sse")
        .channel("comments", endpoint())
        .unwrap()
        .channel("comments", endpoint())
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
}

/// A broker whose subscriptions fail with the error it was given.
#[derive(Debug)]
struct Failing {
    inner: MemoryBroker,
    temporary: bool,
}

#[async_trait]
impl Broker for Failing {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        self.inner.publish(topic, message).await
    }
    async fn subscribe(&self, _topic: &Topic) -> Result<Subscription> {
        Err(Error::broker(
            "failing",
            self.temporary,
            if self.temporary {
                "connection refused"
            } else {
                "noperm: this user has no permissions to access the channel"
            },
            None,
        ))
    }
    async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> Result<Replay> {
        self.inner.replay(topic, after, limit).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
        self.inner.id_order(a, b)
    }
    fn active_subscriptions(&self) -> usize {
        0
    }
}

fn failing(temporary: bool) -> ChannelManager<u64> {
    ChannelManager::builder_dyn(Arc::new(Failing {
        inner: MemoryBroker::new(),
        temporary,
    }))
    .build()
    .unwrap()
}

async fn get<S>(service: S, path: &str) -> (StatusCode, String)
where
    S: tower::Service<
            http::Request<String>,
            Response = http::Response<ssehub_axum::SseBody>,
            Error = std::convert::Infallible,
        >,
{
    let req = http::Request::get(path).body(String::new()).unwrap();
    let res = service.oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_permanent_broker_error_answers_500_naming_it() {
    let endpoint = SseEndpoint::new(failing(false), "/sse/{id}").unwrap();
    let (status, body) = get(endpoint.clone(), "/sse/1").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("noperm"), "{body}");
    assert!(!body.contains("retry:"), "{body}");

    let mux = MultiplexEndpoint::new("/mux")
        .channel("c", endpoint)
        .unwrap();
    let (status, body) = get(mux, "/mux?channel=c/1").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.contains("channel \"c/1\"") && body.contains("noperm"),
        "{body}"
    );
}

#[tokio::test]
async fn a_temporary_broker_error_keeps_the_retry_hint() {
    let endpoint = SseEndpoint::new(failing(true), "/sse/{id}").unwrap();
    let (status, body) = get(endpoint.clone(), "/sse/1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("retry:"), "{body}");

    let endpoint = endpoint.unavailable(Unavailable::ServiceUnavailable);
    let req = http::Request::get("/sse/1").body(String::new()).unwrap();
    let res = endpoint.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key(http::header::RETRY_AFTER));
}
