//! The lean HTTP/1 driver's request-head decision (`adapter-axum/src/serve/head.rs`): never
//! panics, waits only for a head shorter than the limit, and takes the lean path only for a
//! complete `GET` head that is all of the bytes, with no body, upgrade or expectation, and an
//! `Accept` naming `text/event-stream`; the same bytes given in two reads decide alike.
#![no_main]

#[allow(dead_code)]
#[path = "../../adapter-axum/src/serve/head.rs"]
mod head;

use arbitrary::Arbitrary;
use head::{Decision, Limits, classify};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    bytes: &'a [u8],
    /// Start from a valid stream request head with these bytes spliced in, so the lean path is
    /// reached often.
    spliced: bool,
    max_head: u16,
    max_headers: u8,
}

fuzz_target!(|input: Input<'_>| {
    let mut buf = Vec::new();
    if input.spliced {
        buf.extend_from_slice(b"GET /sse/a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
        buf.extend_from_slice(input.bytes);
        buf.extend_from_slice(b"\r\n\r\n");
    } else {
        buf.extend_from_slice(input.bytes);
    }
    let limits = Limits {
        max_head: usize::from(input.max_head).max(1),
        max_headers: usize::from(input.max_headers),
    };
    match classify(&buf, limits) {
        Decision::NeedMore => assert!(buf.len() < limits.max_head),
        Decision::Hyper => {}
        Decision::Lean(req) => {
            assert!(buf.len() <= limits.max_head);
            assert_eq!(req.method(), http::Method::GET);
            assert!(req.uri().path().starts_with('/'));
            for refused in ["transfer-encoding", "content-length", "upgrade", "expect"] {
                assert!(!req.headers().contains_key(refused), "{refused}");
            }
            let accept = req.headers().get_all("accept").iter();
            assert!(accept.into_iter().any(|v| {
                v.as_bytes()
                    .to_ascii_lowercase()
                    .windows(17)
                    .any(|w| w == b"text/event-stream")
            }));
            // The whole buffer is the head: no byte after it (pipelining goes to hyper), and a
            // head is only complete at its empty line.
            assert!(buf.ends_with(b"\n\n") || buf.ends_with(b"\n\r\n"));
            // Every strict prefix was incomplete.
            for cut in [buf.len() - 1, buf.len() / 2] {
                assert!(matches!(classify(&buf[..cut], limits), Decision::NeedMore));
            }
        }
    }
});
