//! The typed channel manager and local hub, over the memory backend.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use ssehub_core::sse_parser::{ParsedEvent, SseParser};
use ssehub_core::{
    ChannelManager, CloseReason, Error, Ndjson, OverflowPolicy, QueueLimits, Session,
    SubscribeOptions,
};
use ssehub_memory::MemoryBroker;
use ssehub_test_support::wait_until;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum DiscussionEvent {
    #[serde(rename_all = "camelCase")]
    CommentAdded {
        comment_count: u64,
    },
    DiscussionClosed,
}

fn manager<E: Serialize + Send + Sync + 'static>() -> ChannelManager<E> {
    ChannelManager::builder(MemoryBroker::new())
        .key_prefix("discussion")
        .key_suffix("comments")
        .linger(Duration::ZERO)
        .build()
        .expect("manager")
}

/// Read until `n` events have been parsed.
async fn read_events(session: &mut Session, parser: &mut SseParser, n: usize) -> Vec<ParsedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(WAIT, session.next())
            .await
            .expect("no frame in time")
            .expect("stream ended early");
        parser.feed(&chunk);
        out.extend(parser.take_events());
    }
    out
}

#[tokio::test]
async fn seed_quick_start_publish_reaches_sessions() {
    let comments = manager::<serde_json::Value>();
    let mut a = comments
        .subscribe("123", SubscribeOptions::new())
        .await
        .unwrap();
    let mut b = comments
        .channel("123")
        .unwrap()
        .subscribe(SubscribeOptions::new())
        .await
        .unwrap();
    assert_eq!(comments.session_count("123"), 2);
    let id = comments
        .publish(
            "123",
            &serde_json::json!({"type": "comment-added", "commentCount": 1}),
        )
        .await
        .unwrap();
    for s in [&mut a, &mut b] {
        let ev = read_events(s, &mut SseParser::new(), 1).await;
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[0].id.as_deref(), Some(id.as_str()));
        assert_eq!(ev[0].data, r#"{"commentCount":1,"type":"comment-added"}"#);
    }
}

#[tokio::test]
async fn event_names_come_from_the_event_when_asked() {
    let m = ChannelManager::<DiscussionEvent>::builder(MemoryBroker::new())
        .event_name(|e| match e {
            DiscussionEvent::CommentAdded { .. } => "comment-added",
            DiscussionEvent::DiscussionClosed => "discussion-closed",
        })
        .build()
        .unwrap();
    let mut s = m.subscribe("d1", SubscribeOptions::new()).await.unwrap();
    m.publish("d1", &DiscussionEvent::CommentAdded { comment_count: 2 })
        .await
        .unwrap();
    m.publish("d1", &DiscussionEvent::DiscussionClosed)
        .await
        .unwrap();
    let ev = read_events(&mut s, &mut SseParser::new(), 2).await;
    assert_eq!(ev[0].event, "comment-added");
    assert_eq!(ev[0].data, r#"{"type":"comment-added","commentCount":2}"#);
    assert_eq!(ev[1].event, "discussion-closed");

    let bad = ChannelManager::<u8>::builder(MemoryBroker::new())
        .event_name(|_| "reset")
        .build()
        .unwrap();
    assert!(matches!(
        bad.publish("x", &1).await,
        Err(Error::InvalidEventName { .. })
    ));
}

#[tokio::test]
async fn initial_event_and_retry_come_first_without_an_id() {
    let m = manager::<u64>();
    let mut s = m
        .subscribe(
            "1",
            SubscribeOptions::new()
                .retry(Some(Duration::from_millis(2500)))
                .initial_event(Some(7)),
        )
        .await
        .unwrap();
    let mut p = SseParser::new();
    let ev = read_events(&mut s, &mut p, 1).await;
    assert_eq!(ev[0].data, "7");
    assert_eq!(ev[0].id, None);
    assert_eq!(p.retry(), Some(2500));
}

#[tokio::test]
async fn resume_replays_exactly_what_was_missed() {
    let m = manager::<u64>();
    let first = m.publish("r", &0).await.unwrap();
    for n in 1..5 {
        m.publish("r", &n).await.unwrap();
    }
    let mut s = m
        .subscribe(
            "r",
            SubscribeOptions::new().last_event_id(Some(first.as_str())),
        )
        .await
        .unwrap();
    m.publish("r", &5).await.unwrap();
    let ev = read_events(&mut s, &mut SseParser::new(), 5).await;
    let data: Vec<_> = ev.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["1", "2", "3", "4", "5"]);
}

/// A memory broker whose replay fails with a temporary error while `down` is set.
#[derive(Debug)]
struct FlakyReplay {
    inner: MemoryBroker,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ssehub_core::Broker for FlakyReplay {
    async fn publish(
        &self,
        topic: &ssehub_core::Topic,
        message: ssehub_core::Message,
    ) -> ssehub_core::Result<ssehub_core::EventId> {
        self.inner.publish(topic, message).await
    }
    async fn subscribe(
        &self,
        topic: &ssehub_core::Topic,
    ) -> ssehub_core::Result<ssehub_core::Subscription> {
        self.inner.subscribe(topic).await
    }
    async fn replay(
        &self,
        topic: &ssehub_core::Topic,
        after: &ssehub_core::EventId,
        limit: usize,
    ) -> ssehub_core::Result<ssehub_core::Replay> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::broker("flaky", true, "replay timed out", None));
        }
        self.inner.replay(topic, after, limit).await
    }
    fn capabilities(&self) -> ssehub_core::Capabilities {
        self.inner.capabilities()
    }
    fn id_order(
        &self,
        a: &ssehub_core::EventId,
        b: &ssehub_core::EventId,
    ) -> Option<std::cmp::Ordering> {
        self.inner.id_order(a, b)
    }
    fn active_subscriptions(&self) -> usize {
        self.inner.active_subscriptions()
    }
}

/// A replay the broker cannot answer now refuses the session with a temporary error (the client
/// retries with the same id), instead of a `reset` that would make it refetch for nothing.
#[tokio::test]
async fn a_failed_replay_is_a_temporary_refusal_not_a_reset() {
    let broker = Arc::new(FlakyReplay {
        inner: MemoryBroker::new(),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let m = ChannelManager::<u64>::builder_dyn(broker.clone())
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    let first = m.publish("f", &0).await.unwrap();
    m.publish("f", &1).await.unwrap();
    let options = || SubscribeOptions::new().last_event_id(Some(first.as_str()));
    let err = m.subscribe("f", options()).await.expect_err("refused");
    assert!(err.is_temporary(), "{err}");
    assert_eq!(m.total_sessions(), 0, "the refused session left nothing");
    // The client comes back with the same id once the broker answers: nothing lost.
    broker
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut s = m.subscribe("f", options()).await.unwrap();
    m.publish("f", &2).await.unwrap();
    let ev = read_events(&mut s, &mut SseParser::new(), 2).await;
    let data: Vec<_> = ev
        .iter()
        .map(|e| (e.event.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(data, [("message", "1"), ("message", "2")]);
}

#[tokio::test]
async fn bad_or_unknown_ids_start_with_reset() {
    let m = manager::<u64>();
    let foreign = {
        let other = manager::<u64>();
        other.publish("x", &1).await.unwrap()
    };
    for last in [
        "not a valid id\n",
        foreign.as_str(),
        "zzz-1",
        &"9".repeat(300),
    ] {
        let mut s = m
            .subscribe("x", SubscribeOptions::new().last_event_id(Some(last)))
            .await
            .unwrap();
        m.publish("x", &1).await.unwrap();
        let ev = read_events(&mut s, &mut SseParser::new(), 2).await;
        assert_eq!(ev[0].event, "reset", "for {last:?}");
        assert_eq!(ev[1].data, "1");
    }
    let no_history = ChannelManager::<u64>::builder(MemoryBroker::builder().history(0).build())
        .build()
        .unwrap();
    let id = no_history.publish("y", &1).await.unwrap();
    let mut s = no_history
        .subscribe(
            "y",
            SubscribeOptions::new().last_event_id(Some(id.as_str())),
        )
        .await
        .unwrap();
    let ev = read_events(&mut s, &mut SseParser::new(), 1).await;
    assert_eq!(ev[0].event, "reset");
    assert_eq!(ev[0].data, r#"{"reason":"no-history"}"#);
}

#[tokio::test]
async fn invalid_resource_ids_are_refused() {
    let m = manager::<u64>();
    for bad in ["", "a:b", "*", "a b", "x\n", &"a".repeat(129), "a>", "a/b"] {
        assert!(
            matches!(
                m.publish(bad, &1).await,
                Err(Error::InvalidResourceId { .. })
            ),
            "{bad:?}"
        );
        assert!(m.subscribe(bad, SubscribeOptions::new()).await.is_err());
        assert_eq!(m.session_count(bad), 0);
    }
    assert!(
        ChannelManager::<u64>::builder(MemoryBroker::new())
            .key_prefix("a*")
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn publishing_to_an_unwatched_channel_creates_nothing() {
    let m = manager::<u64>();
    for i in 0..100 {
        m.publish(&format!("nobody-{i}"), &1).await.unwrap();
    }
    assert_eq!(m.channel_count(), 0);
    assert_eq!(m.broker().active_subscriptions(), 0);
}

#[tokio::test]
async fn last_session_leaving_removes_the_channel_and_subscription() {
    let m = manager::<u64>();
    let s = m.subscribe("c", SubscribeOptions::new()).await.unwrap();
    assert_eq!(m.channel_count(), 1);
    assert_eq!(m.broker().active_subscriptions(), 1);
    drop(s);
    wait_until("channel and subscription released", async || {
        m.channel_count() == 0 && m.broker().active_subscriptions() == 0
    })
    .await;
    assert!(m.cleanup_if_empty("c"));
}

#[tokio::test(start_paused = true)]
async fn linger_keeps_the_channel_warm_then_releases_it() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .linger(Duration::from_secs(5))
        .build()
        .unwrap();
    drop(m.subscribe("c", SubscribeOptions::new()).await.unwrap());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(m.channel_count(), 1, "channel kept during the linger");
    // A session arriving during the linger keeps it.
    let s = m.subscribe("c", SubscribeOptions::new()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(m.channel_count(), 1);
    drop(s);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(m.channel_count(), 0);
    // cleanup_if_empty removes at once.
    drop(m.subscribe("d", SubscribeOptions::new()).await.unwrap());
    assert!(m.cleanup_if_empty("d"));
    assert_eq!(m.channel_count(), 0);
}

#[tokio::test]
async fn a_slow_reader_is_cut_off_while_others_keep_receiving() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .queue_limits(QueueLimits::new(16, 1 << 20))
        .build()
        .unwrap();
    let slow = m.subscribe("s", SubscribeOptions::new()).await.unwrap();
    let mut fast = m.subscribe("s", SubscribeOptions::new()).await.unwrap();
    let mut parser = SseParser::new();
    for n in 0..100u64 {
        m.publish("s", &n).await.unwrap();
        if n % 8 == 7 {
            read_events(&mut fast, &mut parser, 8).await;
        }
    }
    assert_eq!(slow.close_reason(), Some(CloseReason::Overflow));
    // The backlog it had is still delivered (events 0..16, contiguous), then the stream ends,
    // so the client resumes right after the last event it got.
    let mut slow = slow;
    let mut slow_parser = SseParser::new();
    let got = read_events(&mut slow, &mut slow_parser, 16).await;
    let got: Vec<u64> = got.iter().map(|e| e.data.parse().unwrap()).collect();
    assert_eq!(got, (0..16).collect::<Vec<u64>>());
    assert!(
        slow.next().await.is_none(),
        "an overflowed stream ends after its backlog"
    );
    assert!(fast.close_reason().is_none());
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_frames() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .queue_limits(QueueLimits::new(4, 1 << 20))
        .overflow_policy(OverflowPolicy::DropOldest)
        .build()
        .unwrap();
    let mut s = m.subscribe("s", SubscribeOptions::new()).await.unwrap();
    for n in 0..10u64 {
        m.publish("s", &n).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ev = read_events(&mut s, &mut SseParser::new(), 4).await;
    let data: Vec<_> = ev.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["6", "7", "8", "9"]);
}

#[tokio::test]
async fn session_limits_are_enforced() {
    let m = ChannelManager::<u64>::builder(MemoryBroker::new())
        .max_sessions(3)
        .max_sessions_per_channel(2)
        .build()
        .unwrap();
    let _a = m.subscribe("a", SubscribeOptions::new()).await.unwrap();
    let _b = m.subscribe("a", SubscribeOptions::new()).await.unwrap();
    let err = m.subscribe("a", SubscribeOptions::new()).await.unwrap_err();
    assert!(matches!(err, Error::TooManySessions(_)) && err.is_temporary());
    let _c = m.subscribe("b", SubscribeOptions::new()).await.unwrap();
    assert!(matches!(
        m.subscribe("c", SubscribeOptions::new()).await,
        Err(Error::TooManySessions(_))
    ));
    assert_eq!(m.total_sessions(), 3);
}

#[tokio::test]
async fn oversized_events_are_refused() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .max_event_bytes(1000)
        .build()
        .unwrap();
    assert!(m.publish("a", &"x".repeat(990)).await.is_ok());
    assert!(matches!(
        m.publish("a", &"x".repeat(1000)).await,
        Err(Error::PayloadTooLarge { max: 1000, .. })
    ));
}

#[tokio::test]
async fn shutdown_drains_then_ends_every_stream_with_a_spread_retry() {
    let m = manager::<u64>();
    let mut sessions = Vec::new();
    for i in 0..20 {
        sessions.push(
            m.subscribe(&format!("c{}", i % 3), SubscribeOptions::new())
                .await
                .unwrap(),
        );
    }
    m.publish("c0", &1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    m.shutdown(Duration::from_secs(1), Duration::from_secs(10));
    let mut retries = std::collections::HashSet::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        let mut p = SseParser::new();
        while let Some(chunk) = tokio::time::timeout(WAIT, s.next()).await.expect("ended") {
            p.feed(&chunk);
        }
        let events = p.take_events();
        if i % 3 == 0 {
            assert_eq!(events.len(), 1, "queued event drained before the end");
        }
        let retry = p.retry().expect("final retry hint");
        assert!((1000..=11000).contains(&retry));
        retries.insert(retry);
        assert_eq!(s.close_reason(), Some(CloseReason::Shutdown));
    }
    assert!(retries.len() > 1, "retry hints are spread");
    assert!(matches!(
        m.subscribe("c0", SubscribeOptions::new()).await,
        Err(Error::Shutdown)
    ));
}

#[tokio::test(start_paused = true)]
async fn keep_alive_comments_flow_when_idle() {
    let m = manager::<u64>();
    let mut s = m
        .subscribe(
            "k",
            SubscribeOptions::new().keep_alive(Some(Duration::from_secs(15))),
        )
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let chunk = s.next().await.unwrap();
    assert_eq!(&chunk[..], b":\n\n");
    assert!(start.elapsed() >= Duration::from_secs(15));
    m.publish("k", &1).await.unwrap();
    let chunk = s.next().await.unwrap();
    assert!(chunk.starts_with(b"id: "));
}

#[tokio::test]
async fn ndjson_and_sse_sessions_share_a_channel() {
    let m = manager::<u64>();
    let mut sse = m.subscribe("n", SubscribeOptions::new()).await.unwrap();
    let mut nd = m
        .subscribe("n", SubscribeOptions::new().transport(Arc::new(Ndjson)))
        .await
        .unwrap();
    let id = m.publish("n", &42).await.unwrap();
    let line = tokio::time::timeout(WAIT, nd.next())
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["data"], 42);
    let ev = read_events(&mut sse, &mut SseParser::new(), 1).await;
    assert_eq!(ev[0].data, "42");
}

#[tokio::test]
async fn queued_frames_are_coalesced_into_one_chunk() {
    let m = manager::<u64>();
    let mut s = m.subscribe("q", SubscribeOptions::new()).await.unwrap();
    for n in 0..50 {
        m.publish("q", &n).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let chunk = tokio::time::timeout(WAIT, s.next()).await.unwrap().unwrap();
    let mut p = SseParser::new();
    p.feed(&chunk);
    assert_eq!(
        p.take_events().len(),
        50,
        "one poll yields everything queued"
    );
}

#[tokio::test]
async fn connect_close_cycles_leave_nothing_behind() {
    let m = manager::<u64>();
    for i in 0..2_000u32 {
        let s = m
            .subscribe(&format!("leak-{}", i % 50), SubscribeOptions::new())
            .await
            .unwrap();
        drop(s);
    }
    wait_until("channel and subscription released", async || {
        m.channel_count() == 0 && m.broker().active_subscriptions() == 0
    })
    .await;
    assert_eq!(m.total_sessions(), 0);
}

/// `publish_many`: the events arrive in order under the ids it answered; a batch holding one
/// event over the size limit is refused before anything is published.
#[tokio::test]
async fn publish_many_keeps_order_and_refuses_a_batch_with_one_oversized_event() {
    let m = ChannelManager::<String>::builder(MemoryBroker::new())
        .max_event_bytes(64)
        .build()
        .unwrap();
    let mut session = m.subscribe("1", SubscribeOptions::new()).await.unwrap();
    let mut parser = SseParser::new();
    let events: Vec<String> = (0..5).map(|i| format!("e{i}")).collect();
    let ids = m.publish_many("1", &events).await.unwrap();
    let got = read_events(&mut session, &mut parser, 5).await;
    let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["\"e0\"", "\"e1\"", "\"e2\"", "\"e3\"", "\"e4\""]);
    let got_ids: Vec<&str> = got.iter().map(|e| e.id.as_deref().unwrap()).collect();
    let want: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
    assert_eq!(got_ids, want);

    let batch = ["small".to_owned(), "x".repeat(100)];
    let err = m.publish_many("1", &batch).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    let last = m.publish("1", &"last".to_owned()).await.unwrap();
    let got = read_events(&mut session, &mut parser, 1).await;
    assert_eq!(
        got[0].id.as_deref(),
        Some(last.as_str()),
        "nothing of the batch"
    );
}
