//! Which connections the lean driver serves itself: [`classify`] reads the bytes received so
//! far and decides, without side effects, between waiting for more, serving an event stream
//! request itself, or handing the connection to hyper (with those bytes replayed).
//!
//! Pure (`httparse` and `http` only), so the fuzz target `lean_head` includes this file as a
//! module.

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

/// How much of a request head the lean driver reads before it hands the connection to hyper.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Bytes of head (request line, headers and the empty line); a longer head goes to hyper,
    /// which answers it as it would without the lean driver (`431` past its own limit).
    pub(crate) max_head: usize,
    /// Header lines; more go to hyper (whose own limit is 100).
    pub(crate) max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// Most header lines [`classify`] parses (the size of its stack array).
pub(crate) const MAX_HEADERS: usize = 64;

/// What to do with a connection given the bytes read so far.
#[derive(Debug)]
pub(crate) enum Decision {
    /// An incomplete head, within the limits: read more.
    NeedMore,
    /// A complete `GET` head asking for an event stream, with no body and nothing after it:
    /// serve it on the lean path.
    Lean(Box<Request<()>>),
    /// Anything else (another method, a body, an upgrade, HTTP/2's preface, a malformed or
    /// oversized head, bytes after the head): hand the connection to hyper, replaying `buf`.
    Hyper,
}

/// Decide what to do with a connection whose first bytes are `buf` (everything read so far).
///
/// [`Decision::Lean`] only for a complete head that is exactly `buf` (no pipelined bytes), no
/// longer than `limits.max_head`, method `GET`, HTTP/1.0 or 1.1, an origin-form target, an
/// `Accept` naming `text/event-stream`, exactly one `Host` on HTTP/1.1, and none of
/// `Transfer-Encoding`, `Content-Length`, `Upgrade`, `Expect`, `HTTP2-Settings` or a
/// `Connection: upgrade`. Everything odd is hyper's to answer, as it would without the lean
/// driver.
pub(crate) fn classify(buf: &[u8], limits: Limits) -> Decision {
    if !could_be_get(buf) {
        return Decision::Hyper;
    }
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage[..max_headers]);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < limits.max_head => {
            return Decision::NeedMore;
        }
        Ok(httparse::Status::Partial) | Err(_) => return Decision::Hyper,
    };
    if len != buf.len() || len > limits.max_head || req.method != Some("GET") {
        return Decision::Hyper;
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Decision::Hyper,
    };
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else {
        return Decision::Hyper;
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return Decision::Hyper;
    };
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .version(version);
    let mut wants_stream = false;
    let mut hosts = 0usize;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let refused = [
            "transfer-encoding",
            "content-length",
            "upgrade",
            "expect",
            "http2-settings",
        ];
        if refused
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
        {
            return Decision::Hyper;
        }
        if name.eq_ignore_ascii_case(b"connection") && has_token(h.value, b"upgrade") {
            return Decision::Hyper;
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
        if name.eq_ignore_ascii_case(b"accept")
            && contains_ignore_case(h.value, b"text/event-stream")
        {
            wants_stream = true;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Decision::Hyper;
        };
        builder = builder.header(name, value);
    }
    if !wants_stream || (version == Version::HTTP_11 && hosts != 1) || hosts > 1 {
        return Decision::Hyper;
    }
    match builder.body(()) {
        Ok(req) => Decision::Lean(Box::new(req)),
        Err(_) => Decision::Hyper,
    }
}

/// Whether `buf` may still begin a `GET` request (after the empty lines a request may start
/// with, as `httparse` allows): anything else goes to hyper without waiting for its whole head.
fn could_be_get(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let n = rest.len().min(4);
    rest[..n] == b"GET "[..n]
}

/// Whether a comma-separated header value lists `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether `hay` contains `needle`, ASCII case-insensitively.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(head: &str) -> Decision {
        classify(head.as_bytes(), Limits::default())
    }

    const STREAM: &str = "GET /sse/a?x=1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

    #[test]
    fn a_plain_stream_request_is_lean() {
        let Decision::Lean(req) = decide(STREAM) else {
            panic!("not lean");
        };
        assert_eq!(req.uri(), "/sse/a?x=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["accept"], "text/event-stream");
        let lf = "GET / HTTP/1.0\nACCEPT: Text/Event-Stream\n\n";
        assert!(matches!(decide(lf), Decision::Lean(_)));
    }

    #[test]
    fn an_incomplete_head_waits_and_an_oversized_one_goes_to_hyper() {
        for cut in 0..STREAM.len() {
            assert!(
                matches!(decide(&STREAM[..cut]), Decision::NeedMore),
                "{cut}"
            );
        }
        let limits = Limits {
            max_head: 20,
            max_headers: 64,
        };
        assert!(matches!(
            classify(&STREAM.as_bytes()[..20], limits),
            Decision::Hyper
        ));
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        let accept = "Host: x\r\nAccept: text/event-stream\r\n";
        for head in [
            format!("POST / HTTP/1.1\r\n{accept}\r\n"),
            format!("HEAD / HTTP/1.1\r\n{accept}\r\n"),
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            format!("GET / HTTP/1.1\r\n{accept}Content-Length: 0\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{accept}Transfer-Encoding: chunked\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{accept}Upgrade: websocket\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{accept}Connection: keep-alive, Upgrade\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{accept}Expect: 100-continue\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{accept}\r\nGET / HTTP/1.1\r\n"),
            format!("GET http://x/ HTTP/1.1\r\n{accept}\r\n"),
            format!("GET * HTTP/1.1\r\n{accept}\r\n"),
            "GET / HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n".to_owned(),
            format!("GET / HTTP/1.1\r\n{accept}Host: y\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{accept}X-Fold: a\r\n b\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{accept}X-Nul: a\0b\r\n\r\n"),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
            "PRI".to_owned(),
        ] {
            assert!(matches!(decide(&head), Decision::Hyper), "{head:?}");
        }
        let many: String = (0..70).map(|i| format!("X-{i}: 1\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{accept}{many}\r\n");
        assert!(matches!(decide(&head), Decision::Hyper));
    }

    /// The fuzz target's invariants (`fuzz/fuzz_targets/lean_head.rs`) over cheap mutations of
    /// a stream request head: a lean head is complete, is the whole buffer, and asks for a
    /// stream without a body or an upgrade; every shorter prefix waits for more.
    #[test]
    fn mutated_heads_keep_the_invariants() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"\r\n :GETtext/event-streamContent-Length0Upgrade\0\t,\xe9";
        for _ in 0..20_000 {
            let mut buf = STREAM.as_bytes().to_vec();
            for _ in 0..(next() % 4) {
                let at = usize::try_from(next() % buf.len() as u64).unwrap_or(0);
                let byte = alphabet[usize::try_from(next() % alphabet.len() as u64).unwrap_or(0)];
                match next() % 3 {
                    0 => buf[at] = byte,
                    1 => buf.insert(at, byte),
                    _ => {
                        buf.remove(at);
                    }
                }
            }
            if let Decision::Lean(req) = classify(&buf, Limits::default()) {
                assert_eq!(req.method(), Method::GET);
                assert!(
                    buf.ends_with(b"\n\n") || buf.ends_with(b"\n\r\n"),
                    "{buf:?}"
                );
                for name in ["transfer-encoding", "content-length", "upgrade", "expect"] {
                    assert!(!req.headers().contains_key(name), "{buf:?}");
                }
                for cut in [buf.len() - 1, buf.len() / 2] {
                    let d = classify(&buf[..cut], Limits::default());
                    assert!(matches!(d, Decision::NeedMore), "{:?}", &buf[..cut]);
                }
            }
        }
    }
}
