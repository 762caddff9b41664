//! What a client or a busy channel can make one node hold is bounded: replays are read page by
//! page under a budget and a per-node cap, live events that overflow a resuming session turn
//! into a `reset` it recovers from, channels per node are limited, and sessions can be revoked
//! or given a maximum lifetime.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use ssehub_core::{
    Broker, Capabilities, ChannelManager, CloseReason, Error, EventId, Message, QueueLimits,
    Replay, ReplayLimits, Result, Session, SubscribeOptions, Subscription, Topic,
};
use ssehub_memory::MemoryBroker;
use tokio::sync::Semaphore;

/// A memory broker that records how replays are asked, and can hold them at a gate.
#[derive(Debug)]
struct Watched {
    inner: MemoryBroker,
    limits: std::sync::Mutex<Vec<usize>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    gate: Arc<Semaphore>,
}

impl Watched {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(Watched {
            inner: MemoryBroker::new(),
            limits: std::sync::Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            gate: Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            })),
        })
    }
}

#[async_trait]
impl Broker for Watched {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        self.inner.publish(topic, message).await
    }
    async fn subscribe(&self, topic: &Topic) -> Result<Subscription> {
        self.inner.subscribe(topic).await
    }
    async fn replay(&self, topic: &Topic, after: &EventId, limit: usize) -> Result<Replay> {
        self.limits.lock().unwrap().push(limit);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let permit = self.gate.acquire().await;
        drop(permit);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.inner.replay(topic, after, limit).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
        self.inner.id_order(a, b)
    }
    fn active_subscriptions(&self) -> usize {
        self.inner.active_subscriptions()
    }
}

/// The SSE frames of a session until `stop` says enough (or the stream ends).
async fn frames(session: &mut Session, mut stop: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let mut text = String::new();
    let mut out = Vec::new();
    while !stop(&out) {
        let next = tokio::time::timeout(Duration::from_secs(10), session.next()).await;
        let Some(chunk) = next.expect("a frame in time") else {
            break;
        };
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            out.push(text[..end].to_owned());
            text.drain(..end + 2);
        }
    }
    out
}

fn id_of(frame: &str) -> Option<&str> {
    frame.lines().find_map(|l| l.strip_prefix("id: "))
}

async fn publish_n(m: &ChannelManager<u64>, id: &str, n: u64) -> Vec<EventId> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(m.publish(id, &i).await.unwrap());
    }
    ids
}

fn resume(from: &EventId) -> SubscribeOptions<u64> {
    SubscribeOptions::new().last_event_id(Some(from.as_str()))
}

#[tokio::test]
async fn a_resume_reads_its_replay_page_by_page() {
    let broker = Watched::new(true);
    let m = ChannelManager::<u64>::builder_dyn(broker.clone())
        .replay_limits(ReplayLimits::new(10, 10_000, usize::MAX))
        .build()
        .unwrap();
    let ids = publish_n(&m, "r", 95).await;
    let mut s = m.subscribe("r", resume(&ids[0])).await.unwrap();
    let got = frames(&mut s, |f| f.len() == 94).await;
    let got: Vec<_> = got.iter().map(|f| id_of(f).unwrap().to_owned()).collect();
    let want: Vec<_> = ids[1..].iter().map(|i| i.as_str().to_owned()).collect();
    assert_eq!(got, want);
    let limits = broker.limits.lock().unwrap().clone();
    assert!(limits.iter().all(|l| *l == 10), "pages asked: {limits:?}");
    assert_eq!(limits.len(), 10, "94 events in pages of 10: {limits:?}");
    // Then live, without a gap or a duplicate.
    let live = m.publish("r", &1000).await.unwrap();
    let next = frames(&mut s, |f| !f.is_empty()).await;
    assert_eq!(id_of(&next[0]), Some(live.as_str()));
}

#[tokio::test]
async fn a_replay_past_its_budget_gets_a_reset_then_live_events() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .replay_limits(ReplayLimits::new(8, 20, usize::MAX))
        .build()
        .unwrap();
    let ids = publish_n(&m, "b", 60).await;
    let mut s = m.subscribe("b", resume(&ids[0])).await.unwrap();
    let got = frames(&mut s, |f| f.iter().any(|x| x.contains("event: reset"))).await;
    assert_eq!(got.len(), 21, "{got:?}");
    assert_eq!(id_of(&got[19]), Some(ids[20].as_str()));
    assert!(
        got[20].contains(r#"data: {"reason":"overflow"}"#),
        "{}",
        got[20]
    );
    let live = m.publish("b", &1).await.unwrap();
    let next = frames(&mut s, |f| !f.is_empty()).await;
    assert_eq!(id_of(&next[0]), Some(live.as_str()));
}

/// A session that resumes while its replay is slow and its channel busy: the live events that
/// arrive meanwhile overflow its queue. `budget` bounds the replay.
async fn busy_resume(budget: usize) -> (ChannelManager<u64>, Session, Vec<EventId>, Vec<EventId>) {
    let broker = Watched::new(false);
    let m = ChannelManager::<u64>::builder_dyn(broker.clone())
        .queue_limits(QueueLimits::new(5, usize::MAX))
        .replay_limits(ReplayLimits::new(64, budget, usize::MAX))
        .build()
        .unwrap();
    let before = publish_n(&m, "busy", 3).await;
    let resuming = {
        let m = m.clone();
        let from = before[0].clone();
        tokio::spawn(async move { m.subscribe("busy", resume(&from)).await })
    };
    // The session has joined and waits for its replay: live events pile up meanwhile.
    while broker.in_flight.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let live = publish_n(&m, "busy", 20).await;
    broker.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let s = resuming.await.unwrap().unwrap();
    (m, s, before, live)
}

#[tokio::test]
async fn a_resuming_session_whose_live_events_overflow_catches_up_from_history() {
    let (m, mut s, before, live) = busy_resume(10_000).await;
    let last = live.last().unwrap().as_str().to_owned();
    let got = frames(&mut s, |f| f.last().and_then(|x| id_of(x)) == Some(&last)).await;
    let got: Vec<_> = got.iter().map(|f| id_of(f).unwrap().to_owned()).collect();
    let want: Vec<_> = before[1..]
        .iter()
        .chain(&live)
        .map(|i| i.as_str().to_owned())
        .collect();
    // Every event once, in order, no reset: the replay read the dropped live events back.
    assert_eq!(got, want);
    let next_id = m.publish("busy", &99).await.unwrap();
    let next = frames(&mut s, |f| !f.is_empty()).await;
    assert_eq!(id_of(&next[0]), Some(next_id.as_str()));
    assert_eq!(s.close_reason(), None);
}

#[tokio::test]
async fn live_events_a_replay_cannot_reach_become_one_reset_at_the_newest() {
    let (m, mut s, before, live) = busy_resume(5).await;
    let got = frames(&mut s, |f| f.iter().any(|x| x.contains("event: reset"))).await;
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(id_of(&got[0]), Some(before[1].as_str()));
    // One reset, at the newest live event, so a reconnect does not ask for them again…
    assert!(got[5].contains(r#""reason":"overflow""#), "{}", got[5]);
    assert_eq!(id_of(&got[5]), live.last().map(EventId::as_str));
    // …and the session is live after it.
    let next_id = m.publish("busy", &99).await.unwrap();
    let next = frames(&mut s, |f| !f.is_empty()).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(id_of(&next[0]), Some(next_id.as_str()));
    assert_eq!(s.close_reason(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_beyond_the_cap_wait_their_turn() {
    let broker = Watched::new(true);
    let m = ChannelManager::<u64>::builder_dyn(broker.clone())
        .max_concurrent_replays(1)
        .replay_limits(ReplayLimits::new(4, 10_000, usize::MAX))
        .build()
        .unwrap();
    let ids = publish_n(&m, "cap", 20).await;
    let mut readers = Vec::new();
    for _ in 0..6 {
        let m = m.clone();
        let from = ids[0].clone();
        readers.push(tokio::spawn(async move {
            let mut s = m.subscribe("cap", resume(&from)).await.unwrap();
            frames(&mut s, |f| f.len() == 19).await.len()
        }));
    }
    for r in readers {
        assert_eq!(r.await.unwrap(), 19);
    }
    assert_eq!(broker.most_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn channels_past_the_limit_are_refused() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_channels(2)
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    let a = m.subscribe("a", SubscribeOptions::new()).await.unwrap();
    let _b = m.subscribe("b", SubscribeOptions::new()).await.unwrap();
    let _b2 = m.subscribe("b", SubscribeOptions::new()).await.unwrap();
    let err = m.subscribe("c", SubscribeOptions::new()).await.unwrap_err();
    assert!(matches!(err, Error::TooManyChannels { max: 2 }), "{err}");
    assert!(err.is_temporary());
    drop(a);
    assert!(m.cleanup_if_empty("a"));
    m.subscribe("c", SubscribeOptions::new()).await.unwrap();
}

#[tokio::test]
async fn close_channel_and_close_where_end_the_selected_sessions_at_once() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .build()
        .unwrap();
    let mut one = m.subscribe("u1", SubscribeOptions::new()).await.unwrap();
    let mut two = m.subscribe("u1", SubscribeOptions::new()).await.unwrap();
    let mut other = m.subscribe("u2", SubscribeOptions::new()).await.unwrap();
    m.publish("u1", &1).await.unwrap();
    assert_eq!(m.close_channel("u1").unwrap(), 2);
    // What was queued is dropped: a revoked user gets nothing more.
    assert_eq!(one.next().await, None);
    assert_eq!(two.next().await, None);
    assert_eq!(one.close_reason(), Some(CloseReason::Revoked));
    m.publish("u2", &2).await.unwrap();
    assert!(other.next().await.is_some());
    assert_eq!(m.close_where(|t| t.as_str() == "u2"), 1);
    assert_eq!(other.next().await, None);
    assert_eq!(m.close_channel("nobody").unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_with_a_retry_hint_at_its_maximum_lifetime() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_session_lifetime(Duration::from_secs(60))
        .build()
        .unwrap();
    let options = SubscribeOptions::new().retry(Some(Duration::from_millis(1500)));
    let mut s = m.subscribe("life", options).await.unwrap();
    assert_eq!(s.next().await, Some(Bytes::from("retry: 1500\n\n")));
    let id = m.publish("life", &7).await.unwrap();
    assert!(
        String::from_utf8(s.next().await.unwrap().to_vec())
            .unwrap()
            .contains(id.as_str())
    );
    // Nothing else happens for a minute; then the stream hints and ends.
    assert_eq!(s.next().await, Some(Bytes::from("retry: 1500\n\n")));
    assert_eq!(s.next().await, None);
    assert_eq!(s.close_reason(), Some(CloseReason::Lifetime));
}

#[tokio::test(start_paused = true)]
async fn huge_durations_given_to_core_never_overflow() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_session_lifetime(Duration::MAX)
        .build()
        .unwrap();
    let options = SubscribeOptions::new().keep_alive(Some(Duration::MAX));
    let mut s = m.subscribe("huge", options).await.unwrap();
    let id = m.publish("huge", &1).await.unwrap();
    let got = frames(&mut s, |f| !f.is_empty()).await;
    assert_eq!(id_of(&got[0]), Some(id.as_str()));
    m.shutdown(Duration::MAX, Duration::MAX);
    let rest = frames(&mut s, |_| false).await;
    assert!(rest.iter().any(|f| f.starts_with("retry: ")), "{rest:?}");
}
