//! Where each topic's delivery stands, and the fill after a reconnect: every topic reads what it
//! missed from its stream, a page at a time, several topics at once. A topic whose fill fails
//! for good gets a gap on its own; the others are filled regardless.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use ssehub_core::backend::{Fanout, Offset, StreamPosition};
use ssehub_core::{Delivery, Envelope, Topic};

use crate::error::{RResult, RedisError};
use crate::history::{History, Read};

/// Topics filled at once after a reconnect.
const FILL_CONCURRENCY: usize = 16;
/// Entries read per page when filling after a known event.
const FILL_PAGE: usize = 256;
/// Reconnects in a row whose fill of a topic may fail for a temporary reason (a timeout, a
/// dropped connection) before that topic gets a gap instead of another try.
const FILL_ATTEMPTS: u32 = 3;

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
    /// Fills of this topic in a row that failed for a temporary reason.
    failed_fills: u32,
}

impl TopicSub {
    pub(crate) fn new(topic: Topic, fanout: Arc<Fanout>, pos: Position) -> Self {
        TopicSub {
            topic,
            fanout,
            pos,
            failed_fills: 0,
        }
    }

    fn gap(&mut self, pos: Position) {
        self.fanout.gap();
        self.pos = pos;
    }

    /// Deliver one event unless it was already delivered; a new epoch means a gap first.
    pub(crate) fn deliver(&mut self, pos: &StreamPosition, env: Envelope) {
        match &self.pos.epoch {
            Some(e) if e == pos.epoch() => {
                let seen = self
                    .pos
                    .last
                    .is_some_and(|last| pos.offset().order(&last).is_none_or(|o| o.is_le()));
                if seen {
                    return;
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
    }

    /// Deliver the events the topic missed from its stream, or a gap.
    async fn fill(&mut self, history: &History) -> RResult<()> {
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
                (Some(pos), Some(env)) => self.deliver(&pos, env),
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
///
/// A topic whose fill fails for good (or for a temporary reason [`FILL_ATTEMPTS`] reconnects in
/// a row) gets a gap; the others are not held up. A temporary failure otherwise (the command
/// connection timed out or dropped: most likely Redis is away again) starts no further fill and
/// answers the error, so the caller reconnects later; what was filled stays filled (each
/// topic's position is kept), and the rest is filled then.
pub(crate) async fn fill_all(
    history: &History,
    topics: &mut HashMap<String, TopicSub>,
) -> RResult<()> {
    let jobs: Vec<(String, TopicSub)> = topics
        .iter()
        .map(|(channel, t)| (channel.clone(), t.clone()))
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
    while let Some((channel, mut sub, res)) = fills.next().await {
        match res {
            Ok(()) => sub.failed_fills = 0,
            Err(e) if e.is_temporary() && sub.failed_fills + 1 < FILL_ATTEMPTS => {
                sub.failed_fills += 1;
                tracing::debug!(topic = %sub.topic, error = %e, "fill failed; retried after the next reconnect");
                stop.store(true, Ordering::Release);
                retry.get_or_insert(e);
            }
            Err(e) => {
                tracing::warn!(topic = %sub.topic, error = %e, "fill failed; the topic gets a gap");
                sub.failed_fills = 0;
                sub.fanout.gap();
            }
        }
        // Subscriptions are only added or removed by the actor, which is here: the topic is
        // still there.
        if let Some(t) = topics.get_mut(&channel) {
            t.pos = sub.pos;
            t.failed_fills = sub.failed_fills;
        }
    }
    retry.map_or(Ok(()), Err)
}
