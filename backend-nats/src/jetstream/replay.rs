//! A client's replay in JetStream mode: check that the id is still a message of this topic and
//! epoch, read every later message of the subject, and check again that nothing was trimmed
//! while reading.

use async_nats::jetstream::{consumer, stream};
use futures_util::StreamExt;
use ssehub_core::backend::{Offset, StreamPosition};
use ssehub_core::{Envelope, Replay, Result};

use super::{EPOCH_HEADER, JetStream, epoch_of};
use crate::connection::event_of;
use crate::error::{NatsError, boxed};

pub(super) async fn replay(
    js: &JetStream,
    subject: &str,
    after: &StreamPosition,
    limit: usize,
) -> Result<Replay> {
    let Offset::Seq(after_seq) = after.offset() else {
        return Ok(Replay::Gap);
    };
    let epoch = after.epoch();
    let mut stream = js
        .js
        .get_stream(js.stream_name())
        .await
        .map_err(|e| NatsError::Read(boxed(e)))?;
    let info = stream
        .info()
        .await
        .map_err(|e| NatsError::Read(boxed(e)))?
        .clone();
    let current = epoch_of(&info);
    if current != js.epoch_now() {
        js.set_epoch(current.clone());
    }
    if epoch != current
        || after_seq == 0
        || after_seq < info.state.first_sequence
        || after_seq > info.state.last_sequence
    {
        return Ok(Replay::Gap);
    }
    // The id must be a message of this topic, published under this epoch, still stored.
    if !message_is(&stream, after_seq, subject, epoch).await? {
        return Ok(Replay::Gap);
    }
    let last = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => m.sequence,
        Err(e) => {
            use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
            if e.kind() == K::NoMessageFound {
                return Ok(Replay::Gap);
            }
            return Err(NatsError::Read(boxed(e)).into());
        }
    };
    let mut events = Vec::new();
    if last > after_seq && limit > 0 {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after_seq + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Read(boxed(e)))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| NatsError::Read(boxed(e)))?;
        let mut prev = after_seq;
        while prev < last && events.len() < limit {
            let msg = match messages.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(NatsError::Read(boxed(e)).into()),
                None => return Err(NatsError::ReplayTimeout.into()),
            };
            let seq = msg.info().map_err(NatsError::Read)?.stream_sequence;
            if seq <= prev {
                continue;
            }
            prev = seq;
            let headers = msg.headers.as_ref();
            let msg_epoch = headers
                .and_then(|h| h.get(EPOCH_HEADER))
                .map_or(current.as_str(), |v| v.as_str());
            match (
                StreamPosition::new(msg_epoch, Offset::Seq(seq)),
                event_of(headers),
            ) {
                (Some(pos), Some(event)) => events.push(Envelope {
                    id: pos.to_event_id(),
                    event,
                    data: msg.payload.clone(),
                }),
                // Not an ssehub event: it cannot be told, so neither can the rest.
                _ => return Ok(Replay::Gap),
            }
        }
    }
    // Trimming drops the oldest first: if `after` is still there, nothing after it was skipped
    // while we read.
    if !message_is(&stream, after_seq, subject, epoch).await? {
        return Ok(Replay::Gap);
    }
    Ok(Replay::Events(events))
}

async fn message_is(stream: &stream::Stream, seq: u64, subject: &str, epoch: &str) -> Result<bool> {
    match stream.get_raw_message(seq).await {
        Ok(m) => Ok(m.subject.as_str() == subject
            && m.headers.get(EPOCH_HEADER).map(|v| v.as_str()) == Some(epoch)),
        Err(e) => {
            use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
            match e.kind() {
                K::NoMessageFound | K::InvalidSubject => Ok(false),
                // "no message found" comes back as a JetStream API error on some servers.
                K::JetStream(_) => Ok(false),
                K::Other => Err(NatsError::Read(boxed(e)).into()),
            }
        }
    }
}
