//! The snapshot rule at the manager, and per-publish event names.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::{ChannelManager, Error, SubscribeOptions};
use ssehub_memory::MemoryBroker;

async fn text(session: &mut ssehub_core::Session) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(5), session.next())
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(chunk.to_vec()).unwrap()
}

#[tokio::test]
async fn the_initial_event_is_computed_after_the_join_and_comes_first() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .build()
        .unwrap();
    let publisher = m.clone();
    let options = SubscribeOptions::new().initial_with(move || {
        let publisher = publisher.clone();
        async move {
            publisher.publish("a", &"during".to_owned()).await.unwrap();
            Some("snapshot".to_owned())
        }
    });
    let mut s = m.subscribe("a", options).await.unwrap();
    let mut got = text(&mut s).await;
    if !got.contains("during") {
        got.push_str(&text(&mut s).await);
    }
    let snapshot = got.find("snapshot").unwrap();
    let during = got.find("during").unwrap();
    assert!(snapshot < during, "{got}");
}

#[tokio::test]
async fn publish_named_sets_the_event_field_and_refuses_reserved_names() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .build()
        .unwrap();
    let mut s = m.subscribe("n", SubscribeOptions::new()).await.unwrap();
    let id = m.publish_named("n", &7, "vote-cast").await.unwrap();
    assert_eq!(
        text(&mut s).await,
        format!("id: {id}\nevent: vote-cast\ndata: 7\n\n")
    );
    let channel = m.channel("n").unwrap();
    channel.publish_named(&8, "other").await.unwrap();
    assert!(text(&mut s).await.contains("event: other\ndata: 8"));
    for bad in ["reset", "a\nb", ""] {
        let err = m.publish_named("n", &1, bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidEventName { .. }),
            "{bad}: {err}"
        );
    }
}
