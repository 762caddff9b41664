//! Resources from the request: what `authorize_as` learned (the user) names the channel, so a
//! client cannot open another user's channel.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use ssehub_axum::{RequestInfo, SseEndpoint};
use ssehub_core::ChannelManager;
use ssehub_memory::MemoryBroker;
use tower::ServiceExt;

#[derive(Clone, Debug, PartialEq)]
struct User(String);

fn endpoint(m: &ChannelManager<String>, pattern: &str) -> SseEndpoint<String> {
    SseEndpoint::new(m.clone(), pattern)
        .unwrap()
        .authorize_as(|parts, _params| {
            let user = parts
                .headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(|u| User(u.to_owned()));
            async move { user.ok_or(StatusCode::UNAUTHORIZED) }
        })
        .resource_from(|req: &RequestInfo<'_>| req.auth::<User>().map(|u| u.0.clone()))
}

async fn get(
    e: SseEndpoint<String>,
    path: &str,
    user: Option<&str>,
) -> http::Response<ssehub_axum::SseBody> {
    let mut req = http::Request::get(path);
    if let Some(u) = user {
        req = req.header("x-user", u);
    }
    e.oneshot(req.body(String::new()).unwrap()).await.unwrap()
}

async fn next_data(res: http::Response<ssehub_axum::SseBody>) -> String {
    let mut body = res.into_body();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
        if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
            return data.to_owned();
        }
    }
}

#[tokio::test]
async fn the_signed_in_user_names_the_channel() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .key_prefix("user")
        .key_suffix("notifications")
        .build()
        .unwrap();
    let e = endpoint(&m, "/notifications");
    let res = get(e.clone(), "/notifications", Some("alice")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(m.session_count("alice"), 1);
    m.publish("bob", &"for bob".to_owned()).await.unwrap();
    m.publish("alice", &"for alice".to_owned()).await.unwrap();
    assert_eq!(next_data(res).await, "\"for alice\"");
    assert_eq!(get(e, "/notifications", None).await.status(), 401);
}

#[tokio::test]
async fn a_client_cannot_name_another_users_channel() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .key_prefix("user")
        .build()
        .unwrap();
    // The path names a user; the check compares it with who is asking.
    let e = endpoint(&m, "/users/{id}/notifications")
        .validate_from(|req| req.params().get("id") == req.auth::<User>().map(|u| u.0.as_str()));
    assert_eq!(
        get(e.clone(), "/users/bob/notifications", Some("alice"))
            .await
            .status(),
        400
    );
    assert_eq!(m.session_count("bob"), 0);
    assert_eq!(
        get(e.clone(), "/users/alice/notifications", Some("alice"))
            .await
            .status(),
        200
    );
    // A refused derivation is a 403, and an invalid derived id a 400.
    let nobody = SseEndpoint::new(m.clone(), "/x")
        .unwrap()
        .resource_from(|_| None);
    assert_eq!(get(nobody, "/x", None).await.status(), 403);
    let bad = SseEndpoint::new(m.clone(), "/y")
        .unwrap()
        .resource_from(|_| Some("a:b".to_owned()));
    assert_eq!(get(bad, "/y", None).await.status(), 400);
}
