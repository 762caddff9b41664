//! Every public error path of ssehub-core returns the variant its documentation names, with the
//! temporariness reconnect logic relies on.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Serialize, Serializer};
use ssehub_core::multiplex::MultiplexedSession;
use ssehub_core::{
    Broker, Capabilities, ChannelManager, Error, EventId, EventName, MAX_TOPIC_LEN, Message,
    Replay, Result, Sse, SubscribeOptions, Subscription, Topic, validate_key_part,
};
use ssehub_memory::MemoryBroker;
use tokio::sync::Semaphore;

fn manager() -> ChannelManager<u64> {
    ChannelManager::builder(MemoryBroker::new())
        .key_prefix("errors")
        .build()
        .unwrap()
}

#[test]
fn a_bad_key_prefix_or_suffix_is_a_configuration_error() {
    for (prefix, suffix) in [("a:b", "ok"), ("ok", "with space"), ("*", "ok")] {
        let err = ChannelManager::<u64>::builder(MemoryBroker::new())
            .key_prefix(prefix)
            .key_suffix(suffix)
            .build()
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        assert!(!err.is_temporary());
        let which = if prefix == "ok" {
            "key suffix"
        } else {
            "key prefix"
        };
        assert!(err.to_string().contains(which), "{err}");
    }
}

#[tokio::test]
async fn a_bad_resource_id_is_refused_by_every_method_that_takes_one() {
    let m = manager();
    for bad in ["", "a:b", "a b", "new\nline", &"x".repeat(129)] {
        let is_bad = |e: Error| matches!(e, Error::InvalidResourceId { .. }) && !e.is_temporary();
        assert!(is_bad(validate_key_part(bad).unwrap_err()));
        assert!(is_bad(m.topic(bad).unwrap_err()));
        assert!(is_bad(m.channel(bad).err().unwrap()));
        assert!(is_bad(m.publish(bad, &1).await.unwrap_err()));
        assert!(is_bad(
            m.subscribe(bad, SubscribeOptions::new())
                .await
                .err()
                .unwrap()
        ));
        assert!(is_bad(m.close_channel(bad).unwrap_err()));
        assert!(is_bad(Topic::from_parts(None, bad, None).unwrap_err()));
    }
}

#[test]
fn a_bad_topic_is_refused() {
    for bad in [
        "a::b".to_owned(),
        "a:b c".to_owned(),
        "a".repeat(MAX_TOPIC_LEN + 1),
    ] {
        let err = Topic::new(&bad).unwrap_err();
        assert!(matches!(err, Error::InvalidTopic { .. }), "{err:?}");
        assert!(!err.is_temporary());
    }
}

#[test]
fn a_bad_event_id_is_refused() {
    for bad in ["", "a b", "new\nline", "nul\0"] {
        let err = EventId::parse(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidEventId { .. }), "{err:?}");
        assert!(!err.is_temporary());
    }
}

#[tokio::test]
async fn a_bad_event_name_is_refused_where_it_enters() {
    for bad in ["", "new\nline", "cr\r", "reset"] {
        let err = EventName::new(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidEventName { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(!err.is_temporary());
        let err = manager().publish_named("1", &1, bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidEventName { .. }),
            "{bad:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn an_oversized_payload_is_refused_with_its_size() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .key_prefix("errors")
        .max_event_bytes(16)
        .build()
        .unwrap();
    let err = m.publish("1", &"x".repeat(100)).await.unwrap_err();
    assert!(
        matches!(err, Error::PayloadTooLarge { size: 102, max: 16 }),
        "{err:?}"
    );
    assert!(!err.is_temporary());
}

/// An event whose serialization fails.
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this event cannot be serialized"))
    }
}

#[tokio::test]
async fn an_event_that_does_not_serialize_is_a_serialize_error() {
    let m = ChannelManager::<Unserializable>::builder(MemoryBroker::new())
        .build()
        .unwrap();
    let err = m.publish("1", &Unserializable).await.unwrap_err();
    assert!(matches!(err, Error::Serialize(_)), "{err:?}");
    assert!(!err.is_temporary());
    // A map with non-string keys is refused by serde_json itself.
    let m = ChannelManager::<BTreeMap<(u8, u8), u8>>::builder(MemoryBroker::new())
        .build()
        .unwrap();
    let err = m
        .publish("1", &BTreeMap::from([((1, 2), 3)]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Serialize(_)), "{err:?}");
}

#[tokio::test]
async fn session_limits_are_temporary() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_sessions(1)
        .build()
        .unwrap();
    let _held = m.subscribe("1", SubscribeOptions::new()).await.unwrap();
    let err = m
        .subscribe("2", SubscribeOptions::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::TooManySessions(_)), "{err:?}");
    assert!(err.is_temporary());

    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_sessions_per_channel(1)
        .build()
        .unwrap();
    let _held = m.subscribe("1", SubscribeOptions::new()).await.unwrap();
    let err = m
        .subscribe("1", SubscribeOptions::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::TooManySessions(_)), "{err:?}");
    let _other = m.subscribe("2", SubscribeOptions::new()).await.unwrap();
}

#[tokio::test]
async fn the_channel_limit_is_too_many_channels() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_channels(1)
        .build()
        .unwrap();
    let _held = m.subscribe("1", SubscribeOptions::new()).await.unwrap();
    let _same = m.subscribe("1", SubscribeOptions::new()).await.unwrap();
    let err = m
        .subscribe("2", SubscribeOptions::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::TooManyChannels { max: 1 }), "{err:?}");
    assert!(err.is_temporary());
}

#[tokio::test]
async fn a_subscribe_after_shutdown_is_refused() {
    let m = manager();
    m.shutdown(Duration::from_secs(1), Duration::ZERO);
    let err = m
        .subscribe("1", SubscribeOptions::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Shutdown), "{err:?}");
    assert!(err.is_temporary());
}

#[tokio::test]
async fn multiplexed_channels_refuse_bad_labels_and_plain_sessions() {
    let m = manager();
    let stream = || MultiplexedSession::new(Arc::new(Sse), None, None);
    for label in ["", "a:b", "reset", "new\nline"] {
        let session = m
            .subscribe("1", SubscribeOptions::new().for_multiplex())
            .await
            .unwrap();
        let err = stream().channel(label, session).err().unwrap();
        assert!(
            matches!(err, Error::InvalidConfig { .. }),
            "{label:?}: {err:?}"
        );
    }
    let plain = m.subscribe("1", SubscribeOptions::new()).await.unwrap();
    let err = stream().channel("comments/1", plain).err().unwrap();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("for_multiplex"), "{err}");
}

/// A broker whose subscriptions fail, after a gate opens, with a permanent error.
#[derive(Debug)]
struct Refusing {
    inner: MemoryBroker,
    gate: Semaphore,
}

#[async_trait]
impl Broker for Refusing {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        self.inner.publish(topic, message).await
    }
    async fn subscribe(&self, _topic: &Topic) -> Result<Subscription> {
        drop(self.gate.acquire().await);
        Err(Error::broker(
            "refusing",
            false,
            "wrongtype: the topic's key holds a string",
            Some("the source".into()),
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

#[tokio::test]
async fn a_failed_broker_subscription_keeps_its_kind_for_every_waiting_session() {
    let broker = Arc::new(Refusing {
        inner: MemoryBroker::new(),
        gate: Semaphore::new(0),
    });
    let m = ChannelManager::<u64>::builder_dyn(broker.clone())
        .build()
        .unwrap();
    // Three sessions wait on the same channel's broker subscription, which then fails once.
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.subscribe("1", SubscribeOptions::new()).await.err() })
        })
        .collect();
    // Every session counts from its join, before it waits for the subscription.
    while m.total_sessions() < 3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(m.channel_count(), 1);
    broker.gate.add_permits(1);
    for task in waiting {
        let err = task.await.unwrap().unwrap();
        match &err {
            Error::Broker {
                backend,
                message,
                temporary,
                ..
            } => {
                assert_eq!(*backend, "refusing");
                assert!(!temporary);
                assert!(message.starts_with("wrongtype"), "{message}");
            }
            other => panic!("expected the broker's error, got {other:?}"),
        }
        assert!(!err.is_temporary());
    }
}
