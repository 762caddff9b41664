//! Topic → NATS subject encoding and small text codecs.

use ssehub_core::Topic;

/// Escape one topic part (or any text) into a single NATS subject token.
///
/// `A-Z a-z 0-9 - _` stay as they are; every other byte of the UTF-8 text (including `~` itself,
/// `.`, `*`, `>`, whitespace and non-ASCII) becomes `~XX` (two uppercase hex digits). The result
/// never contains `.`, `*`, `>` or whitespace, and the mapping is injective (it can be undone).
pub(crate) fn escape_token(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push('~');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Undo [`escape_token`]; `None` when the text is not a valid escape.
pub(crate) fn unescape_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'~' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// `<root>.<part1>.<part2>…`: one escaped token per `:`-separated topic part.
pub(crate) fn topic_subject(root: &str, topic: &Topic) -> String {
    let mut s = String::with_capacity(root.len() + topic.as_str().len() * 2 + 8);
    s.push_str(root);
    for part in topic.parts() {
        s.push('.');
        escape_token(part, &mut s);
    }
    s
}

/// Whether `prefix` is usable as the root of subjects: non-empty dot-separated tokens of
/// `A-Z a-z 0-9 - _`, so `<prefix>.>` is a well-formed wildcard.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 128
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `name` is a usable JetStream stream name.
pub(crate) fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_and_reversible() {
        for text in [
            "abc",
            "a.b",
            "a*b",
            "a>b",
            "a b",
            "Zürich-été",
            "~7E",
            "a~b",
            "x_y-z",
        ] {
            let mut s = String::new();
            escape_token(text, &mut s);
            assert!(
                !s.contains(['.', '*', '>', ' ', '\t', '\r', '\n']),
                "{text:?} -> {s:?}"
            );
            assert!(s.is_ascii());
            assert_eq!(unescape_token(&s).as_deref(), Some(text));
        }
    }

    #[test]
    fn subjects_do_not_collide() {
        let pairs = [("a:b", "a.b"), ("a~2Eb", "a.b"), ("a:b", "a~3Ab")];
        for (x, y) in pairs {
            let (x, y) = (Topic::new(x).expect("x"), Topic::new(y).expect("y"));
            assert_ne!(topic_subject("p", &x), topic_subject("p", &y));
        }
        let t = Topic::new("discussion:1.2:comments").expect("topic");
        assert_eq!(
            topic_subject("ssehub", &t),
            "ssehub.discussion.1~2E2.comments"
        );
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("ssehub"));
        assert!(valid_prefix("app.sse"));
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
        assert!(valid_stream_name("SSEHUB"));
        assert!(!valid_stream_name("a.b"));
    }
}
