//! A client's replay in JetStream mode: check that the id is still a message of this topic and
//! epoch, read the later messages of the subject (at most `limit`) with a temporary consumer that
//! is deleted when done, and check again that nothing was trimmed while reading.
//!
//! Look-ups the server cannot answer now are retried a few times and then fail the replay with a
//! temporary error (see `lookup`): only a definite "no such message" answers a gap.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use futures_util::StreamExt;
use ssehub_core::backend::{Offset, StreamPosition};
use ssehub_core::{Error, GapCause, Result};

use super::lookup::{self, StreamHandle};
use super::{EPOCH_HEADER, JetStream, Stored, epoch_of, stored_of};
use crate::error::{NatsError, boxed};

/// How long the server keeps a replay consumer that lost its client (its delete failed, the
/// replay was cancelled and the delete did not get through).
const CONSUMER_IDLE: Duration = Duration::from_secs(30);

/// What a read found: the events, or why they cannot be told.
pub(super) type Found<T> = std::result::Result<T, GapCause>;

/// Messages asked of the server per pull.
const BATCH: usize = 256;

/// The events of `subject` after `after` (at most `limit`), within twice the response timeout;
/// `Err(cause)` for a gap (the id is not a message of this topic and epoch still stored, or
/// something after it was trimmed while reading).
pub(super) async fn read_after(
    js: &JetStream,
    subject: &str,
    after: &StreamPosition,
    limit: usize,
) -> Result<Found<Vec<Stored>>> {
    tokio::time::timeout(js.timeout() * 2, read(js, subject, after, limit))
        .await
        .map_err(|_| Error::from(NatsError::ReplayTimeout))?
}

async fn read(
    js: &JetStream,
    subject: &str,
    after: &StreamPosition,
    limit: usize,
) -> Result<Found<Vec<Stored>>> {
    let Offset::Seq(after_seq) = after.offset() else {
        return Ok(Err(GapCause::Unknown));
    };
    let epoch = after.epoch();
    let timeout = js.timeout();
    let stream = js
        .js
        .get_stream_no_info(js.stream_name())
        .await
        .map_err(|e| NatsError::Read(boxed(e)))?;
    let info = lookup::info(&stream, timeout).await?;
    let current = epoch_of(&info);
    js.epoch.set(current.clone());
    if epoch != current {
        return Ok(Err(GapCause::EpochChanged));
    }
    if after_seq == 0 {
        return Ok(Err(GapCause::Unknown));
    }
    if after_seq > info.state.last_sequence {
        // A sequence the stream gave out and no longer has: it lost acknowledged messages.
        return Ok(Err(GapCause::Lost));
    }
    // The id must be a message of this topic, published under this epoch, still stored; the
    // stream drops the oldest first (by count, age, or per subject), so one that is gone was
    // trimmed.
    if after_seq < info.state.first_sequence
        || !is_ours(&stream, after_seq, subject, epoch, timeout).await?
    {
        return Ok(Err(GapCause::Trimmed));
    }
    let Some(last) = lookup::last_of(&stream, subject, timeout).await? else {
        return Ok(Err(GapCause::Trimmed));
    };
    let mut events = Vec::new();
    if last.sequence > after_seq && limit > 0 {
        let read = Read {
            subject,
            after: after_seq,
            last: last.sequence,
            limit,
            epoch: &current,
        };
        match read.run(&stream).await? {
            Some(read) => events = read,
            // Not an ssehub event: it cannot be told, so neither can the rest.
            None => return Ok(Err(GapCause::Unknown)),
        }
    }
    // Trimming drops the oldest first: if `after` is still there, nothing after it was skipped
    // while we read.
    if !is_ours(&stream, after_seq, subject, epoch, timeout).await? {
        return Ok(Err(GapCause::Trimmed));
    }
    Ok(Ok(events))
}

/// Whether the message at `seq` is one of `subject`, published under `epoch`.
async fn is_ours(
    stream: &StreamHandle,
    seq: u64,
    subject: &str,
    epoch: &str,
    timeout: Duration,
) -> Result<bool> {
    Ok(lookup::message(stream, seq, timeout)
        .await?
        .is_some_and(|m| {
            m.subject.as_str() == subject
                && m.headers.get(EPOCH_HEADER).map(|v| v.as_str()) == Some(epoch)
        }))
}

/// What one replay reads: the messages of `subject` after `after` up to `last`, at most `limit`.
struct Read<'a> {
    subject: &'a str,
    after: u64,
    last: u64,
    limit: usize,
    epoch: &'a str,
}

impl Read<'_> {
    /// Read with a consumer of this replay alone, deleted before returning (and by a task when
    /// the replay is dropped half-way). `None`: a message that is not an ssehub event.
    async fn run(&self, stream: &StreamHandle) -> Result<Option<Vec<Stored>>> {
        let name = format!("ssehub_replay_{:016x}", rand::random::<u64>());
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                name: Some(name.clone()),
                filter_subject: self.subject.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.after + 1,
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: CONSUMER_IDLE,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Read(boxed(e)))?;
        let mut cleanup = DeleteConsumer {
            stream: Some(stream.clone()),
            name,
        };
        let read = self.read(&consumer).await;
        cleanup.now().await;
        read
    }

    async fn read(&self, consumer: &consumer::PullConsumer) -> Result<Option<Vec<Stored>>> {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(BATCH.min(self.limit))
            .messages()
            .await
            .map_err(|e| NatsError::Read(boxed(e)))?;
        let mut events = Vec::new();
        let mut prev = self.after;
        // The consumer numbers what it sends 1, 2, 3…: without acks, a message lost on the way
        // (the connection cut mid-batch) is never sent again, and after the reconnect the
        // consumer goes on with the next one. A number skipped is such a loss: the read fails
        // (temporarily), never answers a hole.
        let mut delivered = 0;
        while prev < self.last && events.len() < self.limit {
            let msg = match messages.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(NatsError::Read(boxed(e)).into()),
                None => return Err(NatsError::ReplayTimeout.into()),
            };
            let info = msg.info().map_err(NatsError::Read)?;
            if info.consumer_sequence != delivered + 1 {
                return Err(NatsError::ReplayLost {
                    after: delivered,
                    got: info.consumer_sequence,
                }
                .into());
            }
            delivered = info.consumer_sequence;
            let seq = info.stream_sequence;
            if seq <= prev {
                continue;
            }
            prev = seq;
            match stored_of(seq, None, msg.headers.as_ref(), &msg.payload, self.epoch) {
                Some(stored) => events.push(stored),
                None => return Ok(None),
            }
        }
        Ok(Some(events))
    }
}

/// Deletes a replay consumer: awaited when the replay ends, from a task when it is dropped first.
struct DeleteConsumer {
    stream: Option<StreamHandle>,
    name: String,
}

impl DeleteConsumer {
    async fn now(&mut self) {
        if let Some(stream) = self.stream.take() {
            delete(stream, std::mem::take(&mut self.name)).await;
        }
    }
}

impl Drop for DeleteConsumer {
    fn drop(&mut self) {
        if let (Some(stream), Ok(rt)) = (self.stream.take(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(delete(stream, std::mem::take(&mut self.name)));
        }
    }
}

async fn delete(stream: StreamHandle, name: String) {
    if let Err(e) = stream.delete_consumer(&name).await {
        // The server deletes it after `CONSUMER_IDLE` anyway.
        tracing::debug!(error = %e, consumer = %name, "nats: deleting a replay consumer failed");
    }
}
