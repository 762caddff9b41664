//! [`Fanout`]: one topic's deliveries handed to every subscription made on this node, each with
//! its own bounded queue; a subscription that falls behind gets a [`Delivery::Gap`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use slab::Slab;

use super::lock;
use crate::broker::{Delivery, Subscription};

/// Counts the live subscriptions of a broker (what [`Broker::active_subscriptions`] answers).
///
/// [`Broker::active_subscriptions`]: crate::Broker::active_subscriptions
#[derive(Clone, Debug, Default)]
pub struct SubscriptionCount(Arc<AtomicUsize>);

impl SubscriptionCount {
    /// A counter at zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The live subscriptions.
    #[must_use]
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Count one more subscription until the guard drops.
    #[must_use]
    pub fn track(&self) -> CountGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        CountGuard(self.0.clone())
    }
}

/// One counted subscription; dropping it uncounts it.
#[derive(Debug)]
pub struct CountGuard(Arc<AtomicUsize>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The local subscriptions of one topic.
///
/// A backend keeps one `Fanout` per topic it receives from its broker (one broker subscription
/// per topic per node) and [`send`](Fanout::send)s every delivery into it. Each
/// [`subscribe`](Fanout::subscribe) gets a queue of at most `bound` deliveries, allocated only as
/// events arrive; a subscription further behind than that loses its backlog and receives one
/// [`Delivery::Gap`] instead (its sessions are sent a `reset`), so a stalled reader never grows
/// memory without bound and never slows the others.
///
/// # Example
///
/// ```
/// use futures_util::StreamExt;
/// use ssehub_core::backend::{Fanout, SubscriptionCount};
/// use ssehub_core::{Delivery, Envelope, EventId, EventName};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let count = SubscriptionCount::new();
/// let fanout = Fanout::new(2);
/// let mut sub = fanout.subscribe(&count, ());
/// assert_eq!(count.get(), 1);
/// for n in 1..=3 {
///     let id = EventId::parse(&format!("e-{n}")).unwrap();
///     fanout.send(Delivery::Event(Envelope { id, event: EventName::MESSAGE, data: "x".into() }));
/// }
/// // The third event found the queue full: the backlog became a gap.
/// assert_eq!(sub.next().await, Some(Delivery::Gap));
/// drop(sub);
/// assert_eq!((count.get(), fanout.is_empty()), (0, true));
/// # }
/// ```
#[derive(Debug)]
pub struct Fanout {
    bound: usize,
    queues: Mutex<Slab<Arc<Queue>>>,
}

impl Fanout {
    /// A fan-out whose subscriptions each hold at most `bound` deliveries (at least 1).
    #[must_use]
    pub fn new(bound: usize) -> Arc<Self> {
        Arc::new(Fanout {
            bound: bound.max(1),
            queues: Mutex::new(Slab::new()),
        })
    }

    /// Hand `delivery` to every subscription.
    pub fn send(&self, delivery: Delivery) {
        for (_, q) in lock(&self.queues).iter() {
            q.push(delivery.clone(), self.bound);
        }
    }

    /// Tell every subscription that events were lost.
    pub fn gap(&self) {
        self.send(Delivery::Gap);
    }

    /// How many subscriptions are live.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.queues).len()
    }

    /// Whether no subscription is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        lock(&self.queues).is_empty()
    }

    /// End every subscription's stream once its queue is read (the topic's feed is gone).
    pub fn close(&self) {
        for (_, q) in lock(&self.queues).iter() {
            q.close();
        }
    }

    /// A new subscription, counted in `count` while it lives. `keep` is held by the stream and
    /// dropped after the subscription has left the fan-out: a backend puts there what must
    /// outlive the stream (its topic handle) or what tells it the subscription went.
    pub fn subscribe<K: Send + 'static>(
        self: &Arc<Self>,
        count: &SubscriptionCount,
        keep: K,
    ) -> Subscription {
        let queue = Arc::new(Queue::default());
        let key = {
            let mut queues = lock(&self.queues);
            if queues.capacity() == 0 {
                // Most topics have one subscription per node: room for one, growing as needed.
                queues.reserve_exact(1);
            }
            queues.insert(queue.clone())
        };
        let member = Member {
            fanout: self.clone(),
            key,
            queue,
            _count: count.track(),
            _keep: keep,
        };
        Box::pin(member)
    }
}

/// A subscription's place in its fan-out; leaves it when dropped (before `_keep` drops).
struct Member<K> {
    fanout: Arc<Fanout>,
    key: usize,
    queue: Arc<Queue>,
    _count: CountGuard,
    _keep: K,
}

impl<K> Stream for Member<K> {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.queue.poll_next(cx)
    }
}

impl<K> Drop for Member<K> {
    fn drop(&mut self) {
        let mut queues = lock(&self.fanout.queues);
        if queues
            .get(self.key)
            .is_some_and(|q| Arc::ptr_eq(q, &self.queue))
        {
            queues.remove(self.key);
        }
    }
}

/// One subscription's deliveries not yet taken, and the waker of its reader. (A waker under the
/// queue's own lock, not a `Notify`: the subscription is a plain stream with no future to keep.)
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Delivery>,
    closed: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn push(&self, delivery: Delivery, bound: usize) {
        let waker = {
            let mut st = lock(&self.state);
            let last_is_gap = matches!(st.items.back(), Some(Delivery::Gap));
            match delivery {
                // Consecutive gaps say nothing more than one.
                Delivery::Gap if last_is_gap => return,
                Delivery::Gap => st.items.push_back(Delivery::Gap),
                Delivery::Event(_) if st.items.len() >= bound => {
                    // Too far behind: drop the backlog, say so once.
                    st.items.clear();
                    st.items.push_back(Delivery::Gap);
                }
                event => st.items.push_back(event),
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let mut st = lock(&self.state);
        if let Some(d) = st.items.pop_front() {
            if st.items.is_empty() && st.items.capacity() > 64 {
                st.items.shrink_to(64);
            }
            return Poll::Ready(Some(d));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::broker::Envelope;
    use crate::id::{EventId, EventName};

    fn event(n: u64) -> Delivery {
        Delivery::Event(Envelope {
            id: EventId::parse(&format!("e-{n}")).expect("id"),
            event: EventName::MESSAGE,
            data: bytes::Bytes::from_static(b"x"),
        })
    }

    #[tokio::test]
    async fn every_subscription_gets_every_event_in_order() {
        let count = SubscriptionCount::new();
        let f = Fanout::new(8);
        let mut a = f.subscribe(&count, ());
        let mut b = f.subscribe(&count, ());
        for n in 1..=3 {
            f.send(event(n));
        }
        for n in 1..=3 {
            assert_eq!(a.next().await, Some(event(n)));
            assert_eq!(b.next().await, Some(event(n)));
        }
        f.close();
        assert_eq!(a.next().await, None);
    }

    #[tokio::test]
    async fn a_gap_keeps_its_place_and_gaps_coalesce() {
        let count = SubscriptionCount::new();
        let f = Fanout::new(8);
        let mut a = f.subscribe(&count, ());
        f.send(event(1));
        f.gap();
        f.gap();
        f.send(event(2));
        assert_eq!(a.next().await, Some(event(1)));
        assert_eq!(a.next().await, Some(Delivery::Gap));
        assert_eq!(a.next().await, Some(event(2)));
    }

    #[tokio::test]
    async fn dropping_a_subscription_leaves_then_drops_what_it_keeps() {
        struct Witness(Arc<Fanout>, Arc<AtomicUsize>);
        impl Drop for Witness {
            fn drop(&mut self) {
                // The subscription has already left when its `keep` drops.
                self.1.store(self.0.len() + 100, Ordering::SeqCst);
            }
        }
        let count = SubscriptionCount::new();
        let f = Fanout::new(8);
        let seen = Arc::new(AtomicUsize::new(0));
        let sub = f.subscribe(&count, Witness(f.clone(), seen.clone()));
        drop(sub);
        assert_eq!(seen.load(Ordering::SeqCst), 100);
        assert_eq!(count.get(), 0);
    }
}
