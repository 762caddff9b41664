//! Cases about the nodes of a cluster: the signals between them, and the presence built on them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{WAIT, unique_id};
use crate::broker::Broker;
use crate::manager::{ChannelManager, SubscribeOptions};

/// Presence across two nodes (`a` and `b`: two brokers on one server): each node knows the
/// cluster count, a session leaving is seen on both, and a node that vanishes without a word
/// (its session never closes, its manager is gone) drops out within the presence window.
pub async fn presence_across_nodes(a: Arc<dyn Broker>, b: Arc<dyn Broker>) {
    let config = crate::PresenceConfig {
        coalesce: Duration::from_millis(20),
        heartbeat: Duration::from_millis(200),
        window: Duration::from_secs(1),
    };
    let node = |broker| {
        ChannelManager::<u64>::builder_dyn(broker)
            .key_prefix("presence")
            .presence(config)
            .build()
            .expect("manager")
    };
    let (na, nb) = (node(a), node(b));
    let id = unique_id("presence");
    let count = async |m: &ChannelManager<u64>, want: usize| {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let n = m.cluster_session_count(&id).await.expect("count");
            if n == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} sessions, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let open = async |m: &ChannelManager<u64>| {
        m.subscribe(&id, SubscribeOptions::new())
            .await
            .expect("subscribe")
    };
    let _a1 = open(&na).await;
    let _a2 = open(&na).await;
    let b1 = open(&nb).await;
    count(&na, 3).await;
    count(&nb, 3).await;
    drop(b1);
    count(&na, 2).await;
    count(&nb, 2).await;
    let b2 = open(&nb).await;
    count(&na, 3).await;
    // `b` dies without a word.
    std::mem::forget(b2);
    drop(nb);
    count(&na, 2).await;
}

/// A signal reaches the signals stream of the node that sent it (and every other node's).
pub async fn signals_reach_every_node(broker: &dyn Broker) {
    if !broker.capabilities().presence {
        eprintln!("skipped: broker has no signals between nodes");
        return;
    }
    let mut signals = broker.signals().await.expect("signals");
    let payload = Bytes::from(unique_id("signal"));
    broker.signal(payload.clone()).await.expect("signal");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = tokio::time::timeout_at(deadline, signals.next())
            .await
            .expect("the signal in time")
            .expect("the stream goes on");
        // Other tests' signals may share the stream: wait for this one.
        if got == payload {
            break;
        }
    }
}
