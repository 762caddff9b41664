//! Several channels on one stream: each event says which channel it came from, and each id lets
//! the server resume every channel of the set exactly.
//!
//! A [`MultiplexedSession`] merges one [`Session`] per channel into one stream framed by an outer
//! [`Transport`]. The channels' sessions are opened as usual ([`ChannelManager::subscribe`](crate::ChannelManager::subscribe)) but
//! with [`SubscribeOptions::for_multiplex`](crate::SubscribeOptions::for_multiplex) (an
//! internal transport whose frames this module reads back); everything else — resume,
//! replay pages, the snapshot rule, queue bounds, presence events — is the single-channel
//! machinery, per channel.
//!
//! On the wire (SSE; NDJSON carries the same fields):
//!
//! - `event:` is the channel's label (`comments/123`), or `label:name` for a named event
//!   (`comments/123:comment-added`, `comments/123:presence`). Labels hold no `:`, so the first
//!   `:` splits them.
//! - `id:` is the position of **every** channel of the connection, in the order the channels
//!   were given ([`encode_positions`]): `~` then one entry per channel, separated by `.`. An
//!   entry is empty (no position yet: the channel starts afresh on a reconnect), a full event
//!   id (`k3f9-17`), or `-17` (the same epoch as the previous entry, which keeps the id short
//!   when every channel lives on one broker). A browser's `EventSource` sends the last one back
//!   as `Last-Event-ID`, and [`decode_positions`] gives each channel its own resume point.
//! - A channel whose history cannot reach back gets its own `reset` event, whose data names it:
//!   `{"reason":"history-trimmed","channel":"comments/123"}`; the other channels resume exactly.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use ssehub_core::{ChannelManager, Sse, SubscribeOptions};
//! use ssehub_core::multiplex::MultiplexedSession;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let broker = ssehub_memory::MemoryBroker::new();
//! let comments = ChannelManager::<serde_json::Value>::builder(broker.clone())
//!     .key_prefix("comments").build()?;
//! let votes = ChannelManager::<serde_json::Value>::builder(broker)
//!     .key_prefix("votes").build()?;
//!
//! let tagged = || SubscribeOptions::new().for_multiplex().from_tail(true);
//! let mut stream = MultiplexedSession::new(Arc::new(Sse), None, None)
//!     .channel("comments/123", comments.subscribe("123", tagged()).await?)?
//!     .channel("votes/123", votes.subscribe("123", tagged()).await?)?;
//!
//! let id = votes.publish("123", &serde_json::json!({"up": 1})).await?;
//! let frame = stream.next().await.unwrap();
//! // The first channel has no position yet (empty entry), the second is at `id`.
//! assert_eq!(frame, format!("id: ~.{id}\nevent: votes/123\ndata: {{\"up\":1}}\n\n"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;

use crate::backend::{StreamPosition, epoch_len};
use crate::error::{Error, Result};
use crate::id::{EventId, EventName, MAX_EVENT_ID_LEN};
use crate::session::Session;
use crate::transport::Transport;

mod tagged;

use tagged::Record;
// Public only for the HTTP adapter, which builds the channel sessions of a multiplexed stream:
// its bytes are an internal record format, never a wire format, so it stays out of the docs.
#[doc(hidden)]
pub use tagged::Tagged;

/// The first byte of a multiplexed id.
const ID_MARK: char = '~';

/// The multiplexed id of these per-channel positions, in channel order (see the
/// [module docs](self)). Always non-empty, and made of id bytes only (`[A-Za-z0-9._~-]`).
///
/// ```
/// use ssehub_core::EventId;
/// use ssehub_core::multiplex::{decode_positions, encode_positions};
///
/// let p = |s| Some(EventId::parse(s).unwrap());
/// let text = encode_positions(&[p("k3f9-17"), None, p("k3f9-20"), p("other-1-0")]);
/// assert_eq!(text, "~k3f9-17..-20.other-1-0");
/// let back = decode_positions(&text, 4).unwrap();
/// assert_eq!(back, [Some("k3f9-17".into()), None, Some("k3f9-20".into()), Some("other-1-0".into())]);
/// ```
#[must_use]
pub fn encode_positions(positions: &[Option<EventId>]) -> String {
    encode(
        positions
            .iter()
            .map(|p| p.as_ref().map(|id| (id, epoch_len(id.as_str())))),
    )
}

/// [`encode_positions`] over borrowed positions, each with the length of its epoch when it is a
/// canonical position (`None`: an id of a broker of its own kind). Nothing is parsed here: a
/// canonical id is its epoch, `-`, and its offset, so the short form is the id past its epoch.
fn encode<'a>(
    positions: impl ExactSizeIterator<Item = Option<(&'a EventId, Option<usize>)>> + Clone,
) -> String {
    let len = positions
        .clone()
        .map(|p| p.map_or(0, |(id, _)| id.as_str().len() * 2) + 1)
        .sum::<usize>();
    let mut out = String::with_capacity(1 + len);
    out.push(ID_MARK);
    let mut epoch: Option<&str> = None;
    for (i, p) in positions.enumerate() {
        if i > 0 {
            out.push('.');
        }
        let Some((id, epoch_len)) = p else { continue };
        let text = id.as_str();
        match epoch_len {
            Some(n) => {
                let (this, offset) = text.split_at(n);
                if epoch == Some(this) {
                    out.push_str(offset);
                } else {
                    out.push_str(text);
                }
                epoch = Some(this);
            }
            // Not a position (a broker of its own kind): `_`, then the id with `_` and `.`
            // escaped, so the entry can neither end early nor look like the short form.
            None => {
                out.push('_');
                for c in text.chars() {
                    match c {
                        '_' => out.push_str("_u"),
                        '.' => out.push_str("_d"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out
}

/// The longest multiplexed id [`decode_positions`] reads for `channels` channels.
#[must_use]
pub fn max_positions_len(channels: usize) -> usize {
    // Each entry at most an escaped id (every byte doubled, plus the `_`) and its separator.
    1 + channels.saturating_mul(2 * MAX_EVENT_ID_LEN + 2)
}

/// The per-channel resume points in a multiplexed id from a client, for `channels` channels:
/// `None` when it is not one (too long, not marked, more entries than channels, an entry that
/// does not decode). Fewer entries than channels leave the rest without a position. Each
/// `Some` entry is untrusted text still to be parsed by the channel's broker. Linear in the
/// input, never panics.
#[must_use]
pub fn decode_positions(text: &str, channels: usize) -> Option<Vec<Option<String>>> {
    if text.len() > max_positions_len(channels) {
        return None;
    }
    let body = text.strip_prefix(ID_MARK)?;
    if body.is_empty() {
        // No channel has a position (or there is no channel).
        return Some(vec![None; channels]);
    }
    let mut out = Vec::with_capacity(channels);
    let mut epoch: Option<String> = None;
    for entry in body.split('.') {
        if out.len() == channels {
            return None;
        }
        let decoded = if entry.is_empty() {
            None
        } else if let Some(offset) = entry.strip_prefix('-') {
            let full = format!("{}-{offset}", epoch.as_deref()?);
            StreamPosition::parse(&full)?;
            Some(full)
        } else if let Some(raw) = entry.strip_prefix('_') {
            Some(unescape(raw)?)
        } else {
            let pos = StreamPosition::parse(entry)?;
            epoch = Some(pos.epoch().to_owned());
            Some(entry.to_owned())
        };
        if let Some(full) = decoded.as_deref().and_then(StreamPosition::parse) {
            epoch = Some(full.epoch().to_owned());
        }
        out.push(decoded);
    }
    out.resize(channels, None);
    Some(out)
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                'u' => out.push('_'),
                'd' => out.push('.'),
                _ => return None,
            },
            '.' => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// One channel of a [`MultiplexedSession`].
struct Part {
    label: EventName,
    session: Session,
    position: Option<EventId>,
    /// The length of `position`'s epoch when it is a canonical position, found once when the
    /// position changes rather than for every event of every channel.
    epoch_len: Option<usize>,
}

impl Part {
    fn set_position(&mut self, id: EventId) {
        self.epoch_len = epoch_len(id.as_str());
        self.position = Some(id);
    }
}

/// Several channels' sessions as one stream of frames, ready to be an HTTP response body.
///
/// Built with [`new`](Self::new) and one [`channel`](Self::channel) per channel, in the order
/// of the client's list (the order of the entries of its ids). Each poll yields everything the
/// channels have queued as one chunk. The stream ends when any channel's session ends (server
/// shutdown, a slow client, a lost broker, a revoked or expired session): the client
/// reconnects with its last id and every channel resumes where it was.
pub struct MultiplexedSession {
    parts: Vec<Part>,
    transport: Arc<dyn Transport>,
    head: Option<Bytes>,
    keep_alive: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// Where the next poll starts, so no channel starves the others.
    next: usize,
    ended: bool,
}

impl fmt::Debug for MultiplexedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiplexedSession")
            .field(
                "channels",
                &self
                    .parts
                    .iter()
                    .map(|p| p.label.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("transport", &self.transport.name())
            .finish_non_exhaustive()
    }
}

impl MultiplexedSession {
    /// An empty stream framed by `transport`, which starts with a `retry:` hint when `retry` is
    /// set and sends a keep-alive after `keep_alive` of silence.
    #[must_use]
    pub fn new(
        transport: Arc<dyn Transport>,
        retry: Option<Duration>,
        keep_alive: Option<Duration>,
    ) -> Self {
        let head = retry.map(|r| transport.retry(r));
        MultiplexedSession {
            parts: Vec::new(),
            transport,
            head,
            keep_alive: keep_alive
                .filter(|d| !d.is_zero())
                .map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            next: 0,
            ended: false,
        }
    }

    /// Add the channel labelled `label` (the `event` field of its events): its `session`,
    /// opened with [`SubscribeOptions::for_multiplex`](crate::SubscribeOptions::for_multiplex) (and [`from_tail`](crate::SubscribeOptions::from_tail),
    /// so a fresh channel has a position too). The channel's position starts at
    /// [`Session::start_position`]; a channel without one (an empty topic, a `reset`) has none
    /// until its first event. The label must be non-empty, without `:` and
    /// control characters, and not `reset`.
    pub fn channel(mut self, label: &str, session: Session) -> Result<Self> {
        if label.is_empty()
            || label == crate::id::RESET_EVENT
            || label.contains(':')
            || label.chars().any(char::is_control)
        {
            return Err(Error::InvalidConfig {
                reason: "a channel label is not empty and holds no ':' and no control character"
                    .into(),
            });
        }
        if session.transport().name() != Tagged.name() {
            return Err(Error::InvalidConfig {
                reason:
                    "a multiplexed channel's session is opened with SubscribeOptions::for_multiplex"
                        .into(),
            });
        }
        let position = session.start_position().cloned();
        self.parts.push(Part {
            label: EventName::from_trusted(label.to_owned()),
            epoch_len: position.as_ref().and_then(|id| epoch_len(id.as_str())),
            session,
            position,
        });
        Ok(self)
    }

    /// How many channels the stream carries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether it carries no channel.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The sessions, in channel order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.parts.iter().map(|p| &p.session)
    }

    /// The id of the connection's current positions.
    fn id(&self) -> EventId {
        EventId::from_trusted(encode(
            self.parts
                .iter()
                .map(|p| p.position.as_ref().map(|id| (id, p.epoch_len))),
        ))
    }

    /// Re-frame one channel's chunk of `Tagged` records into `out`.
    fn reframe(&mut self, index: usize, chunk: &[u8], out: &mut BytesMut) {
        for record in tagged::records(chunk) {
            match record {
                Record::Event { id, name, data } => {
                    let part = &mut self.parts[index];
                    let outer_name = if name == EventName::MESSAGE.as_str() {
                        part.label.clone()
                    } else {
                        EventName::from_trusted(format!("{}:{name}", part.label.as_str()))
                    };
                    let id = match id {
                        Some(id) => {
                            part.set_position(id);
                            Some(self.id())
                        }
                        None => None,
                    };
                    out.extend_from_slice(&self.transport.event(id.as_ref(), &outer_name, data));
                }
                Record::Reset { reason, id } => {
                    // A reset with an id moves the channel there (what it replaces is covered by
                    // the refetch); without one the position stays where it is, as a browser's
                    // `lastEventId` does on a single-channel stream (a session that starts with a
                    // reset has its start position from `from_tail`, never the client's old id).
                    if let Some(id) = id {
                        self.parts[index].set_position(id);
                    }
                    let composite = self.id();
                    let label = self.parts[index].label.as_str();
                    out.extend_from_slice(&self.transport.channel_reset(
                        label,
                        reason,
                        Some(&composite),
                    ));
                }
                Record::Retry(after) => out.extend_from_slice(&self.transport.retry(after)),
                // The multiplexed stream keeps itself alive.
                Record::KeepAlive => {}
            }
        }
    }
}

impl Stream for MultiplexedSession {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let mut out = BytesMut::new();
        if let Some(head) = this.head.take() {
            out.extend_from_slice(&head);
        }
        let n = this.parts.len();
        for k in 0..n {
            let i = (this.next + k) % n;
            // Everything this channel has queued now (a session yields all of it at once).
            match Pin::new(&mut this.parts[i].session).poll_next(cx) {
                Poll::Ready(Some(chunk)) => this.reframe(i, &chunk, &mut out),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {}
            }
        }
        if n > 0 {
            this.next = (this.next + 1) % n;
        }
        if !out.is_empty() {
            if let Some((every, sleep)) = this.keep_alive.as_mut() {
                sleep.as_mut().reset(crate::session::after(*every));
            }
            return Poll::Ready(Some(out.freeze()));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some((every, sleep)) = this.keep_alive.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            sleep.as_mut().reset(crate::session::after(*every));
            return Poll::Ready(Some(this.transport.keep_alive()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Option<EventId> {
        Some(EventId::parse(s).unwrap())
    }

    #[test]
    fn positions_round_trip_and_share_epochs() {
        let cases: Vec<Vec<Option<EventId>>> = vec![
            vec![],
            vec![None],
            vec![None, None, None],
            vec![id("a1-5"), id("a1-6"), id("b2-1"), id("b2-9-0")],
            vec![
                id("plain"),
                id("x_y.z"),
                id("_lead"),
                id("-dash"),
                id("a1-1"),
            ],
        ];
        for positions in cases {
            let text = encode_positions(&positions);
            assert!(text.starts_with('~'));
            assert!(EventId::from_trusted(text.clone()).as_str().len() == text.len());
            let back = decode_positions(&text, positions.len()).unwrap();
            let want: Vec<Option<String>> = positions
                .iter()
                .map(|p| p.as_ref().map(|i| i.as_str().to_owned()))
                .collect();
            if positions.is_empty() {
                assert_eq!(back, Vec::<Option<String>>::new());
            } else {
                assert_eq!(back, want, "{text}");
            }
        }
        assert_eq!(
            encode_positions(&[id("a1-5"), id("a1-6"), id("a1-7-2")]),
            "~a1-5.-6.-7-2"
        );
    }

    #[test]
    fn bad_multiplexed_ids_are_refused() {
        for bad in [
            "",
            "a1-5",
            "~a1-5.a1-6.a1-7",
            "~-5",
            "~a1-0",
            "~_",
            "~_a_x",
            "~a1-5.-x",
        ] {
            assert_eq!(decode_positions(bad, 2), None, "{bad:?}");
        }
        assert_eq!(
            decode_positions("~a1-5", 3).unwrap(),
            [Some("a1-5".into()), None, None]
        );
        let long = format!("~{}", "9".repeat(max_positions_len(1)));
        assert_eq!(decode_positions(&long, 1), None);
    }

    /// The encoding as it was written before epochs were cached: every id parsed as a position.
    fn encode_by_parsing(positions: &[Option<EventId>]) -> String {
        let mut out = String::from(ID_MARK);
        let mut epoch: Option<StreamPosition> = None;
        for (i, p) in positions.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            let Some(id) = p else { continue };
            match StreamPosition::from_event_id(id) {
                Some(pos) => {
                    match &epoch {
                        Some(prev) if prev.epoch() == pos.epoch() => {
                            out.push('-');
                            out.push_str(&pos.offset().to_string());
                        }
                        _ => out.push_str(id.as_str()),
                    }
                    epoch = Some(pos);
                }
                None => {
                    out.push('_');
                    out.push_str(&id.as_str().replace('_', "_u").replace('.', "_d"));
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// Ids from a few epochs, canonical or not (leading zeros, zero offsets, stray `-`,
        /// `_` and `.`): the short forms cut from the text are what parsing gave, and decode
        /// gives the ids back.
        #[test]
        fn encoding_without_parsing_is_encoding_by_parsing(
            ids in proptest::collection::vec(
                proptest::option::of("(a1|b2|Zz9)(-(0|[1-9][0-9]{0,3}|0[0-9])){1,3}|[a-z_.-]{1,6}"),
                0..8,
            )
        ) {
            let positions: Vec<Option<EventId>> = ids
                .iter()
                .map(|s| s.as_deref().and_then(|s| EventId::parse(s).ok()))
                .collect();
            let text = encode_positions(&positions);
            proptest::prop_assert_eq!(&text, &encode_by_parsing(&positions));
            if !positions.is_empty() {
                let want: Vec<Option<String>> = positions
                    .iter()
                    .map(|p| p.as_ref().map(|i| i.as_str().to_owned()))
                    .collect();
                proptest::prop_assert_eq!(decode_positions(&text, positions.len()), Some(want));
            }
        }
    }
}
