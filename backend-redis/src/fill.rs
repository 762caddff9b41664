//! Where each topic's delivery stands, and the fill after a reconnect: every topic reads what it
//! missed from its stream, a page at a time, several topics at once. A topic whose fill fails
//! for good gets a gap on its own; the others are filled regardless.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use ssehub_core::backend::{Fanout, Offset, StreamPosition};
use ssehub_core::{Delivery, Envelope, Topic};

use crate::error::{RResult, RedisError};
use crate::history::{History, Read};

/// Topics filled at once after a reconnect.
const FILL_CONCURRENCY: usize = 16;
/// Entries read per page when filling after a known event.
const FILL_PAGE: usize = 256;
/// How long a topic's fill may keep failing for a temporary reason (a timeout, a dropped
/// connection, a cluster still electing or loading) before that topic gets a gap instead of
/// another try. Counted from the first failure; it covers a broker restart, so a broker that
/// lost nothing causes no `reset`.
const FILL_BUDGET: Duration = Duration::from_secs(60);
/// Topics whose stream tail one liveness check reads.
pub(crate) const CHECK_PER_TICK: usize = 512;
/// How long an event may stay in its stream without arriving live before the topic's
/// subscription is taken for dead and made again.
pub(crate) const LIVE_GRACE: Duration = Duration::from_secs(2);

/// Where a topic's delivery stands: the last event delivered (or the stream's tail when it was
/// subscribed), used to drop duplicates and to fill after a reconnect.
#[derive(Clone, Debug, Default)]
pub(crate) struct Position {
    pub(crate) epoch: Option<String>,
    pub(crate) last: Option<Offset>,
}

/// One subscribed topic: its local fan-out and where its delivery stands.
#[derive(Clone)]
pub(crate) struct TopicSub {
    topic: Topic,
    pub(crate) fanout: Arc<Fanout>,
    pos: Position,
    /// When the fills of this topic began to fail for a temporary reason (none since).
    failing_since: Option<tokio::time::Instant>,
    /// The first event the last fill delivered.
    first_filled: Option<Offset>,
    /// Whether `pos` is exactly the last event delivered in the stream's order (after a live
    /// event or a fill), so a live event that names another predecessor shows a hole. Not at
    /// first: `pos` is then the tail read before the subscription, and what was published
    /// before it took effect is not this subscription's to deliver.
    synced: bool,
    /// The stream's tail read once the subscription was confirmed: before `synced`, a live
    /// event whose predecessor is newer than it shows events the subscription missed.
    confirmed: Option<Offset>,
}

/// What became of a live event ([`TopicSub::live`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Live {
    /// Delivered, or dropped as delivered already.
    Done,
    /// Its predecessor is not the last event delivered: events were missed (a subscription
    /// lost and made again, a slot moved). Not delivered: the topic is to be filled from its
    /// stream, which holds this event too.
    Hole,
}

impl TopicSub {
    pub(crate) fn new(topic: Topic, fanout: Arc<Fanout>, pos: Position) -> Self {
        TopicSub {
            topic,
            fanout,
            pos,
            failing_since: None,
            first_filled: None,
            synced: false,
            confirmed: None,
        }
    }

    /// The stream's tail once the subscription was confirmed (see [`live`](Self::live)).
    pub(crate) fn confirmed_at(mut self, tail: Option<Offset>) -> Self {
        self.confirmed = tail;
        self
    }

    fn gap(&mut self, pos: Position) {
        self.fanout.gap();
        self.pos = pos;
    }

    /// A live event that names its stream predecessor `prev`: delivered when it follows the
    /// last event delivered, a [`Live::Hole`] when events came between (fill the topic), a gap
    /// then the event when the stream no longer holds what was delivered (a failover lost it).
    pub(crate) fn live(
        &mut self,
        pos: &StreamPosition,
        prev: Option<Offset>,
        env: Envelope,
    ) -> Live {
        let same_epoch = self.pos.epoch.as_deref() == Some(pos.epoch());
        let after = |a: Option<Offset>, b: Option<Offset>| match (a, b) {
            (Some(a), Some(b)) => a.order(&b).is_some_and(|o| o.is_gt()),
            (Some(_), None) => true,
            _ => false,
        };
        if !self.synced {
            // The first live event: events before its predecessor that were published after the
            // subscription was confirmed were missed (a subscription moved by a failover as it
            // was made); older ones were the window around the subscription.
            if same_epoch && after(prev, self.confirmed) && after(prev, self.pos.last) {
                return Live::Hole;
            }
        } else if let (true, Some(last)) = (same_epoch, self.pos.last) {
            let newer = pos.offset().order(&last).is_some_and(|o| o.is_gt());
            if newer {
                match prev.and_then(|p| p.order(&last)) {
                    Some(std::cmp::Ordering::Equal) => {}
                    Some(std::cmp::Ordering::Greater) => return Live::Hole,
                    // The stream's entry before this one is older than what was delivered (or
                    // there is none): what was delivered is not in the stream any more.
                    Some(std::cmp::Ordering::Less) | None => {
                        self.fanout.gap();
                    }
                }
            }
        }
        self.deliver(pos, env);
        self.synced = true;
        Live::Done
    }

    /// Deliver one event unless it was already delivered (then `false`); a new epoch means a
    /// gap first.
    pub(crate) fn deliver(&mut self, pos: &StreamPosition, env: Envelope) -> bool {
        match &self.pos.epoch {
            Some(e) if e == pos.epoch() => {
                let seen = self
                    .pos
                    .last
                    .is_some_and(|last| pos.offset().order(&last).is_none_or(|o| o.is_le()));
                if seen {
                    return false;
                }
            }
            // The topic's history was reset under us (flush, restart, expiry).
            Some(_) => self.fanout.gap(),
            None => {}
        }
        self.pos = Position {
            epoch: Some(pos.epoch().to_owned()),
            last: Some(pos.offset()),
        };
        self.fanout.send(Delivery::Event(env));
        true
    }

    /// Deliver the events the topic missed from its stream, or a gap.
    async fn fill(&mut self, history: &History) -> RResult<()> {
        self.first_filled = None;
        let res = self.fill_inner(history).await;
        if res.is_ok() {
            self.synced = true;
        }
        res
    }

    async fn fill_inner(&mut self, history: &History) -> RResult<()> {
        loop {
            let before = self.pos.clone();
            let Some(after) = before.last else {
                // From the start: one more than the window tells whether it overflowed. Bounded
                // by the history length.
                let read = history
                    .read(self.topic.as_str(), None, history.len + 1)
                    .await?;
                self.apply(&before, read, Some(history.len));
                return Ok(());
            };
            // After a known event: a page at a time, up to the tail.
            let read = history
                .read(self.topic.as_str(), Some(after), FILL_PAGE)
                .await?;
            let full = read.entries.len() >= FILL_PAGE;
            if !self.apply(&before, read, None) || !full || self.pos.last == before.last {
                return Ok(());
            }
        }
    }

    /// Deliver one read of the stream, or a gap when events were lost before it. `window` is
    /// the history length for a read from the start (`None` after a known event). Answers
    /// whether the read was delivered whole (the fill may read on).
    fn apply(&mut self, before: &Position, read: Read, window: Option<usize>) -> bool {
        let now = Position {
            epoch: read.epoch.clone(),
            last: read.tail,
        };
        let lost = match (&before.epoch, &read.epoch) {
            (Some(b), Some(n)) if b != n => true,
            (Some(_), None) => true,
            _ => match window {
                None => !read.found,
                // Nothing was in the stream when we subscribed: all of it is new, unless it
                // grew past the window (trimming may have removed some).
                Some(window) => read.entries.len() >= window,
            },
        };
        if lost {
            self.gap(now);
            return false;
        }
        let Some(epoch) = read.epoch else {
            return false;
        };
        for entry in read.entries {
            let offset = entry.offset;
            match (
                StreamPosition::new(&epoch, offset),
                entry.into_envelope(&epoch),
            ) {
                (Some(pos), Some(env)) => {
                    if self.deliver(&pos, env) && self.first_filled.is_none() {
                        self.first_filled = Some(offset);
                    }
                }
                // A malformed entry cannot be told: a gap, and on from the tail.
                _ => {
                    self.gap(now);
                    return false;
                }
            }
        }
        true
    }
}

/// Fill every topic after a reconnect, at most [`FILL_CONCURRENCY`] at once.
pub(crate) async fn fill_all(
    history: &History,
    topics: &mut HashMap<String, TopicSub>,
) -> RResult<()> {
    let all: Vec<String> = topics.keys().cloned().collect();
    fill_some(history, topics, all).await
}

/// Fill these topics, at most [`FILL_CONCURRENCY`] at once.
///
/// A topic whose fill fails for good (or for a temporary reason for longer than
/// [`FILL_BUDGET`]) gets a gap; the others are not held up. A temporary failure otherwise (the
/// command connection timed out or dropped: most likely Redis is away again) starts no further
/// fill and answers the error, so the caller reconnects later; what was filled stays filled
/// (each topic's position is kept), and the rest is filled then.
pub(crate) async fn fill_some(
    history: &History,
    topics: &mut HashMap<String, TopicSub>,
    channels: Vec<String>,
) -> RResult<()> {
    let jobs: Vec<(String, TopicSub)> = channels
        .into_iter()
        .filter_map(|channel| topics.get(&channel).map(|t| (channel, t.clone())))
        .collect();
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let mut fills = futures_util::stream::iter(jobs)
        .take_while(|_| std::future::ready(!stop.load(Ordering::Acquire)))
        .map(|(channel, mut sub)| async move {
            let res = sub.fill(history).await;
            (channel, sub, res)
        })
        .buffer_unordered(FILL_CONCURRENCY);
    let mut retry: Option<RedisError> = None;
    let now = tokio::time::Instant::now();
    while let Some((channel, mut sub, res)) = fills.next().await {
        match res {
            Ok(()) => sub.failing_since = None,
            Err(e)
                if e.is_temporary()
                    && now.duration_since(*sub.failing_since.get_or_insert(now)) < FILL_BUDGET =>
            {
                tracing::debug!(topic = %sub.topic, error = %e, "fill failed; retried after the next reconnect");
                stop.store(true, Ordering::Release);
                retry.get_or_insert(e);
            }
            Err(e) => {
                tracing::warn!(topic = %sub.topic, error = %e, budget = ?FILL_BUDGET, "fill failed; the topic gets a gap");
                sub.failing_since = None;
                sub.fanout.gap();
            }
        }
        // Subscriptions are only added or removed by the actor, which is here: the topic is
        // still there.
        if let Some(t) = topics.get_mut(&channel) {
            t.pos = sub.pos;
            t.failing_since = sub.failing_since;
            t.first_filled = sub.first_filled;
            t.synced = sub.synced;
        }
    }
    retry.map_or(Ok(()), Err)
}

/// The liveness check: trust no client library to report every loss of a subscription. Read
/// the stream tail of up to [`CHECK_PER_TICK`] topics (from `cursor` on, round robin); a topic
/// whose stream holds events it did not deliver is filled from the stream, and when the first
/// of them is older than [`LIVE_GRACE`] (its live message should have come by then), its
/// channel is answered: the caller subscribes it again. A failed read ends the round quietly
/// (the next one tries again; the subscriber connection itself is checked by its ping).
pub(crate) async fn check(
    history: &History,
    topics: &mut HashMap<String, TopicSub>,
    cursor: &mut usize,
) -> RResult<Vec<String>> {
    let mut channels: Vec<String> = topics.keys().cloned().collect();
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    channels.sort_unstable();
    let start = *cursor % channels.len();
    let take = channels.len().min(CHECK_PER_TICK);
    *cursor = start + take;
    let round: Vec<(String, Topic, Position)> = channels
        .iter()
        .cycle()
        .skip(start)
        .take(take)
        .filter_map(|c| {
            topics
                .get(c)
                .map(|t| (c.clone(), t.topic.clone(), t.pos.clone()))
        })
        .collect();
    let tails = futures_util::stream::iter(round)
        .map(|(channel, topic, pos)| async move {
            let tail = history.tail(topic.as_str()).await;
            (channel, pos, tail)
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut behind = Vec::new();
    for (channel, pos, tail) in tails {
        let Ok((epoch, last)) = tail else {
            continue;
        };
        let newer = match (&pos.epoch, &epoch, pos.last, last) {
            (Some(a), Some(b), _, _) if a != b => true,
            (_, Some(_), None, Some(_)) => true,
            (_, _, Some(mine), Some(theirs)) => theirs.order(&mine).is_some_and(|o| o.is_gt()),
            _ => false,
        };
        if newer {
            behind.push(channel);
        }
    }
    if behind.is_empty() {
        return Ok(Vec::new());
    }
    fill_some(history, topics, behind.clone()).await?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let grace = u64::try_from(LIVE_GRACE.as_millis()).unwrap_or(u64::MAX);
    Ok(behind
        .into_iter()
        .filter(|channel| {
            let Some(t) = topics.get(channel) else {
                return false;
            };
            let stale = matches!(t.first_filled, Some(Offset::Pair(ms, _)) if now_ms.saturating_sub(ms) > grace);
            if stale {
                tracing::warn!(topic = %t.topic, "redis: events in the stream did not arrive live; filled them and subscribing the topic again");
            }
            stale
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use ssehub_core::EventName;
    use ssehub_core::backend::SubscriptionCount;

    use super::*;

    fn env(pos: &StreamPosition) -> Envelope {
        Envelope {
            id: pos.to_event_id(),
            event: EventName::MESSAGE,
            data: bytes::Bytes::new(),
        }
    }

    fn at(ms: u64) -> StreamPosition {
        StreamPosition::new("e1", Offset::Pair(ms, 0)).expect("position")
    }

    #[tokio::test]
    async fn a_live_event_that_names_another_predecessor_is_a_hole_or_a_gap() {
        let fanout = Fanout::new(16);
        let mut sub = fanout.subscribe(&SubscriptionCount::new(), ());
        let topic = Topic::new("t").expect("topic");
        let mut t = TopicSub::new(topic, fanout, Position::default());
        let mut next = async || match sub.next().await {
            Some(Delivery::Event(e)) => Some(e.id),
            Some(Delivery::Gap) => None,
            other => panic!("{other:?}"),
        };
        let id = |p: &StreamPosition| Some(p.to_event_id());
        // The first event after the subscription is delivered whatever its predecessor.
        assert_eq!(
            t.live(&at(10), Some(Offset::Pair(5, 0)), env(&at(10))),
            Live::Done
        );
        assert_eq!(next().await, id(&at(10)));
        // Its successor follows on.
        assert_eq!(
            t.live(&at(11), Some(Offset::Pair(10, 0)), env(&at(11))),
            Live::Done
        );
        assert_eq!(next().await, id(&at(11)));
        // One that follows on something this topic never delivered: a hole, nothing sent.
        assert_eq!(
            t.live(&at(13), Some(Offset::Pair(12, 0)), env(&at(13))),
            Live::Hole
        );
        // One whose predecessor is older than what was delivered (the stream lost 11 in a
        // failover): a gap, then the event.
        assert_eq!(
            t.live(&at(14), Some(Offset::Pair(10, 0)), env(&at(14))),
            Live::Done
        );
        assert_eq!(next().await, None, "a gap");
        assert_eq!(next().await, id(&at(14)));
        // A repeat of a delivered event is dropped, whatever it names.
        assert_eq!(
            t.live(&at(14), Some(Offset::Pair(1, 0)), env(&at(14))),
            Live::Done
        );
        assert_eq!(
            t.live(&at(15), Some(Offset::Pair(14, 0)), env(&at(15))),
            Live::Done
        );
        assert_eq!(next().await, id(&at(15)), "nothing in between");
    }

    #[tokio::test]
    async fn a_first_live_event_shows_what_was_missed_after_the_subscription() {
        let fanout = Fanout::new(16);
        let topic = Topic::new("t").expect("topic");
        let before = Position {
            epoch: Some("e1".into()),
            last: Some(Offset::Pair(10, 0)),
        };
        let confirmed = Some(Offset::Pair(12, 0));
        // Events up to the confirmed tail were the window around the subscription.
        let mut t =
            TopicSub::new(topic.clone(), fanout.clone(), before.clone()).confirmed_at(confirmed);
        assert_eq!(
            t.live(&at(13), Some(Offset::Pair(12, 0)), env(&at(13))),
            Live::Done
        );
        // One published after it was missed: a hole.
        let mut t = TopicSub::new(topic, fanout, before).confirmed_at(confirmed);
        assert_eq!(
            t.live(&at(14), Some(Offset::Pair(13, 0)), env(&at(14))),
            Live::Hole
        );
    }
}
