//! Cases about idempotent publishing: a repeated key stores nothing and answers the first id.

use futures_util::StreamExt;

use super::{WAIT, next_event, unique_topic};
use crate::broker::{Broker, Delivery, Message, Replay};
use crate::idempotency::IdempotencyKey;

/// A publish repeated with its idempotency key (a retry after a lost reply) answers the first
/// one's id and stores and delivers nothing: one event reaches a subscriber and a replay, even
/// when the repeat carries other data. The key is scoped to its topic, a batch's repeated keys
/// answer their first ids while its new keys store, and a message without a key always stores.
/// Brokers that declare no [`idempotency`](crate::Capabilities::idempotency) window skip it.
pub async fn idempotent_publish(broker: &dyn Broker) {
    if broker.capabilities().idempotency.is_none() {
        eprintln!("skipped: the broker declares no idempotency window");
        return;
    }
    let topic = unique_topic("idem");
    let other = unique_topic("idem-other");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let key = IdempotencyKey::new(format!("k-{topic}")).expect("key");
    let keyed = |data: &'static str| Message::new(data).with_idempotency_key(key.clone());

    let first = broker.publish(&topic, keyed("one")).await.expect("publish");
    let again = broker
        .publish(&topic, keyed("one again"))
        .await
        .expect("repeat");
    assert_eq!(again, first, "a repeated key answers the first id");
    let elsewhere = broker
        .publish(&other, keyed("one"))
        .await
        .expect("other topic");
    assert_ne!(elsewhere, first, "keys are scoped to their topic");
    let plain = broker
        .publish(&topic, Message::new("plain"))
        .await
        .expect("plain");
    let plain_again = broker
        .publish(&topic, Message::new("plain"))
        .await
        .expect("plain");
    assert_ne!(plain, plain_again, "without a key every publish stores");

    // A batch that repeats the first key and brings a new one.
    let fresh = IdempotencyKey::new(format!("k2-{topic}")).expect("key");
    let batch = vec![
        keyed("one, in a batch"),
        Message::new("two").with_idempotency_key(fresh.clone()),
    ];
    let ids = broker.publish_many(&topic, batch).await.expect("batch");
    assert_eq!(ids[0], first, "a batch's repeated key answers the first id");
    let again = broker
        .publish_many(
            &topic,
            vec![Message::new("two").with_idempotency_key(fresh)],
        )
        .await
        .expect("batch repeat");
    assert_eq!(
        again,
        [ids[1].clone()],
        "a repeated batch answers the same ids"
    );

    let delivered: Vec<_> = [&first, &plain, &plain_again, &ids[1]]
        .into_iter()
        .cloned()
        .collect();
    for (i, id) in delivered.iter().enumerate() {
        let env = next_event(&mut sub).await;
        assert_eq!(&env.id, id, "delivery {i}: each event once, in order");
        if i == 0 {
            assert_eq!(
                &env.data[..],
                b"one",
                "the first publish's data is the event"
            );
        }
    }
    if let Ok(Some(extra)) = tokio::time::timeout(WAIT / 20, sub.next()).await {
        assert!(
            !matches!(extra, Delivery::Event(_)),
            "a repeat was delivered: {extra:?}"
        );
    }
    if broker.capabilities().history.is_some() {
        match broker.replay(&topic, &first, 100).await.expect("replay") {
            Replay::Events(events) => {
                let replayed: Vec<_> = events.into_iter().map(|e| e.id).collect();
                assert_eq!(
                    replayed,
                    delivered[1..],
                    "the history holds each event once"
                );
            }
            Replay::Gap(_) => panic!("replay after the first event answered a gap"),
        }
    }
}
