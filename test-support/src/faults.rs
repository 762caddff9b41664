//! What the Redis and NATS fault tests share: the [`Fault`] done to a [`BrokerServer`], a
//! publishing [`Burst`] running through it, and bounded reads of a subscription.
//!
//! # Example
//!
//! ```no_run
//! # async fn run(server: &mut impl ssehub_test_support::server::BrokerServer,
//! #     broker: std::sync::Arc<dyn ssehub_core::Broker>, topic: ssehub_core::Topic) {
//! use std::time::Duration;
//! use ssehub_test_support::faults::{BurstTask, Fault};
//! use ssehub_test_support::wait_until;
//!
//! let burst = BurstTask::spawn(broker, topic, Duration::from_millis(3));
//! wait_until("50 publishes", async || burst.ok() >= 50).await;
//! Fault::Kill.inject(server);
//! wait_until("publishes failing", async || burst.errors() >= 3).await;
//! Fault::Kill.heal(server).await;
//! let seen = burst.stop().await;
//! assert!(!seen.errors.is_empty());
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::{Broker, Delivery, EventId, Message, Subscription, Topic};

use crate::server::BrokerServer;

/// How a test takes its server away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then start it again on the same port and data.
    Kill,
    /// SIGSTOP (its sockets stay open, nothing answers), later SIGCONT: a half-open connection,
    /// nothing lost on the server.
    Freeze,
}

impl Fault {
    /// Take the server away: kill it, or freeze it.
    pub fn inject(self, server: &mut impl BrokerServer) {
        match self {
            Fault::Kill => server.kill(),
            Fault::Freeze => assert!(server.freeze(), "SIGSTOP the server"),
        }
    }

    /// Bring it back: restart it on the same port and data, or let it run again.
    pub async fn heal(self, server: &mut impl BrokerServer) {
        match self {
            Fault::Kill => server.restart().await.expect("restart the server"),
            Fault::Freeze => assert!(server.thaw(), "SIGCONT the server"),
        }
    }
}

/// What a publishing burst saw: every publish's payload number with its result.
#[derive(Debug, Default)]
pub struct Burst {
    /// Confirmed publishes: payload number and the id the broker gave it.
    pub ok: Vec<(u64, EventId)>,
    /// Payload numbers whose publish failed (it may still have been applied: the reply can be
    /// lost with the connection).
    pub errors: Vec<u64>,
}

/// A task publishing `0, 1, 2, …` to one topic, a pause apart, until stopped. Every error must
/// be temporary (an outage, not a bug).
#[derive(Debug)]
pub struct BurstTask {
    seen: Arc<Mutex<Burst>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BurstTask {
    /// Start publishing to `topic` through `broker`, `pause` between publishes.
    #[must_use]
    pub fn spawn(broker: Arc<dyn Broker>, topic: Topic, pause: Duration) -> Self {
        let seen = Arc::new(Mutex::new(Burst::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let res = broker.publish(&topic, Message::new(n.to_string())).await;
                    {
                        let mut b = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        match res {
                            Ok(id) => b.ok.push((n, id)),
                            Err(e) => {
                                assert!(
                                    e.is_temporary(),
                                    "an outage error must be temporary: {e} ({e:?})"
                                );
                                b.errors.push(n);
                            }
                        }
                    }
                    n += 1;
                    tokio::time::sleep(pause).await;
                }
            }
        });
        BurstTask { seen, stop, task }
    }

    fn with<T>(&self, f: impl FnOnce(&Burst) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Confirmed publishes so far.
    #[must_use]
    pub fn ok(&self) -> usize {
        self.with(|b| b.ok.len())
    }

    /// Failed publishes so far.
    #[must_use]
    pub fn errors(&self) -> usize {
        self.with(|b| b.errors.len())
    }

    /// Stop publishing, wait for the task, and return everything it saw.
    pub async fn stop(self) -> Burst {
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("publisher task");
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The next delivery of `sub`; panics when it ended or nothing came within `limit`.
pub async fn next_delivery(sub: &mut Subscription, limit: Duration) -> Delivery {
    match tokio::time::timeout(limit, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("nothing delivered within {limit:?}"),
    }
}

/// The payload of a burst event: its number.
#[must_use]
pub fn payload_number(data: &[u8]) -> u64 {
    std::str::from_utf8(data)
        .expect("utf-8")
        .parse()
        .expect("number")
}

/// A publish whose reply is lost (the broker carried it out; [`TcpProxy::drop_replies`] threw
/// the answer away), retried with its idempotency key until it answers: the broker stores the
/// event once. `publisher` reaches the broker through `proxy`; `observer` directly. Checks that
/// the observer receives exactly `before`, the retried event, `after`, in order, and that the
/// retry answers the id the event was stored under; returns that id.
///
/// [`TcpProxy::drop_replies`]: crate::proxy::TcpProxy::drop_replies
pub async fn retry_after_a_lost_reply(
    publisher: &dyn Broker,
    observer: &dyn Broker,
    proxy: &crate::proxy::TcpProxy,
    limit: Duration,
) -> EventId {
    let topic = ssehub_core::conformance::unique_topic("lost-reply");
    let mut sub = observer.subscribe(&topic).await.expect("subscribe");
    let before = observer
        .publish(&topic, Message::new("before"))
        .await
        .expect("publish before");
    // The caller's own key (a generated one only guards one call against resends).
    let key = ssehub_core::IdempotencyKey::new(format!("retry-{topic}")).expect("key");
    let once = || Message::new("once").with_idempotency_key(key.clone());

    proxy.drop_replies(true);
    let lost = tokio::time::timeout(limit, publisher.publish(&topic, once())).await;
    match lost {
        Ok(Ok(id)) => panic!("the publish answered {id} although its reply was thrown away"),
        Ok(Err(e)) => assert!(e.is_temporary(), "a lost reply is a temporary error: {e}"),
        Err(_) => panic!("the publish did not fail within {limit:?}"),
    }
    // The event was stored: the observer sees it.
    let stored = match next_delivery(&mut sub, limit).await {
        Delivery::Event(env) => {
            assert_eq!(env.id, before, "the first delivery is the event before");
            match next_delivery(&mut sub, limit).await {
                Delivery::Event(env) => env,
                Delivery::Gap => panic!("a gap instead of the event whose reply was lost"),
            }
        }
        Delivery::Gap => panic!("a gap instead of the event before"),
    };
    assert_eq!(&stored.data[..], b"once");
    proxy.drop_replies(false);
    proxy.drop_all();

    let deadline = tokio::time::Instant::now() + limit;
    let retried = loop {
        match publisher.publish(&topic, once()).await {
            Ok(id) => break id,
            Err(e) if e.is_temporary() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the retry failed: {e}"),
        }
    };
    assert_eq!(
        retried, stored.id,
        "the retry answers the stored event's id"
    );
    let after = observer
        .publish(&topic, Message::new("after"))
        .await
        .expect("publish after");
    match next_delivery(&mut sub, limit).await {
        Delivery::Event(env) => assert_eq!(
            env.id, after,
            "the retry stored nothing new: the next event is the one after"
        ),
        Delivery::Gap => panic!("a gap after the retry"),
    }
    retried
}
