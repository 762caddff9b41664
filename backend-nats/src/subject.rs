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

/// Undo [`escape_token`]; `None` unless `token` is exactly what [`escape_token`] writes for some
/// text (uppercase hex, only bytes it escapes), so each text has one token and each token one text.
pub(crate) fn unescape_token(token: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'~' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            let decoded = hi << 4 | lo;
            if plain(decoded) {
                return None;
            }
            out.push(decoded);
            i += 3;
        } else if plain(b) {
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

/// Undo [`topic_subject`]: the topic whose subject under `root` is `subject`, or `None` when no
/// topic has that subject (a token that is not canonical, or that decodes to text holding the `:`
/// separator, which would add a part).
// The inverse of `topic_subject`: the fuzz target `nats_subject` checks the round trip with it.
#[allow(dead_code)]
pub(crate) fn subject_topic(root: &str, subject: &str) -> Option<Topic> {
    let rest = subject.strip_prefix(root)?.strip_prefix('.')?;
    let mut topic = String::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        let part = unescape_token(token)?;
        if part.contains(':') {
            return None;
        }
        if i > 0 {
            topic.push(':');
        }
        topic.push_str(&part);
    }
    Topic::new(topic).ok()
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
    fn only_canonical_tokens_decode() {
        // Lowercase hex, an escaped plain byte, a sign, a short escape: never written, refused.
        for bad in ["~2e", "~61", "~+1", "~2", "~", "a.b", "a b", "~G0", "~C3"] {
            assert_eq!(unescape_token(bad), None, "{bad:?}");
        }
        assert_eq!(unescape_token("~C3~A9").as_deref(), Some("é"));
    }

    #[test]
    fn subjects_decode_to_their_topic_only() {
        let t = Topic::new("discussion:1.2:comments").expect("topic");
        let subject = topic_subject("ssehub", &t);
        assert_eq!(subject_topic("ssehub", &subject), Some(t));
        // A token decoding to `a:b` would add a part: no topic has that subject.
        assert_eq!(subject_topic("ssehub", "ssehub.a~3Ab"), None);
        assert_eq!(subject_topic("ssehub", "other.a"), None);
        assert_eq!(subject_topic("ssehub", "ssehubx.a"), None);
        assert_eq!(subject_topic("ssehub", "ssehub.a..b"), None);
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
