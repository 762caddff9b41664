//! Key parts and topics (`core/src/id.rs`): `validate_key_part` accepts exactly the documented
//! set, no accepted part holds a separator or a pattern character, `Topic::new` accepts exactly
//! `:`-joined valid parts up to the length limit, and `Topic::from_parts` gives back its parts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ssehub_core::{MAX_RESOURCE_ID_LEN, MAX_TOPIC_LEN, Topic, validate_key_part};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    prefix: Option<&'a str>,
    id: &'a str,
    suffix: Option<&'a str>,
    /// A second id under the same prefix and suffix.
    other_id: &'a str,
    topic: &'a str,
    /// Repeat `id` this many times (joined with `:`) to reach the topic length limit.
    repeat: u8,
}

/// The documented set: 1 to 128 bytes of ASCII letters and digits, `- _ . ~ @ + =`, and non-ASCII
/// letters and digits.
fn key_part_oracle(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_RESOURCE_ID_LEN
        && part.chars().all(|c| {
            if c.is_ascii() {
                c.is_ascii_alphanumeric() || "-_.~@+=".contains(c)
            } else {
                c.is_alphabetic() || c.is_numeric()
            }
        })
}

/// What no accepted part may hold: the separator, control characters, whitespace, and every
/// character a broker reads as a pattern or path.
fn assert_clean(part: &str) {
    for c in part.chars() {
        assert!(
            !c.is_control() && !c.is_whitespace() && !":*>?[]{}\\/%".contains(c),
            "accepted part {part:?} holds {c:?}"
        );
    }
}

fn check_part(part: &str) -> bool {
    let ok = validate_key_part(part).is_ok();
    assert_eq!(ok, key_part_oracle(part), "validate_key_part({part:?})");
    if ok {
        assert_clean(part);
    }
    ok
}

fn check_topic(text: &str) {
    let parts_ok = text.split(':').all(check_part);
    let topic = Topic::new(text);
    assert_eq!(
        topic.is_ok(),
        parts_ok && text.len() <= MAX_TOPIC_LEN,
        "Topic::new({text:?})"
    );
    if let Ok(t) = topic {
        assert_eq!(t.as_str(), text);
        assert!(t.parts().eq(text.split(':')));
        t.parts().for_each(assert_clean);
        assert_eq!(Topic::new(t.as_str()).ok(), Some(t));
    }
}

fuzz_target!(|input: Input<'_>| {
    check_topic(input.topic);
    // Long topics: many valid parts, refused past the limit.
    let n = usize::from(input.repeat % 64) + 1;
    check_topic(&vec![input.id; n].join(":"));

    let prefix = input.prefix.filter(|p| !p.is_empty());
    let suffix = input.suffix.filter(|s| !s.is_empty());
    let id_ok = check_part(input.id);
    let prefix_ok = prefix.is_none_or(check_part);
    let suffix_ok = suffix.is_none_or(check_part);

    let topic = Topic::from_parts(input.prefix, input.id, input.suffix);
    assert_eq!(
        topic.is_ok(),
        id_ok && prefix_ok && suffix_ok,
        "from_parts({:?}, {:?}, {:?})",
        input.prefix,
        input.id,
        input.suffix
    );
    let Ok(topic) = topic else { return };
    // The parts read back are exactly the non-empty (prefix, id, suffix), in order.
    let want: Vec<&str> = prefix.into_iter().chain([input.id]).chain(suffix).collect();
    assert_eq!(topic.parts().collect::<Vec<_>>(), want);
    assert!(topic.as_str().len() <= MAX_TOPIC_LEN);
    assert_eq!(Topic::new(topic.as_str()).ok().as_ref(), Some(&topic));

    // Under one prefix and suffix (one channel manager), different ids never share a topic.
    if let Ok(other) = Topic::from_parts(input.prefix, input.other_id, input.suffix) {
        assert_eq!(
            other == topic,
            input.other_id == input.id,
            "{:?} / {:?}",
            input.id,
            input.other_id
        );
    }
});
