//! [`Tagged`]: the frames of a multiplexed channel's session, read back by
//! [`MultiplexedSession`](super::MultiplexedSession).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::id::{EventId, EventName};
use crate::transport::{ResetReason, Transport};

/// The transport of a channel's [`Session`](crate::Session) inside a
/// [`MultiplexedSession`](super::MultiplexedSession): length-prefixed binary records of the
/// event's id, name and data, which the multiplexed stream re-frames with the channel's label
/// and the connection's id. Not a wire format: never send its bytes to a client.
///
/// Its frames hold nothing of one connection, so the hub shares them between every multiplexed
/// session of a channel, as it does for SSE.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tagged;

const EVENT: u8 = b'E';
const RESET: u8 = b'R';
const RETRY: u8 = b'T';
const KEEP_ALIVE: u8 = b'K';

/// The reasons in the order of their one-byte code.
const REASONS: [ResetReason; 8] = [
    ResetReason::MalformedId,
    ResetReason::OutOfWindow,
    ResetReason::NoHistory,
    ResetReason::BrokerGap,
    ResetReason::Overflow,
    ResetReason::HistoryTrimmed,
    ResetReason::EpochChanged,
    ResetReason::DataLost,
];

fn put_field(buf: &mut BytesMut, field: &[u8]) {
    // Ids, names and payloads are far below 4 GiB (payloads are bounded by the broker's limit).
    buf.put_u32(u32::try_from(field.len()).unwrap_or(u32::MAX));
    buf.put_slice(field);
}

impl Transport for Tagged {
    fn name(&self) -> &'static str {
        "ssehub-tagged"
    }

    fn content_type(&self) -> &'static str {
        "application/octet-stream"
    }

    fn event(&self, id: Option<&EventId>, event: &EventName, data: &[u8]) -> Bytes {
        let id = id.map_or("", EventId::as_str);
        let mut buf = BytesMut::with_capacity(13 + id.len() + event.as_str().len() + data.len());
        buf.put_u8(EVENT);
        put_field(&mut buf, id.as_bytes());
        put_field(&mut buf, event.as_str().as_bytes());
        put_field(&mut buf, data);
        buf.freeze()
    }

    fn reset(&self, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        let id = id.map_or("", EventId::as_str);
        let mut buf = BytesMut::with_capacity(6 + id.len());
        buf.put_u8(RESET);
        let code = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        buf.put_u8(u8::try_from(code).unwrap_or(0));
        put_field(&mut buf, id.as_bytes());
        buf.freeze()
    }

    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(&[KEEP_ALIVE])
    }

    fn retry(&self, after: Duration) -> Bytes {
        let mut buf = BytesMut::with_capacity(9);
        buf.put_u8(RETRY);
        buf.put_u64(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        buf.freeze()
    }
}

/// One record of a [`Tagged`] chunk.
#[derive(Debug, PartialEq)]
pub(super) enum Record<'a> {
    Event {
        id: Option<EventId>,
        name: &'a str,
        data: &'a [u8],
    },
    Reset {
        reason: ResetReason,
        id: Option<EventId>,
    },
    Retry(Duration),
    KeepAlive,
}

/// The records of a chunk made by [`Tagged`] (a session's chunk is whole frames). Stops at the
/// first byte that is not a record, which [`Tagged`] never writes.
pub(super) fn records(chunk: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut rest = chunk;
    std::iter::from_fn(move || {
        let (record, tail) = next(rest)?;
        rest = tail;
        Some(record)
    })
}

fn take(rest: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (rest.len() >= n).then(|| rest.split_at(n))
}

fn field(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take(rest, 4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?);
    take(rest, usize::try_from(len).ok()?)
}

fn id_of(bytes: &[u8]) -> Option<Option<EventId>> {
    if bytes.is_empty() {
        return Some(None);
    }
    EventId::parse_bytes(bytes).ok().map(Some)
}

fn next(rest: &[u8]) -> Option<(Record<'_>, &[u8])> {
    let (&kind, rest) = rest.split_first()?;
    match kind {
        EVENT => {
            let (id, rest) = field(rest)?;
            let (name, rest) = field(rest)?;
            let (data, rest) = field(rest)?;
            let record = Record::Event {
                id: id_of(id)?,
                name: std::str::from_utf8(name).ok()?,
                data,
            };
            Some((record, rest))
        }
        RESET => {
            let (&code, rest) = rest.split_first()?;
            let (id, rest) = field(rest)?;
            let reason = *REASONS.get(usize::from(code))?;
            Some((
                Record::Reset {
                    reason,
                    id: id_of(id)?,
                },
                rest,
            ))
        }
        RETRY => {
            let (ms, rest) = take(rest, 8)?;
            let ms = u64::from_be_bytes(ms.try_into().ok()?);
            Some((Record::Retry(Duration::from_millis(ms)), rest))
        }
        KEEP_ALIVE => Some((Record::KeepAlive, rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_what_was_written() {
        let id = EventId::parse("a1-7").unwrap();
        let name = EventName::new("comment-added").unwrap();
        let mut chunk = BytesMut::new();
        chunk.extend_from_slice(&Tagged.retry(Duration::from_millis(1500)));
        chunk.extend_from_slice(&Tagged.reset(ResetReason::Overflow, Some(&id)));
        chunk.extend_from_slice(&Tagged.reset(ResetReason::MalformedId, None));
        chunk.extend_from_slice(&Tagged.event(Some(&id), &name, b"{\"n\":1}\n"));
        chunk.extend_from_slice(&Tagged.event(None, &EventName::MESSAGE, b""));
        chunk.extend_from_slice(&Tagged.keep_alive());
        let got: Vec<Record<'_>> = records(&chunk).collect();
        assert_eq!(
            got,
            [
                Record::Retry(Duration::from_millis(1500)),
                Record::Reset {
                    reason: ResetReason::Overflow,
                    id: Some(id.clone())
                },
                Record::Reset {
                    reason: ResetReason::MalformedId,
                    id: None
                },
                Record::Event {
                    id: Some(id),
                    name: "comment-added",
                    data: b"{\"n\":1}\n"
                },
                Record::Event {
                    id: None,
                    name: "message",
                    data: b""
                },
                Record::KeepAlive,
            ]
        );
        // A truncated chunk stops at the last whole record, never panics.
        for cut in 0..chunk.len() {
            let _ = records(&chunk[..cut]).count();
        }
    }
}
