//! `Sse` framing against the spec-following `SseParser`: whatever id, name and data are accepted,
//! the frame parses back (in any chunking) to exactly one event carrying them, with the data's
//! line breaks as LF; control frames (`reset`, `retry`, keep-alive) parse as what they are.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ssehub_core::sse_parser::{ParsedEvent, SseParser};
use ssehub_core::{
    EventId, EventName, MAX_EVENT_ID_LEN, MAX_EVENT_NAME_LEN, RESET_EVENT, ResetReason, Sse,
    Transport,
};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// An id as text (rarely valid)…
    id: Option<&'a str>,
    /// …or as bytes mapped onto the id alphabet (always valid when 1..=128 long).
    id_alphabet: Option<Vec<u8>>,
    name: &'a str,
    data: &'a [u8],
    /// Where to cut the wire into chunks (each taken modulo the wire length + 1).
    cuts: Vec<u16>,
    retry_ms: u64,
    retry_secs: u64,
    retry_nanos: u32,
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";

fn id_oracle(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_EVENT_ID_LEN
        && text.bytes().all(|b| ID_ALPHABET.contains(&b))
}

fn name_oracle(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME_LEN
        && !name.chars().any(char::is_control)
        && name != RESET_EVENT
}

/// What a conforming reader delivers for `data`: the stream is UTF-8 decoded (lossily), lines
/// end at CRLF, lone CR or LF, and the data lines are joined with LF.
fn expected_data(data: &[u8]) -> String {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.push(b'\n');
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Feed `wire` to a fresh parser in the chunks `cuts` describe.
fn parse_chunked(wire: &[u8], cuts: &[u16]) -> SseParser {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) % (wire.len() + 1))
        .collect();
    points.sort_unstable();
    let mut p = SseParser::new();
    let mut last = 0;
    for at in points.into_iter().chain([wire.len()]) {
        p.feed(&wire[last..at]);
        last = at;
    }
    p
}

fn check_event_frame(input: &Input<'_>, id: Option<&EventId>, name: &EventName) {
    let frame = Sse.event(id, name, input.data);
    assert!(frame.ends_with(b"\n\n"), "frame must end with a blank line");
    assert!(!frame.contains(&b'\r'), "Sse never writes CR: {frame:?}");

    let mut p = parse_chunked(&frame, &input.cuts);
    let events = p.take_events();
    assert_eq!(
        events,
        vec![ParsedEvent {
            event: name.as_str().to_owned(),
            id: id.map(|i| i.as_str().to_owned()),
            data: expected_data(input.data),
        }],
        "frame {frame:?}"
    );
    assert_ne!(
        events[0].event, RESET_EVENT,
        "data or a name forged a reset"
    );
    assert_eq!(p.retry(), None, "an event frame carried a retry field");
    assert_eq!(p.comments(), 0);
    assert_eq!(p.last_event_id(), id.map_or("", EventId::as_str));

    // Two frames back to back stay two events; the second (id-less) keeps the first one's id,
    // as a browser would resume from it.
    let mut wire = frame.to_vec();
    wire.extend_from_slice(&Sse.event(None, &EventName::MESSAGE, input.data));
    let mut p = parse_chunked(&wire, &input.cuts);
    let events = p.take_events();
    assert_eq!(events.len(), 2, "wire {wire:?}");
    assert_eq!(events[1].event, "message");
    assert_eq!(events[1].id.as_deref(), id.map(EventId::as_str));
    assert_eq!(events[0].data, events[1].data);
}

fn check_control_frames(input: &Input<'_>) {
    // keep-alive: one comment, nothing else.
    let mut p = parse_chunked(&Sse.keep_alive(), &input.cuts);
    assert!(p.take_events().is_empty());
    assert_eq!(p.comments(), 1);
    assert_eq!(p.retry(), None);

    // retry: the reconnection time in milliseconds, no event.
    let mut p = parse_chunked(
        &Sse.retry(Duration::from_millis(input.retry_ms)),
        &input.cuts,
    );
    assert!(p.take_events().is_empty());
    assert_eq!(p.retry(), Some(input.retry_ms));
    let d = Duration::new(input.retry_secs, input.retry_nanos % 1_000_000_000);
    let frame = Sse.retry(d);
    let mut p = parse_chunked(&frame, &input.cuts);
    assert!(p.take_events().is_empty());
    // Any duration: digits only; a value past u64 milliseconds is ignored by the reader.
    assert_eq!(p.retry(), u64::try_from(d.as_millis()).ok(), "{frame:?}");

    // reset: one `reset` event whose data is the reason as JSON; with an id, that id (it moves
    // the client's resume position), else none.
    let id = input.id.and_then(|t| EventId::parse(t).ok());
    for reason in [
        ResetReason::MalformedId,
        ResetReason::OutOfWindow,
        ResetReason::NoHistory,
        ResetReason::BrokerGap,
        ResetReason::Overflow,
    ] {
        for with in [None, id.as_ref()] {
            let mut p = parse_chunked(&Sse.reset(reason, with), &input.cuts);
            assert_eq!(
                p.take_events(),
                vec![ParsedEvent {
                    event: RESET_EVENT.to_owned(),
                    id: with.map(|i| i.as_str().to_owned()),
                    data: format!("{{\"reason\":\"{}\"}}", reason.as_str()),
                }]
            );
            assert_eq!(p.retry(), None);
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    // Ids: accepted exactly when the documented rule says so.
    let mut id = None;
    if let Some(text) = input.id {
        let parsed = EventId::parse(text);
        assert_eq!(parsed.is_ok(), id_oracle(text), "EventId::parse({text:?})");
        if let Ok(p) = &parsed {
            assert_eq!(p.as_str(), text);
        }
        id = parsed.ok();
    }
    if let Some(raw) = &input.id_alphabet {
        let text: String = raw
            .iter()
            .map(|b| char::from(ID_ALPHABET[usize::from(*b) % ID_ALPHABET.len()]))
            .collect();
        let parsed = EventId::parse(&text);
        assert_eq!(parsed.is_ok(), (1..=MAX_EVENT_ID_LEN).contains(&text.len()));
        if parsed.is_ok() {
            id = parsed.ok();
        }
    }

    // Names: accepted exactly when the documented rule says so; refused ones never reach the
    // wire, so frame the data under the default name instead.
    let name = EventName::new(input.name);
    assert_eq!(
        name.is_ok(),
        name_oracle(input.name),
        "EventName::new({:?})",
        input.name
    );
    let name = name.unwrap_or_default();
    if name.as_str() != input.name {
        assert_eq!(name, EventName::MESSAGE);
    }

    check_event_frame(&input, id.as_ref(), &name);
    check_event_frame(&input, None, &EventName::MESSAGE);
    check_control_frames(&input);
});
