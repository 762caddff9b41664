//! [`StreamPosition`]: where an event sits in a topic's history, the one id form every broker
//! fills.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use crate::id::EventId;

/// Longest epoch accepted in a [`StreamPosition`], in bytes.
pub const MAX_EPOCH_LEN: usize = 64;

/// The offset of an event within one epoch of a topic's history.
///
/// Offsets of one kind order as their numbers do; offsets of different kinds never compare (a
/// broker uses one kind only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Offset {
    /// A sequence number (memory: a node-wide counter; NATS: the JetStream stream sequence).
    Seq(u64),
    /// A two-part offset (Redis: the stream entry id `<ms>-<seq>`).
    Pair(u64, u64),
}

impl Offset {
    /// The order of two offsets of the same kind; `None` across kinds.
    #[must_use]
    pub fn order(&self, other: &Offset) -> Option<Ordering> {
        match (self, other) {
            (Offset::Seq(a), Offset::Seq(b)) => Some(a.cmp(b)),
            (Offset::Pair(a, b), Offset::Pair(c, d)) => Some((a, b).cmp(&(c, d))),
            _ => None,
        }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offset::Seq(n) => write!(f, "{n}"),
            Offset::Pair(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// Where an event sits in a topic's history: the history's incarnation (`epoch`) and the
/// event's [`Offset`] within it.
///
/// Its text form, which is the event's [`EventId`], is `<epoch>-<n>` or `<epoch>-<a>-<b>`: the
/// epoch is 1 to [`MAX_EPOCH_LEN`] ASCII letters and digits, each number canonical decimal (no
/// sign, no leading zero), and the offset is never zero (no broker gives it: sequences start at
/// 1, Redis entry ids after `0-0`). Parsing accepts only that canonical spelling, so one position
/// has
/// exactly one id and an id from another epoch (a restarted broker, a recreated stream) is told
/// apart instead of replayed wrongly.
///
/// # Example
///
/// ```
/// use ssehub_core::backend::{Offset, StreamPosition};
///
/// let pos = StreamPosition::new("a1b2", Offset::Pair(1700, 3)).unwrap();
/// assert_eq!(pos.to_event_id().as_str(), "a1b2-1700-3");
/// assert_eq!(StreamPosition::parse("a1b2-1700-3"), Some(pos.clone()));
/// assert!(StreamPosition::parse("a1b2-01700-3").is_none()); // not canonical
/// let later = StreamPosition::new("a1b2", Offset::Pair(1700, 4)).unwrap();
/// assert_eq!(pos.order(&later), Some(std::cmp::Ordering::Less));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    epoch: Arc<str>,
    offset: Offset,
}

impl StreamPosition {
    /// A position, when `epoch` is a valid epoch and `offset` is not zero.
    #[must_use]
    pub fn new(epoch: &str, offset: Offset) -> Option<Self> {
        let zero = matches!(offset, Offset::Seq(0) | Offset::Pair(0, 0));
        (is_epoch(epoch) && !zero).then(|| StreamPosition {
            epoch: Arc::from(epoch),
            offset,
        })
    }

    /// Parse the text of an id; `None` when it is not a canonical position.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, offset) = split(text)?;
        Some(StreamPosition {
            epoch: Arc::from(epoch),
            offset,
        })
    }

    /// Parse an event id; `None` when it is not a canonical position.
    #[must_use]
    pub fn from_event_id(id: &EventId) -> Option<Self> {
        Self::parse(id.as_str())
    }

    /// The history incarnation.
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The offset within the epoch.
    #[must_use]
    pub fn offset(&self) -> Offset {
        self.offset
    }

    /// The order of two positions of one epoch; `None` across epochs or offset kinds.
    #[must_use]
    pub fn order(&self, other: &StreamPosition) -> Option<Ordering> {
        if self.epoch != other.epoch {
            return None;
        }
        self.offset.order(&other.offset)
    }

    /// The order of two event ids that parse as positions: what [`Broker::id_order`] answers for
    /// every backend whose ids are positions.
    ///
    /// [`Broker::id_order`]: crate::Broker::id_order
    #[must_use]
    pub fn order_ids(a: &EventId, b: &EventId) -> Option<Ordering> {
        Self::from_event_id(a)?.order(&Self::from_event_id(b)?)
    }

    /// The event id of this position.
    #[must_use]
    pub fn to_event_id(&self) -> EventId {
        // An epoch of at most 64 alphanumerics, `-` and decimal numbers: at most 106 id bytes.
        EventId::from_trusted(self.to_string())
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.offset)
    }
}

/// The epoch and offset of a canonical position's text (what [`StreamPosition::parse`]
/// accepts), without allocating.
fn split(text: &str) -> Option<(&str, Offset)> {
    let mut parts = text.split('-');
    let epoch = parts.next()?;
    let a = parse_canonical(parts.next()?)?;
    let offset = match parts.next() {
        None => Offset::Seq(a),
        Some(b) => Offset::Pair(a, parse_canonical(b)?),
    };
    let zero = matches!(offset, Offset::Seq(0) | Offset::Pair(0, 0));
    (parts.next().is_none() && is_epoch(epoch) && !zero).then_some((epoch, offset))
}

/// The length of the epoch of `text` when it is a canonical position, without allocating: the
/// rest of the text, from its `-`, is the offset.
pub(crate) fn epoch_len(text: &str) -> Option<usize> {
    split(text).map(|(epoch, _)| epoch.len())
}

/// Whether `s` is an epoch: 1 to [`MAX_EPOCH_LEN`] ASCII letters and digits.
#[must_use]
pub fn is_epoch(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_EPOCH_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A decimal `u64` in its one canonical spelling: digits only, no leading zero (but `0`).
#[must_use]
pub fn parse_canonical(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_positions_round_trip() {
        for text in ["a-1", "ab12-1700-3", "Z-18446744073709551615", "x-0-1"] {
            let pos = StreamPosition::parse(text).expect(text);
            assert_eq!(pos.to_event_id().as_str(), text);
        }
        for bad in [
            "",
            "a",
            "a-",
            "-1",
            "a-0",
            "a-0-0",
            "a-01",
            "a-+1",
            "a--1",
            "a-1-2-3",
            "a.b-1",
            "a-1-",
            "a-1-02",
            "a-18446744073709551616",
        ] {
            assert!(StreamPosition::parse(bad).is_none(), "{bad}");
        }
        let long = format!("{}-1", "e".repeat(65));
        assert!(StreamPosition::parse(&long).is_none());
    }

    #[test]
    fn order_is_within_one_epoch_and_kind() {
        let p = |s: &str| StreamPosition::parse(s).expect(s);
        assert_eq!(p("e-1-2").order(&p("e-1-10")), Some(Ordering::Less));
        assert_eq!(p("e-9").order(&p("e-10")), Some(Ordering::Less));
        assert_eq!(p("e-9").order(&p("f-10")), None);
        assert_eq!(p("e-9").order(&p("e-9-0")), None);
    }
}
