//! The whole conformance suite against a real Redis, and against a Redis Cluster (3 masters,
//! sharded pub/sub).

use ssehub_core::{Broker, Message, Topic};
use ssehub_redis::RedisBroker;

async fn broker(url: Option<String>, prefix: &str) -> Option<RedisBroker> {
    Some(
        RedisBroker::builder(&url?)
            .prefix(prefix)
            .history(100)
            .build()
            .await
            .expect("connect"),
    )
}

/// The suite on the Redis at `$url` (an expression giving `Option<String>`).
macro_rules! suite {
    ($url:expr) => {
        ssehub_core::conformance_tests!(
            make = match super::broker($url, "ssehub-test").await {
                Some(b) => std::sync::Arc::new(b),
                None => return,
            },
            foreign = {
                let Some(other) = super::broker($url, "ssehub-test-other").await else {
                    return;
                };
                let topic = super::Topic::new("elsewhere").expect("topic");
                super::Broker::publish(&other, &topic, super::Message::new("x"))
                    .await
                    .expect("publish")
            },
        );
    };
}

mod server {
    suite!(ssehub_test_support::redis::redis_url().await);
}

mod cluster {
    suite!(ssehub_test_support::redis_cluster::redis_cluster_url().await);
}
