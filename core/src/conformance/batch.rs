//! Cases about batches and positions: `publish_many` and `tail`.

use std::collections::HashSet;

use bytes::Bytes;

use super::{next_event, publish_n, unique_topic};
use crate::broker::{Broker, Message, Replay};
use crate::error::Error;
use crate::id::{EventId, EventName};

/// A batch of 300 events (more than one backend batch), each with its own name, is delivered
/// and replayed in order under the ids `publish_many` answered, after a single event published
/// before it; a batch holding one payload over the maximum is refused whole, before anything is
/// sent.
pub async fn publish_many_keeps_order(broker: &dyn Broker) {
    let topic = unique_topic("batch");
    let mut sub = broker.subscribe(&topic).await.expect("subscribe");
    let first = broker
        .publish(&topic, Message::new("first"))
        .await
        .expect("publish");
    let batch: Vec<Message> = (0..300)
        .map(|i| {
            let name = EventName::new(format!("e{}", i % 3)).expect("name");
            Message::new(i.to_string()).with_event(name)
        })
        .collect();
    let ids = broker
        .publish_many(&topic, batch)
        .await
        .expect("publish_many");
    assert_eq!(ids.len(), 300);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids must be distinct");
    assert_eq!(next_event(&mut sub).await.id, first);
    for (i, id) in ids.iter().enumerate() {
        let env = next_event(&mut sub).await;
        assert_eq!(&env.id, id, "event {i} out of order");
        assert_eq!(env.data, Bytes::from(i.to_string()));
        assert_eq!(env.event.as_str(), format!("e{}", i % 3));
    }
    assert_eq!(
        broker.id_order(&first, &ids[0]),
        Some(std::cmp::Ordering::Less)
    );
    if broker.capabilities().history.is_some_and(|h| h >= 301) {
        let mut replayed = Vec::new();
        let mut after = first.clone();
        while replayed.len() < 300 {
            match broker.replay(&topic, &after, 128).await.expect("replay") {
                Replay::Events(events) if !events.is_empty() => {
                    after = events.last().expect("non-empty").id.clone();
                    replayed.extend(events.into_iter().map(|e| e.id));
                }
                other => panic!("replay after the batch's start: {other:?}"),
            }
        }
        assert_eq!(replayed, ids, "the replay is the batch, in order");
    }
    let max = broker.capabilities().max_payload;
    let err = broker
        .publish_many(
            &topic,
            vec![Message::new("a"), Message::new(vec![b'x'; max + 1])],
        )
        .await
        .expect_err("a batch with a payload over the maximum is refused");
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "got {err}");
    let last = broker
        .publish(&topic, Message::new("last"))
        .await
        .expect("publish");
    let env = next_event(&mut sub).await;
    assert_eq!(env.id, last, "nothing of the refused batch was sent");
}

/// `tail` answers `None` for a topic with no event, then the newest id; a replay after it
/// answers nothing, then exactly what was published after it. A broker without history answers
/// `None` always.
pub async fn tail_is_the_newest_event(broker: &dyn Broker) {
    let topic = unique_topic("tail");
    assert_eq!(broker.tail(&topic).await.expect("tail"), None);
    let ids = publish_n(broker, &topic, 3).await;
    let tail = broker.tail(&topic).await.expect("tail");
    if broker.capabilities().history.is_none() {
        assert_eq!(tail, None, "no history, no tail");
        return;
    }
    let tail = tail.expect("a tail after three events");
    assert_eq!(tail, ids[2]);
    assert_eq!(
        broker.replay(&topic, &tail, 10).await.expect("replay"),
        Replay::Events(Vec::new())
    );
    let next = broker
        .publish(&topic, Message::new("next"))
        .await
        .expect("publish");
    match broker.replay(&topic, &tail, 10).await.expect("replay") {
        Replay::Events(events) => {
            let got: Vec<&EventId> = events.iter().map(|e| &e.id).collect();
            assert_eq!(got, [&next]);
        }
        Replay::Gap(_) => panic!("a replay after the tail is no gap"),
    }
    assert_eq!(broker.tail(&topic).await.expect("tail"), Some(next));
}
