//! The client-facing wire: how events, keep-alives, retry hints and resets become bytes.
//!
//! [`Sse`] writes spec-exact `text/event-stream`; [`Ndjson`] writes newline-delimited JSON for
//! `fetch`-based readers. Framing is infallible: ids and names are validated types
//! ([`EventId`], [`EventName`]) and data is split into lines, so no input can forge a field.
//!
//! # Example
//!
//! ```
//! use ssehub_core::{EventId, EventName, Sse, Transport};
//!
//! let id = EventId::parse("7").unwrap();
//! let frame = Sse.event(Some(&id), &EventName::MESSAGE, b"line one\nline two");
//! assert_eq!(&frame[..], b"id: 7\ndata: line one\ndata: line two\n\n");
//! assert_eq!(&Sse.keep_alive()[..], b":\n\n");
//! ```

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::id::{EventId, EventName, RESET_EVENT};

/// Why a stream starts over instead of resuming: the `reason` of the `reset` event's data,
/// serialized as a short kebab-case string (`"out-of-window"`). New reasons may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[non_exhaustive]
pub enum ResetReason {
    /// The `Last-Event-ID` could not be parsed.
    MalformedId,
    /// The id cannot be placed in the broker's history (unknown, or not an event of this
    /// channel); the more precise reasons below say why when the broker can tell.
    OutOfWindow,
    /// The broker has no history at all.
    NoHistory,
    /// Live events were lost while the server was disconnected from the broker.
    BrokerGap,
    /// The client was too far behind to be caught up event by event: more missed events than
    /// the replay budget, or more live events during its replay than its queue holds.
    Overflow,
    /// The id is older than the history the broker keeps (trimmed by length or by age).
    HistoryTrimmed,
    /// The id is from another epoch: the broker, or the channel's history, was restarted without
    /// its data or flushed.
    EpochChanged,
    /// The broker no longer holds events it had acknowledged (a failover to a replica that had
    /// not copied them): the id is newer than anything it has.
    DataLost,
}

impl ResetReason {
    /// The reason as the short string sent to clients.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::MalformedId => "malformed-id",
            ResetReason::OutOfWindow => "out-of-window",
            ResetReason::NoHistory => "no-history",
            ResetReason::BrokerGap => "broker-gap",
            ResetReason::Overflow => "overflow",
            ResetReason::HistoryTrimmed => "history-trimmed",
            ResetReason::EpochChanged => "epoch-changed",
            ResetReason::DataLost => "data-lost",
        }
    }
}

/// The data of the `reset` event: `{"reason":"out-of-window"}` (SSE), and the fields besides
/// `"type":"reset"` of the NDJSON `reset` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[non_exhaustive]
pub struct ResetPayload {
    /// Why the stream starts over.
    pub reason: ResetReason,
}

impl ResetPayload {
    /// The payload of a reset for `reason`.
    #[must_use]
    pub fn new(reason: ResetReason) -> Self {
        Self { reason }
    }
}

/// How one kind of stream frames what ssehub sends.
///
/// Implementations must produce, for every input, bytes that a conforming reader of
/// [`content_type`](Transport::content_type) decodes back into that input, and must never panic.
/// The one change allowed is the format's own: an SSE reader delivers every line break of the data
/// (CRLF, lone CR, LF) as LF, so data holding CR arrives with LF in its place (typed JSON events
/// never hold a raw CR). The hub frames each live event once per node and transport and shares
/// the bytes with every session.
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// A short stable name, used to share frames between sessions of the same transport.
    fn name(&self) -> &'static str;

    /// The `Content-Type` of the response.
    fn content_type(&self) -> &'static str;

    /// One event. `id` is `None` for events that are not resumable (the initial event).
    fn event(&self, id: Option<&EventId>, event: &EventName, data: &[u8]) -> Bytes;

    /// The reserved `reset` event: the client must refetch its state. With `id`, the reset also
    /// moves the client's resume position there (the events up to it are covered by the
    /// refetch), so a reconnect does not ask again for what the reset replaced.
    fn reset(&self, reason: ResetReason, id: Option<&EventId>) -> Bytes;

    /// The `reset` event of one channel of a multiplexed stream ([`crate::multiplex`]): the
    /// same event, whose data also names the channel (`{"reason":..,"channel":..}`). The
    /// default frames a plain [`reset`](Transport::reset), without the channel.
    fn channel_reset(&self, channel: &str, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        let _ = channel;
        self.reset(reason, id)
    }

    /// A no-op that keeps intermediaries from closing an idle connection.
    fn keep_alive(&self) -> Bytes;

    /// A hint of how long the client should wait before reconnecting.
    fn retry(&self, after: Duration) -> Bytes;
}

/// Spec-exact Server-Sent Events (`text/event-stream`), as a browser's `EventSource` reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sse;

impl Sse {
    fn write_data(buf: &mut BytesMut, data: &[u8]) {
        // One `data:` line per line of the payload; CRLF, lone CR and lone LF all end a line.
        let mut rest = data;
        loop {
            let end = rest.iter().position(|b| *b == b'\r' || *b == b'\n');
            buf.put_slice(b"data: ");
            match end {
                None => {
                    buf.put_slice(rest);
                    buf.put_u8(b'\n');
                    return;
                }
                Some(i) => {
                    buf.put_slice(&rest[..i]);
                    buf.put_u8(b'\n');
                    let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    rest = &rest[i + skip..];
                }
            }
        }
    }
}

impl Sse {
    fn reset_frame(channel: Option<&str>, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + channel.map_or(0, str::len));
        if let Some(id) = id {
            buf.put_slice(b"id: ");
            buf.put_slice(id.as_str().as_bytes());
            buf.put_u8(b'\n');
        }
        buf.put_slice(b"event: ");
        buf.put_slice(RESET_EVENT.as_bytes());
        buf.put_slice(b"\ndata: ");
        // JSON escapes every control character, so the payload is one `data:` line.
        put_json(&mut buf, &ChannelReset { reason, channel });
        buf.put_slice(b"\n\n");
        buf.freeze()
    }
}

/// The data of a `reset` event; `channel` only on a multiplexed stream.
#[derive(Serialize)]
struct ChannelReset<'a> {
    reason: ResetReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
}

impl Transport for Sse {
    fn name(&self) -> &'static str {
        "sse"
    }

    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn event(&self, id: Option<&EventId>, event: &EventName, data: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(data.len() + event.as_str().len() + 64);
        if let Some(id) = id {
            buf.put_slice(b"id: ");
            buf.put_slice(id.as_str().as_bytes());
            buf.put_u8(b'\n');
        }
        if *event != EventName::MESSAGE {
            buf.put_slice(b"event: ");
            buf.put_slice(event.as_str().as_bytes());
            buf.put_u8(b'\n');
        }
        Self::write_data(&mut buf, data);
        buf.put_u8(b'\n');
        buf.freeze()
    }

    fn reset(&self, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        Self::reset_frame(None, reason, id)
    }

    fn channel_reset(&self, channel: &str, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        Self::reset_frame(Some(channel), reason, id)
    }

    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(b":\n\n")
    }

    fn retry(&self, after: Duration) -> Bytes {
        Bytes::from(format!("retry: {}\n\n", after.as_millis()))
    }
}

/// Newline-delimited JSON, one object per line, for readers built on `fetch`.
///
/// Lines are `{"type":"event","id":..,"event":..,"data":..}` (data embedded as JSON when it is
/// valid JSON, else as a string), `{"type":"reset","reason":..}`, `{"type":"retry","ms":..}` and
/// `{"type":"keep-alive"}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ndjson;

impl Ndjson {
    fn reset_line(channel: Option<&str>, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        /// The NDJSON line: the payload's fields after `"type":"reset"`.
        #[derive(Serialize)]
        struct Line<'a> {
            r#type: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
            #[serde(flatten)]
            payload: ChannelReset<'a>,
        }
        let mut buf = BytesMut::with_capacity(64);
        put_json(
            &mut buf,
            &Line {
                r#type: RESET_EVENT,
                id: id.map(EventId::as_str),
                payload: ChannelReset { reason, channel },
            },
        );
        buf.put_u8(b'\n');
        buf.freeze()
    }
}

impl Transport for Ndjson {
    fn name(&self) -> &'static str {
        "ndjson"
    }

    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn event(&self, id: Option<&EventId>, event: &EventName, data: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(data.len() + 64);
        buf.put_slice(b"{\"type\":\"event\"");
        if let Some(id) = id {
            // Ids are [A-Za-z0-9._~-]: nothing to escape.
            buf.put_slice(b",\"id\":\"");
            buf.put_slice(id.as_str().as_bytes());
            buf.put_u8(b'"');
        }
        buf.put_slice(b",\"event\":");
        put_json_string(&mut buf, event.as_str());
        buf.put_slice(b",\"data\":");
        // Raw JSON is embedded only when it is one valid JSON value with no raw newline in it
        // (a newline would end the NDJSON line); anything else travels as a string.
        let raw_ok = !data.contains(&b'\n')
            && !data.contains(&b'\r')
            && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
        if raw_ok {
            buf.put_slice(data);
        } else {
            put_json_string(&mut buf, &String::from_utf8_lossy(data));
        }
        buf.put_slice(b"}\n");
        buf.freeze()
    }

    fn reset(&self, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        Self::reset_line(None, reason, id)
    }

    fn channel_reset(&self, channel: &str, reason: ResetReason, id: Option<&EventId>) -> Bytes {
        Self::reset_line(Some(channel), reason, id)
    }

    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(b"{\"type\":\"keep-alive\"}\n")
    }

    fn retry(&self, after: Duration) -> Bytes {
        Bytes::from(format!(
            "{{\"type\":\"retry\",\"ms\":{}}}\n",
            after.as_millis()
        ))
    }
}

/// `value` as JSON. ssehub's own wire types (structs of strings and unit enums) cannot fail to
/// serialize into memory.
fn put_json<T: Serialize>(buf: &mut BytesMut, value: &T) {
    if let Ok(v) = serde_json::to_vec(value) {
        buf.put_slice(&v);
    }
}

fn put_json_string(buf: &mut BytesMut, s: &str) {
    // serde_json's string escaping cannot fail for a &str.
    match serde_json::to_vec(s) {
        Ok(v) => buf.put_slice(&v),
        Err(_) => buf.put_slice(b"\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_named_event_and_line_endings() {
        let name = EventName::new("comment-added").unwrap();
        let f = Sse.event(None, &name, b"a\r\nb\rc\nd");
        assert_eq!(
            &f[..],
            b"event: comment-added\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        let f = Sse.event(None, &EventName::MESSAGE, b"");
        assert_eq!(&f[..], b"data: \n\n");
        let f = Sse.event(None, &EventName::MESSAGE, b" lead\n");
        assert_eq!(&f[..], b"data:  lead\ndata: \n\n");
    }

    #[test]
    fn sse_control_frames() {
        assert_eq!(&Sse.retry(Duration::from_secs(3))[..], b"retry: 3000\n\n");
        assert_eq!(
            &Sse.reset(ResetReason::OutOfWindow, None)[..],
            b"event: reset\ndata: {\"reason\":\"out-of-window\"}\n\n"
        );
    }

    #[test]
    fn reset_reason_serializes_as_its_str() {
        for r in [
            ResetReason::MalformedId,
            ResetReason::OutOfWindow,
            ResetReason::NoHistory,
            ResetReason::BrokerGap,
            ResetReason::Overflow,
            ResetReason::HistoryTrimmed,
            ResetReason::EpochChanged,
            ResetReason::DataLost,
        ] {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
            assert_eq!(
                &Sse.reset(r, None)[..],
                format!("event: reset\ndata: {{\"reason\":\"{}\"}}\n\n", r.as_str()).as_bytes()
            );
            assert_eq!(
                &Ndjson.reset(r, None)[..],
                format!("{{\"type\":\"reset\",\"reason\":\"{}\"}}\n", r.as_str()).as_bytes()
            );
        }
    }

    #[test]
    fn ndjson_lines() {
        let id = EventId::parse("1-2").unwrap();
        let f = Ndjson.event(Some(&id), &EventName::MESSAGE, br#"{"a":1}"#);
        assert_eq!(
            &f[..],
            br#"{"type":"event","id":"1-2","event":"message","data":{"a":1}}
"#
        );
        let f = Ndjson.event(None, &EventName::MESSAGE, b"not json\n");
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["data"], "not json\n");
        assert_eq!(f.iter().filter(|b| **b == b'\n').count(), 1);
    }
}
