//! Where a reconnecting client's id comes from (`adapter-axum/src/resume.rs`): never panics, the
//! header wins and is taken as sent, and a `lastEventId` query value encoded the way
//! `URLSearchParams` encodes it decodes back to the text the client had.
#![no_main]

#[allow(dead_code)]
#[path = "../../adapter-axum/src/resume.rs"]
mod resume;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ssehub_core::EventId;

use resume::last_event_id;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    header: Option<&'a [u8]>,
    query: Option<&'a str>,
    /// The id text a client had; encoded into a query below.
    id: &'a str,
    /// Raw `&`-free junk parameters before the id (never a `lastEventId` one)…
    before: Vec<&'a str>,
    /// …and raw junk after it (anything, another `lastEventId=` included: the first one wins).
    after: &'a str,
    /// Encoding variants: bit 0 leaves `*-._` as they are (as `URLSearchParams` does), bit 1
    /// writes lowercase hex.
    style: u8,
}

/// Encode like `URLSearchParams`: space as `+`, every other byte but letters and digits as
/// `%XX` (optionally leaving `*-._` alone, as browsers do).
fn form_encode(text: &str, style: u8) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || (style & 1 == 1 && matches!(b, b'*' | b'-' | b'.' | b'_')) {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else if style & 2 == 2 {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_id(id: &str) {
    // Whatever text came in, validating it never panics, and an accepted id is that text.
    if let Ok(parsed) = EventId::parse(id) {
        assert_eq!(parsed.as_str(), id);
    }
    let _ = EventId::parse_bytes(id.as_bytes());
}

fuzz_target!(|input: Input<'_>| {
    // 1. Arbitrary header and query: no panic; the header, when present, decides alone.
    let got = last_event_id(input.header, input.query);
    match input.header {
        Some(h) => {
            let lossy = String::from_utf8_lossy(h).into_owned();
            assert_eq!(got, (!h.is_empty()).then_some(lossy), "header {h:?}");
        }
        None if input.query.is_none() => assert_eq!(got, None),
        None => {}
    }
    if let Some(id) = &got {
        assert!(!id.is_empty(), "an empty id counts as no id");
        check_id(id);
    }

    // 2. A query built the way the TypeScript client builds it decodes back to the id.
    let mut params: Vec<String> = input
        .before
        .iter()
        .map(|j| j.replace('&', ""))
        .filter(|j| j.split('=').next() != Some("lastEventId"))
        .collect();
    params.push(format!(
        "lastEventId={}",
        form_encode(input.id, input.style)
    ));
    let mut query = params.join("&");
    if !input.after.is_empty() {
        query.push('&');
        query.push_str(input.after);
    }
    let want = (!input.id.is_empty()).then(|| input.id.to_owned());
    assert_eq!(last_event_id(None, Some(&query)), want, "query {query:?}");
    // The header still wins over it.
    if let Some(h) = input.header.filter(|h| !h.is_empty()) {
        assert_eq!(
            last_event_id(Some(h), Some(&query)),
            Some(String::from_utf8_lossy(h).into_owned())
        );
    }
    check_id(input.id);
});
