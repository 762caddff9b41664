//! SSE framing against a spec-following parser: the parser is first checked against the shared
//! WHATWG vectors, then used as the oracle for property tests of [`Sse`] framing.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use ssehub::{EventId, EventName, Ndjson, Sse, Topic, Transport};
use ssehub_core::sse_parser::{SseParser, parse_all};

#[derive(serde::Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    wire: String,
    events: Vec<VectorEvent>,
    retry: Option<u64>,
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct VectorEvent {
    event: String,
    id: Option<String>,
    data: String,
}

#[test]
fn test_parser_matches_the_whatwg_vectors() {
    let vectors: Vectors =
        serde_json::from_str(include_str!("data/sse-parse-vectors.json")).expect("vectors");
    assert!(vectors.cases.len() >= 20);
    for case in &vectors.cases {
        // Whole, and split at every byte boundary.
        for split in 0..=case.wire.len() {
            let mut p = SseParser::new();
            let wire = case.wire.as_bytes();
            p.feed(&wire[..split]);
            p.feed(&wire[split..]);
            let got: Vec<VectorEvent> = p
                .take_events()
                .into_iter()
                .map(|e| VectorEvent {
                    event: e.event,
                    id: e.id,
                    data: e.data,
                })
                .collect();
            assert_eq!(got, case.events, "case {:?} split at {split}", case.name);
            assert_eq!(p.retry(), case.retry, "case {:?} retry", case.name);
        }
    }
}

fn name_strategy() -> impl Strategy<Value = String> {
    // Any text, including control characters: invalid names must be refused, not framed.
    prop_oneof!["[a-z][a-z0-9-]{0,20}", any::<String>(), " *[^\r\n\0]{0,10}",]
}

fn data_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just("\r\n".to_owned()),
                Just("\r".to_owned()),
                Just("\n".to_owned()),
                Just(" ".to_owned()),
                Just("data: x".to_owned()),
                Just("é🌍".to_owned()),
                "[a-z ]{0,5}",
            ],
            0..12
        )
        .prop_map(|v| v.concat()),
    ]
}

/// What a conforming reader must see for `data`: every line ending becomes LF.
fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn sse_frames_parse_back_whatever_the_chunks(
        name in name_strategy(),
        id in "[A-Za-z0-9._~-]{1,40}",
        data in data_strategy(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let id = EventId::parse(&id).expect("id from the allowed alphabet");
        let Ok(name) = EventName::new(&name) else {
            // Refused names never reach the wire; they must be the ones a frame cannot carry.
            prop_assert!(name.is_empty() || name.chars().any(char::is_control)
                || name == "reset" || name.len() > 128);
            return Ok(());
        };
        let mut wire = Sse.retry(std::time::Duration::from_millis(1500)).to_vec();
        wire.extend_from_slice(&Sse.keep_alive());
        wire.extend_from_slice(&Sse.event(Some(&id), &name, data.as_bytes()));
        wire.extend_from_slice(&Sse.event(None, &EventName::MESSAGE, b"second"));
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut p = SseParser::new();
        let mut last = 0;
        for at in points.into_iter().chain([wire.len()]) {
            p.feed(&wire[last..at]);
            last = at;
        }
        let events = p.take_events();
        prop_assert_eq!(events.len(), 2);
        prop_assert_eq!(&events[0].event, name.as_str());
        prop_assert_eq!(events[0].id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(&events[0].data, &normalized(&data));
        // The un-ided event keeps the last id (so a reconnect resumes after the first).
        prop_assert_eq!(events[1].id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(&events[1].data, "second");
        prop_assert_eq!(p.retry(), Some(1500));
    }

    #[test]
    fn data_can_never_forge_fields(data in data_strategy()) {
        let forged = format!("{data}\r\nevent: x\nid: 666\rretry: 1\n\ndata: y");
        let (events, retry) = parse_all(&Sse.event(None, &EventName::MESSAGE, forged.as_bytes()));
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(events[0].event.as_str(), "message");
        prop_assert_eq!(events[0].id.as_deref(), None);
        prop_assert_eq!(retry, None);
    }

    #[test]
    fn last_event_id_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(id) = EventId::parse_bytes(&bytes) {
            prop_assert!(id.as_str().len() <= 128);
            let frame = Sse.event(Some(&id), &EventName::MESSAGE, b"x");
            let (events, _) = parse_all(&frame);
            prop_assert_eq!(events[0].id.as_deref(), Some(id.as_str()));
        }
    }

    #[test]
    fn resource_ids_either_refused_or_one_topic_part(id in any::<String>()) {
        if let Ok(topic) = Topic::from_parts(Some("p"), &id, Some("s")) {
            prop_assert_eq!(topic.parts().count(), 3);
            let forbidden = |c: char| {
                c.is_control() || c.is_whitespace() || "*?[]>{}\\:,/^$".contains(c)
            };
            prop_assert!(!id.chars().any(forbidden), "accepted {:?}", id);
        }
    }

    #[test]
    fn ndjson_is_one_json_line_per_event(name in "[a-z]{1,8}", data in data_strategy()) {
        let name = EventName::new(&name).expect("name");
        let line = Ndjson.event(None, &name, data.as_bytes());
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        prop_assert_eq!(v["event"].as_str(), Some(name.as_str()));
    }
}

fn position_strategy() -> impl Strategy<Value = Option<EventId>> {
    // Positions of a few epochs (so entries share them), and ids of other brokers' kinds.
    let id = prop_oneof![
        ("(a1|b2|k3f9)", 1u64..1_000_000).prop_map(|(e, n)| format!("{e}-{n}")),
        ("(a1|b2)", 1u64..u64::MAX, 0u64..9).prop_map(|(e, a, b)| format!("{e}-{a}-{b}")),
        "[A-Za-z0-9._~-]{1,40}",
    ];
    proptest::option::of(id.prop_map(|s| EventId::parse(&s).unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A multiplexed id gives back every channel's position, and is itself a valid id text.
    #[test]
    fn multiplexed_ids_round_trip(positions in proptest::collection::vec(position_strategy(), 0..40)) {
        use ssehub_core::multiplex::{decode_positions, encode_positions, max_positions_len};
        let text = encode_positions(&positions);
        prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
        prop_assert!(text.len() <= max_positions_len(positions.len()));
        let back = decode_positions(&text, positions.len()).unwrap();
        let want: Vec<Option<String>> =
            positions.iter().map(|p| p.as_ref().map(|i| i.as_str().to_owned())).collect();
        prop_assert_eq!(back, want);
    }

    /// Any client text is decoded or refused, never a panic; what decodes has at most as many
    /// entries as channels.
    #[test]
    fn multiplexed_id_decoding_takes_any_input(text in any::<String>(), channels in 0usize..40) {
        if let Some(entries) = ssehub_core::multiplex::decode_positions(&text, channels) {
            prop_assert_eq!(entries.len(), channels);
        }
    }
}
