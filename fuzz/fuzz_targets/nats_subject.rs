//! Topic ↔ NATS subject (`backend-nats/src/subject.rs`): a topic's subject is one clean token per
//! part under the root and decodes back to the topic; a subject that decodes is the canonical
//! subject of its topic; token escaping round-trips and each text has exactly one token.
#![no_main]

#[allow(dead_code)]
#[path = "../../backend-nats/src/subject.rs"]
mod subject;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ssehub_core::Topic;

use subject::{
    escape_token, subject_topic, topic_subject, unescape_token, valid_prefix, valid_stream_name,
};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// A root, used when `valid_prefix` accepts it (else `ssehub`).
    root: &'a str,
    /// Topic parts, joined with `:` (used when `Topic::new` accepts the result).
    parts: Vec<&'a str>,
    /// The tail of a subject under the root…
    tail: &'a str,
    /// …and a whole arbitrary subject.
    subject: &'a str,
    text: &'a str,
    token: &'a str,
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn escape(text: &str) -> String {
    let mut s = String::new();
    escape_token(text, &mut s);
    s
}

fn check_token_shape(token: &str) {
    // `A-Z a-z 0-9 - _` and `~XX` with uppercase hex only: no `.`, `*`, `>`, whitespace.
    let b = token.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'~' {
            assert!(i + 2 < b.len(), "short escape in {token:?}");
            for h in &b[i + 1..i + 3] {
                assert!(matches!(h, b'0'..=b'9' | b'A'..=b'F'), "{token:?}");
            }
            i += 3;
        } else {
            assert!(is_plain(b[i]), "{token:?} holds {:?}", char::from(b[i]));
            i += 1;
        }
    }
}

fn check_topic(root: &str, topic: &Topic) {
    let s = topic_subject(root, topic);
    let rest = s
        .strip_prefix(root)
        .and_then(|r| r.strip_prefix('.'))
        .expect("subject starts with `<root>.`");
    assert!(s.is_ascii());
    assert!(!s.contains(['*', '>', ' ', '\t', '\r', '\n']), "{s:?}");
    assert!(s.split('.').all(|t| !t.is_empty()), "empty token in {s:?}");
    let tokens: Vec<&str> = rest.split('.').collect();
    assert_eq!(tokens.len(), topic.parts().count(), "{s:?} for {topic:?}");
    for (token, part) in tokens.iter().zip(topic.parts()) {
        check_token_shape(token);
        assert_eq!(unescape_token(token).as_deref(), Some(part));
    }
    assert_eq!(subject_topic(root, &s).as_ref(), Some(topic), "{s:?}");
}

fn check_subject(root: &str, subject: &str) {
    if let Some(t) = subject_topic(root, subject) {
        // Canonical: the one subject of that topic.
        assert_eq!(topic_subject(root, &t), subject, "{t:?}");
    }
}

fuzz_target!(|input: Input<'_>| {
    let root = if valid_prefix(input.root) {
        // Non-empty plain tokens, so `<root>.>` is a well-formed wildcard.
        let tokens_ok = |r: &str| {
            r.split('.')
                .all(|t| !t.is_empty() && t.bytes().all(is_plain))
        };
        assert!(input.root.len() <= 128 && tokens_ok(input.root));
        input.root
    } else {
        "ssehub"
    };
    if valid_stream_name(input.root) {
        assert!((1..=64).contains(&input.root.len()) && input.root.bytes().all(is_plain));
    }

    // Escaping: a clean token that decodes back; and each token decodes to one text only.
    for text in [input.text, input.token, input.tail] {
        let e = escape(text);
        check_token_shape(&e);
        assert_eq!(unescape_token(&e).as_deref(), Some(text));
    }
    for token in [input.token, input.text, input.tail] {
        if let Some(text) = unescape_token(token) {
            assert_eq!(escape(&text), token, "{token:?} decodes to {text:?}");
        }
    }

    // Topic → subject → topic.
    if let Ok(t) = Topic::new(input.parts.join(":")) {
        check_topic(root, &t);
        check_topic("ssehub", &t);
    }
    for text in [input.text, input.token] {
        if let Ok(t) = Topic::new(text) {
            check_topic(root, &t);
        }
    }

    // Subject → topic → subject.
    check_subject(root, input.subject);
    check_subject(root, &format!("{root}.{}", input.tail));
    check_subject("ssehub", input.subject);
});
