//! A broker error that retrying cannot fix stops the client: the topic's Redis stream key holds
//! a string (WRONGTYPE on every read), so a stream that must read history answers `500` with the
//! error in the body, not a retry hint a browser would follow forever.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::Router;
use ssehub::backends::redis::redis;
use ssehub::{ChannelManager, MultiplexEndpoint, PathParams, RedisBroker, SseEndpoint};

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { ssehub::serve(listener, router).lean_streams(true).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_type_answers_500_naming_it() {
    let Some(url) = ssehub_test_support::redis::redis_url().await else {
        return;
    };
    let prefix = ssehub_core::conformance::unique_id("permanent");
    let broker = RedisBroker::builder(&url)
        .prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let manager = ChannelManager::<u64>::builder(broker)
        .key_prefix("room")
        .build()
        .unwrap();
    let id = "1";
    // The stream key of topic `room:1`, taken by a string.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:{{room:{id}}}:stream");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a stream")
        .query_async(&mut con)
        .await
        .unwrap();

    let endpoint = SseEndpoint::new(manager.clone(), "/sse/{id}")
        .unwrap()
        .resource(|p: &PathParams| p.get("id").unwrap_or_default().to_owned());
    let mux = MultiplexEndpoint::new("/mux")
        .channel("room", endpoint.clone())
        .unwrap();
    let addr = serve(
        Router::new()
            .merge(endpoint.into_router())
            .merge(mux.into_router()),
    )
    .await;

    // A multiplexed channel starts at its topic's tail: a read of the stream.
    let res = reqwest::get(format!("http://{addr}/mux?channel=room/{id}"))
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let body = res.text().await.unwrap();
    assert!(body.contains("WRONGTYPE"), "{body}");
    assert!(!body.contains("retry:"), "{body}");

    // A resume reads the stream after the client's id.
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/sse/{id}"))
        .header("last-event-id", "e1-1700000000000-0")
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("WRONGTYPE"), "{body}");

    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
}
