//! Reading Redis replies and pub/sub messages: untrusted bytes in, validated events out.

use bytes::Bytes;
use redis::Value;
use ssehub_core::backend::{Offset, StreamPosition, parse_canonical};
use ssehub_core::{Envelope, EventName};

use crate::error::{RResult, RedisError};

/// A stream entry id `<ms>-<seq>`.
pub(crate) fn parse_entry_id(s: &str) -> Option<Offset> {
    let (ms, seq) = s.split_once('-')?;
    Some(Offset::Pair(parse_canonical(ms)?, parse_canonical(seq)?))
}

pub(crate) fn bulk_string(v: &Value) -> RResult<Option<String>> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|_| RedisError::Protocol("string is not utf-8")),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::VerbatimString { text, .. } => Ok(Some(text.clone())),
        _ => Err(RedisError::Protocol("expected a string")),
    }
}

pub(crate) fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// One stream entry; its fields not yet validated.
pub(crate) struct Entry {
    pub(crate) offset: Offset,
    event: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
}

impl Entry {
    /// The event of this entry in `epoch`; `None` when a field is missing or invalid.
    pub(crate) fn into_envelope(self, epoch: &str) -> Option<Envelope> {
        let event = String::from_utf8(self.event?).ok()?;
        Some(Envelope {
            id: StreamPosition::new(epoch, self.offset)?.to_event_id(),
            event: EventName::new(&event).ok()?,
            data: Bytes::from(self.data?),
        })
    }
}

/// Parse an `XRANGE` / `XREVRANGE` reply (RESP2 or RESP3 shapes).
pub(crate) fn parse_entries(v: Value) -> RResult<Vec<Entry>> {
    let items = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => items,
        _ => return Err(RedisError::Protocol("stream range is not an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(RedisError::Protocol("stream entry is not an array"));
        };
        let [id, fields] = <[Value; 2]>::try_from(pair)
            .map_err(|_| RedisError::Protocol("stream entry of the wrong length"))?;
        let id = bulk_string(&id)?.ok_or(RedisError::Protocol("stream entry without id"))?;
        let offset =
            parse_entry_id(&id).ok_or(RedisError::Protocol("stream entry id malformed"))?;
        let pairs: Vec<(Value, Value)> = match fields {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            Value::Map(map) => map,
            _ => return Err(RedisError::Protocol("stream entry fields malformed")),
        };
        let mut entry = Entry {
            offset,
            event: None,
            data: None,
        };
        for (k, v) in pairs {
            match into_bytes(k).as_deref() {
                Some(b"e") => entry.event = into_bytes(v),
                Some(b"d") => entry.data = into_bytes(v),
                _ => {}
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// A pub/sub message: `epoch \n ms-seq \n event \n data`.
/// A live message as the publish script sends it: the event's position, the stream's entry
/// before it (`None` for a stream's first), its name and its data.
pub(crate) struct LiveMessage {
    pub(crate) pos: StreamPosition,
    pub(crate) prev: Option<Offset>,
    pub(crate) event: EventName,
    pub(crate) data: Bytes,
}

/// Parse `epoch \n id \n prev \n event \n data` (`prev` empty for a stream's first entry).
pub(crate) fn parse_message(payload: &[u8]) -> Option<LiveMessage> {
    let mut parts = payload.splitn(5, |b| *b == b'\n');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let id = std::str::from_utf8(parts.next()?).ok()?;
    let prev = std::str::from_utf8(parts.next()?).ok()?;
    let event = std::str::from_utf8(parts.next()?).ok()?;
    let data = parts.next()?;
    let pos = StreamPosition::new(epoch, parse_entry_id(id)?)?;
    let prev = match prev {
        "" => None,
        p => Some(parse_entry_id(p)?),
    };
    let event = EventName::new(event).ok()?;
    Some(LiveMessage {
        pos,
        prev,
        event,
        data: Bytes::copy_from_slice(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = StreamPosition::new("00ab", Offset::Pair(1700, 3))
            .expect("id")
            .to_event_id();
        assert_eq!(id.as_str(), "00ab-1700-3");
        let p = StreamPosition::from_event_id(&id).expect("parse");
        assert_eq!((p.epoch(), p.offset()), ("00ab", Offset::Pair(1700, 3)));
        for bad in [
            "0-0", "zzz", "a-1", "a-1-2-3", "a-+1-2", "a--1", "-1-2", "a.b-1-2",
        ] {
            let parsed = StreamPosition::parse(bad);
            assert!(
                !matches!(parsed.map(|p| p.offset()), Some(Offset::Pair(..))),
                "{bad}"
            );
        }
        assert!(StreamPosition::parse("a-99999999999999999999999-1").is_none());
    }

    #[test]
    fn messages_parse_binary_data() {
        let mut m = b"abc\n12-3\n12-2\nmessage\n".to_vec();
        m.extend_from_slice(b"x\ny\r\0\xff");
        let msg = parse_message(&m).expect("parse");
        let pos = &msg.pos;
        assert_eq!((pos.epoch(), pos.offset()), ("abc", Offset::Pair(12, 3)));
        assert_eq!(msg.prev, Some(Offset::Pair(12, 2)));
        assert_eq!(msg.event, EventName::MESSAGE);
        assert_eq!(&msg.data[..], b"x\ny\r\0\xff");
        let first = parse_message(b"abc\n12-3\n\nmessage\n").expect("a stream's first");
        assert_eq!(first.prev, None);
        assert!(parse_message(b"abc\n12-3\n12-2\nreset\n").is_none());
        assert!(
            parse_message(b"abc\n12-3\nmessage\nx").is_none(),
            "no prev field"
        );
        assert!(parse_message(b"abc\n12-3").is_none());
        assert!(parse_message(b"a-c\n12-3\n\nm\n").is_none());
    }
}
