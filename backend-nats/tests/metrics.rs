//! The broker-reconnect metric counts reconnects only: not the first connect, and exactly once
//! per restart of the server. Alone in its binary, so the global recorder sees only this test.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ssehub_core::Broker;
use ssehub_core::metric_names::BROKER_RECONNECTS;
use ssehub_nats::{Mode, NatsBroker};
use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::or_skip;
use ssehub_test_support::server::BrokerServer;

const WAIT: Duration = Duration::from_secs(60);

/// Reconnects counted since the last call (a snapshot drains the debugging recorder's counters).
fn reconnects(snapshotter: &Snapshotter) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == BROKER_RECONNECTS)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_are_counted_once_per_restart_and_never_for_the_first_connect() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");
    let Some(mut server) = or_skip(NatsServer::start(NatsOptions::default()).await) else {
        return;
    };
    let broker = NatsBroker::builder(server.url())
        .prefix("metrics")
        .mode(Mode::Core)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("connect");
    broker.health().await.expect("healthy");
    assert_eq!(
        reconnects(&snapshotter),
        0,
        "the first connect is no reconnect"
    );

    server.kill();
    server.restart().await.expect("restart nats-server");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut counted = 0;
    while counted == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        counted += reconnects(&snapshotter);
    }
    broker.health().await.expect("healthy after the restart");
    counted += reconnects(&snapshotter);
    assert_eq!(counted, 1, "one restart, one reconnect");
}
