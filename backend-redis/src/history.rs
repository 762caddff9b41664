//! A topic's history in Redis: appending (the publish script) and reading. One atomic read
//! serves both a client's replay and the subscriber's gap fill after a reconnect.

use std::time::Duration;

use redis::{Script, Value};
use ssehub_core::backend::{Offset, StreamPosition, node_id};
use ssehub_core::{EventId, GapCause, Message, Replay, Topic};

use crate::builder::RedisBrokerBuilder;
use crate::connection::RedisConnection;
use crate::error::{RResult, RedisError, timed};
use crate::keys::Keys;
use crate::replicas::Replicas;
use crate::reply::{Entry, bulk_string, parse_entries, parse_entry_id};

/// The command connection and what it needs to read and write topic histories. Cheap to clone.
#[derive(Clone)]
pub(crate) struct History {
    pub(crate) con: RedisConnection,
    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    publish: &'static str,
    pub(crate) keys: Keys,
    script: Script,
    /// Entries kept per topic.
    pub(crate) len: usize,
    ttl: Duration,
    /// How long an idempotency key is remembered; zero: not at all.
    idempotency: Duration,
    /// How long a publish waits for a replica; zero: it does not.
    replica_timeout: Duration,
    replicas: std::sync::Arc<Replicas>,
    pub(crate) limit: Duration,
}

/// What one read of a topic's history found.
pub(crate) struct Read {
    /// The topic's epoch; `None` when the topic has no history (never published, expired,
    /// flushed).
    pub(crate) epoch: Option<String>,
    /// Whether the entry the read started after is still in the stream (always true for a read
    /// from the start). Redis answers the entries after a trimmed id silently, so this is what
    /// tells a complete answer from one with a hole.
    pub(crate) found: bool,
    /// The entries after the start, oldest first.
    pub(crate) entries: Vec<Entry>,
    /// The newest entry in the stream.
    pub(crate) tail: Option<Offset>,
}

impl History {
    pub(crate) fn new(con: RedisConnection, keys: Keys, config: &RedisBrokerBuilder) -> Self {
        History {
            con,
            publish: config
                .target
                .as_ref()
                .map_or("PUBLISH", |t| t.publish_command()),
            keys,
            script: Script::new(include_str!("scripts/publish.lua")),
            len: config.history,
            ttl: config.history_ttl,
            idempotency: config.idempotency_window,
            replica_timeout: config.replica_timeout,
            replicas: std::sync::Arc::default(),
            limit: config.op_timeout(),
        }
    }

    /// Append `messages` to `topic`'s history and publish them live, in order, in one script
    /// (atomic: all or none), so every node sees the same ids; answers them in order. A message
    /// whose idempotency key is still remembered is not appended: its first id answers.
    pub(crate) async fn append(
        &self,
        topic: &Topic,
        messages: &[Message],
    ) -> RResult<Vec<EventId>> {
        let t = topic.as_str();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // A generated key guards one call against redis-rs's resends: remembered briefly, not
        // for the whole window (a key per publish for minutes costs memory per publish).
        let window_ms = ms(self.idempotency);
        let generated_ms = ms(self.idempotency.min(ssehub_core::GENERATED_KEY_WINDOW));
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.stream(t))
            .key(self.keys.epoch(t))
            .arg(node_id())
            .arg(self.len)
            .arg(self.keys.channel(t))
            .arg(ttl_ms)
            .arg(self.publish)
            .arg(window_ms);
        // The idempotency keys are KEYS[3..] (so a cluster routes them: they share the topic's
        // slot); each event names its key's index, 0 for none, and how long to remember it.
        let mut next_key = 3;
        for message in messages {
            let key = message.idempotency_key.as_ref().filter(|_| window_ms > 0);
            let (index, remember) = match key {
                Some(key) => {
                    invocation.key(self.keys.idempotency(t, key.as_str()));
                    next_key += 1;
                    let remember = if key.is_generated() {
                        generated_ms
                    } else {
                        window_ms
                    };
                    (next_key - 1, remember)
                }
                None => (0, 0),
            };
            invocation
                .arg(message.event.as_str())
                .arg(&message.data[..])
                .arg(index)
                .arg(remember);
        }
        let mut con = self.con.clone();
        let reply: Value = timed(self.limit, "publish", invocation.invoke_async(&mut con)).await?;
        if !self.replica_timeout.is_zero() {
            let key = self.keys.stream(t);
            self.replicas
                .wait(&self.con, &key, self.replica_timeout, self.limit)
                .await?;
        }
        let Value::Array(parts) = reply else {
            return Err(RedisError::Protocol("publish script reply is not an array"));
        };
        if parts.len() != messages.len() + 1 {
            return Err(RedisError::Protocol(
                "publish script reply of the wrong length",
            ));
        }
        let mut parts = parts.into_iter();
        let epoch = parts
            .next()
            .ok_or(RedisError::Protocol("publish: no epoch"))?;
        let epoch = bulk_string(&epoch)?.ok_or(RedisError::Protocol("publish: no epoch"))?;
        parts
            .map(|id| {
                let id = bulk_string(&id)?.ok_or(RedisError::Protocol("publish: no entry id"))?;
                // A remembered key answers `<epoch> <entry id>` as it was stored.
                let (epoch, id) = id.split_once(' ').unwrap_or((epoch.as_str(), id.as_str()));
                let offset =
                    parse_entry_id(id).ok_or(RedisError::Protocol("publish: bad entry id"))?;
                StreamPosition::new(epoch, offset)
                    .map(|p| p.to_event_id())
                    .ok_or(RedisError::Protocol("publish: bad epoch"))
            })
            .collect()
    }

    /// Read, atomically, the epoch, at most `count` entries after `after` (from the start when
    /// `after` is `None`) and the stream's tail.
    pub(crate) async fn read(
        &self,
        topic: &str,
        after: Option<Offset>,
        count: usize,
    ) -> RResult<Read> {
        // Redis takes a signed 64-bit count.
        let count = count.min(i64::MAX as usize);
        let stream = self.keys.stream(topic);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("GET").arg(self.keys.epoch(topic));
        match after {
            Some(offset) => {
                let id = offset.to_string();
                pipe.cmd("XRANGE")
                    .arg(&stream)
                    .arg(&id)
                    .arg(&id)
                    .cmd("XRANGE")
                    .arg(&stream)
                    .arg(format!("({id}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count);
            }
            None => {
                pipe.cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(count);
            }
        }
        pipe.cmd("XREVRANGE")
            .arg(&stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut con = self.con.clone();
        let mut replies: Vec<Value> =
            timed(self.limit, "reading history", pipe.query_async(&mut con)).await?;
        let expected = if after.is_some() { 4 } else { 3 };
        if replies.len() != expected {
            return Err(RedisError::Protocol("history reply of the wrong length"));
        }
        let mut next = || parse_entries(replies.pop().unwrap_or(Value::Nil));
        let tail = next()?.first().map(|e| e.offset);
        let entries = next()?;
        let found = after.is_none() || !next()?.is_empty();
        let epoch = bulk_string(&replies.pop().unwrap_or(Value::Nil))?;
        Ok(Read {
            epoch,
            found,
            entries,
            tail,
        })
    }

    /// The epoch and tail of `topic`'s stream: where a new subscription starts.
    pub(crate) async fn tail(&self, topic: &str) -> RResult<(Option<String>, Option<Offset>)> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(self.keys.epoch(topic))
            .cmd("XREVRANGE")
            .arg(self.keys.stream(topic))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut con = self.con.clone();
        let replies: Vec<Value> = timed(
            self.limit,
            "reading the stream tail",
            pipe.query_async(&mut con),
        )
        .await?;
        let [epoch, tail] = <[Value; 2]>::try_from(replies)
            .map_err(|_| RedisError::Protocol("tail reply of the wrong length"))?;
        let epoch = bulk_string(&epoch)?;
        let last = parse_entries(tail)?.first().map(|e| e.offset);
        Ok((epoch, last))
    }

    /// A client's replay after `after`: at most `limit` events still in history, or a gap.
    pub(crate) async fn replay(
        &self,
        topic: &Topic,
        after: &StreamPosition,
        limit: usize,
    ) -> RResult<Replay> {
        let offset @ Offset::Pair(..) = after.offset() else {
            return Ok(Replay::Gap(GapCause::Unknown));
        };
        let read = self.read(topic.as_str(), Some(offset), limit).await?;
        let Some(epoch) = read.epoch else {
            return Ok(Replay::Gap(GapCause::EpochChanged));
        };
        if epoch != after.epoch() {
            return Ok(Replay::Gap(GapCause::EpochChanged));
        }
        if !read.found {
            // Trimming drops the oldest entries: an id past the tail (or in an empty stream of
            // this epoch) is one the broker acknowledged and no longer holds.
            let cause = match read.tail {
                Some(tail) if tail.order(&offset) == Some(std::cmp::Ordering::Greater) => {
                    GapCause::Trimmed
                }
                _ => GapCause::Lost,
            };
            return Ok(Replay::Gap(cause));
        }
        let mut events = Vec::with_capacity(read.entries.len());
        for entry in read.entries {
            match entry.into_envelope(&epoch) {
                Some(env) => events.push(env),
                // A malformed entry cannot be told: a gap, never a silent skip.
                None => return Ok(Replay::Gap(GapCause::Unknown)),
            }
        }
        Ok(Replay::Events(events))
    }
}
