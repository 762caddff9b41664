//! The whole conformance suite against NATS in JetStream mode.

use std::sync::Arc;
use std::time::Duration;

use ssehub_core::{Broker, Message, Topic};
use ssehub_nats::NatsBroker;

/// A broker on the test server, or `None` (skipped) when there is none.
async fn broker(prefix: &str, stream: &str) -> Option<NatsBroker> {
    // The broker's log, shown with a failing case's output (why a feed sent a gap).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let url = ssehub_test_support::nats::nats_url().await?;
    Some(
        NatsBroker::builder(url)
            .prefix(prefix)
            .stream(stream)
            // A small window keeps `replay_outside_window_is_gap` quick; old test data expires.
            .history(100)
            .history_ttl(Duration::from_secs(600))
            .build()
            .await
            .expect("connect to nats"),
    )
}

macro_rules! make {
    () => {
        match broker("ssehubtest.js", "SSEHUB_TEST_JS").await {
            Some(b) => Arc::new(b) as Arc<dyn Broker>,
            None => return,
        }
    };
}

ssehub_core::conformance_tests!(
    make = make!(),
    foreign = {
        // Another stream is another epoch.
        let Some(other) = broker("ssehubtest.foreign", "SSEHUB_TEST_FOREIGN").await else {
            return;
        };
        let topic = Topic::new("elsewhere").expect("topic");
        other
            .publish(&topic, Message::new("x"))
            .await
            .expect("publish")
    },
);
