//! Event ids as stream positions (`ssehub_core::backend::StreamPosition`): parsing untrusted
//! text never panics, accepts only the one canonical spelling (formatting a parsed position
//! gives back the very text), and orders positions of one epoch and one offset kind only.
#![no_main]

use std::cmp::Ordering;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ssehub_core::EventId;
use ssehub_core::backend::{Offset, StreamPosition};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    text: &'a str,
    other: &'a str,
    epoch: &'a str,
    a: u64,
    b: u64,
    pair: bool,
}

fuzz_target!(|input: Input<'_>| {
    // Canonical: one position, one text.
    if let Some(p) = StreamPosition::parse(input.text) {
        assert_eq!(p.to_string(), input.text);
        assert_eq!(p.to_event_id().as_str(), input.text);
        assert_eq!(EventId::parse(input.text).ok(), Some(p.to_event_id()));
        assert_eq!(p.order(&p), Some(Ordering::Equal));
        assert!(!matches!(p.offset(), Offset::Seq(0) | Offset::Pair(0, 0)));
        if let Some(q) = StreamPosition::parse(input.other) {
            let same_kind = matches!(
                (p.offset(), q.offset()),
                (Offset::Seq(_), Offset::Seq(_)) | (Offset::Pair(..), Offset::Pair(..))
            );
            let order = p.order(&q);
            assert_eq!(order.is_some(), p.epoch() == q.epoch() && same_kind);
            assert_eq!(order.map(Ordering::reverse), q.order(&p));
            assert_eq!(order == Some(Ordering::Equal), p == q);
        }
    }
    // Built positions round-trip through their text.
    let offset = if input.pair {
        Offset::Pair(input.a, input.b)
    } else {
        Offset::Seq(input.a)
    };
    if let Some(p) = StreamPosition::new(input.epoch, offset) {
        assert_eq!(StreamPosition::parse(&p.to_string()), Some(p.clone()));
        assert!(EventId::parse(p.to_event_id().as_str()).is_ok());
    }
});
