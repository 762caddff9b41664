//! Channel names and event names as the HTTP API takes them, and the broker topic of a channel.
//!
//! A channel name is 1–200 characters from `A–Z a–z 0–9 _ - . @ /`. Its topic is `hub:`, then
//! the name with each `/` written `~` (a character names never hold, so the mapping is
//! injective and reversible), cut into parts of at most 128 bytes joined by `:` (the library's
//! key parts hold at most 128 bytes and no `:`): `comments/123` is `hub:comments~123`.

use ssehub::Topic;

/// The longest channel name.
pub(crate) const MAX_CHANNEL_LEN: usize = 200;
/// The longest event name.
pub(crate) const MAX_EVENT_LEN: usize = 64;
/// The first part of every topic the hub uses.
const TOPIC_PREFIX: &str = "hub";
/// The longest part of a topic (the library's key part limit).
const PART: usize = ssehub::MAX_RESOURCE_ID_LEN;

/// Why a channel name is refused, or `None` when it is valid.
pub(crate) fn check_channel(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
        return Err(format!(
            "invalid channel name {:?}: 1 to {MAX_CHANNEL_LEN} characters",
            truncate(name)
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b'/'))
    {
        return Err(format!(
            "invalid channel name {:?}: only A-Z a-z 0-9 _ - . @ / are allowed",
            truncate(name)
        ));
    }
    // URL clients (fetch, browsers, curl) resolve `.` and `..` path segments before sending, so
    // such a channel would be published to, or read from, another one.
    if name
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!(
            "invalid channel name {:?}: `.` and `..` segments are not allowed (URLs resolve them)",
            truncate(name)
        ));
    }
    if name == ssehub::RESET_EVENT {
        return Err("invalid channel name \"reset\": reserved for the reset event".into());
    }
    Ok(())
}

/// Why an event name is refused, or `None` when it is valid.
pub(crate) fn check_event(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_EVENT_LEN {
        return Err(format!(
            "invalid event name {:?}: 1 to {MAX_EVENT_LEN} characters",
            truncate(name)
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "invalid event name {:?}: only A-Z a-z 0-9 _ - . are allowed",
            truncate(name)
        ));
    }
    if name == ssehub::RESET_EVENT {
        return Err("invalid event name \"reset\": reserved".into());
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(MAX_CHANNEL_LEN + 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The broker topic of a valid channel name (see the module docs).
pub(crate) fn topic(name: &str) -> Result<Topic, String> {
    check_channel(name)?;
    let escaped = name.replace('/', "~");
    let mut text = String::with_capacity(TOPIC_PREFIX.len() + escaped.len() + 3);
    text.push_str(TOPIC_PREFIX);
    // ASCII only, so every byte index is a character boundary.
    for chunk in escaped.as_bytes().chunks(PART) {
        text.push(':');
        text.push_str(std::str::from_utf8(chunk).map_err(|e| e.to_string())?);
    }
    Topic::new(text).map_err(|e| e.to_string())
}

/// The channel name of a hub topic (the inverse of [`topic`]).
#[cfg(test)]
pub(crate) fn channel_of(topic: &Topic) -> Option<String> {
    let rest = topic
        .as_str()
        .strip_prefix(TOPIC_PREFIX)?
        .strip_prefix(':')?;
    Some(rest.replace(':', "").replace('~', "/"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "comments/123",
            "user/alice@example.com",
            "a.b-c_d",
            "v1.2/..a/.b",
            &"x".repeat(200),
        ] {
            assert!(check_channel(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a:b",
            "a*",
            "é",
            "reset",
            ".",
            "..",
            "a/../b",
            "a/.",
            "./a",
            &"x".repeat(201),
        ] {
            assert!(check_channel(bad).is_err(), "{bad}");
        }
        assert!(check_event("comment-added.v2").is_ok());
        for bad in ["", "a/b", "a:b", "reset", &"e".repeat(65)] {
            assert!(check_event(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topics_are_injective_and_reversible() {
        let names = [
            "comments/123".to_owned(),
            "comments~123".to_owned(),
            "a/b/c".to_owned(),
            "x".repeat(200),
            format!("{}/{}", "y".repeat(127), "z".repeat(72)),
        ];
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            match topic(n) {
                Ok(t) => {
                    assert_eq!(channel_of(&t).as_deref(), Some(n.as_str()));
                    assert!(seen.insert(t));
                }
                // `~` is not a channel character.
                Err(_) => assert!(n.contains('~')),
            }
        }
        assert_eq!(topic("comments/123").unwrap().as_str(), "hub:comments~123");
    }
}
