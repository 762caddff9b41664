//! The whole conformance suite against a Redis Cluster (3 masters, sharded pub/sub).

use std::sync::Arc;

use ssehub_core::{Broker, Message, Topic};
use ssehub_redis::RedisBroker;
use ssehub_test_support::redis_cluster::redis_cluster_url;

async fn broker(prefix: &str) -> Option<RedisBroker> {
    let url = redis_cluster_url().await?;
    Some(
        RedisBroker::builder(&url)
            .prefix(prefix)
            .history(100)
            .build()
            .await
            .expect("connect"),
    )
}

ssehub_core::conformance_tests!(
    make = match broker("ssehub-test").await {
        Some(b) => Arc::new(b),
        None => return,
    },
    foreign = {
        let Some(other) = broker("ssehub-test-other").await else {
            return;
        };
        let topic = Topic::new("elsewhere").expect("topic");
        other
            .publish(&topic, Message::new("x"))
            .await
            .expect("publish")
    },
);
