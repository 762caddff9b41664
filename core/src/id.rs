//! Validated names: event ids, event names, resource ids and topics.
//!
//! Everything that reaches the wire or a broker key goes through one of these types, so the
//! framing and the backends never see a newline, a NUL or a wildcard they did not expect.
//!
//! # Example
//!
//! ```
//! use ssehub_core::{EventId, EventName, Topic};
//!
//! let id = EventId::parse("1a2b-42").unwrap();
//! assert_eq!(id.as_str(), "1a2b-42");
//! assert!(EventId::parse("42\r\nevent: forged").is_err());
//!
//! assert!(EventName::new("comment-added").is_ok());
//! assert!(EventName::new("reset").is_err()); // reserved for ssehub
//!
//! let topic = Topic::from_parts(Some("discussion"), "123", Some("comments")).unwrap();
//! assert_eq!(topic.as_str(), "discussion:123:comments");
//! assert!(Topic::from_parts(Some("discussion"), "*", None).is_err());
//! ```

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest accepted [`EventId`], in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Longest accepted [`EventName`], in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 128;
/// Longest accepted resource id (the variable part of a channel key), in bytes.
pub const MAX_RESOURCE_ID_LEN: usize = 128;
/// Longest accepted [`Topic`], in bytes.
pub const MAX_TOPIC_LEN: usize = 512;

/// The event name ssehub reserves for its `reset` notice (history could not be replayed).
pub const RESET_EVENT: &str = "reset";

/// The event name of the presence updates sessions get when
/// [`presence_events`](crate::ChannelManagerBuilder::presence_events) is on:
/// `{"sessions":n}` (with `"joined"` and `"left"` user ids when users came or went), without
/// an id.
pub const PRESENCE_EVENT: &str = "presence";

/// An opaque event id assigned by a broker.
///
/// At most [`MAX_EVENT_ID_LEN`] bytes of `[A-Za-z0-9._~-]`, so it is always safe in an SSE `id:`
/// field, in a `Last-Event-ID` header and in a URL query. Parsing untrusted input is linear in its
/// length and never panics. Two ids are equal when their text is equal; ids are otherwise opaque
/// (only the broker that made one knows how it orders).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Arc<str>);

impl EventId {
    /// Parse untrusted text (a `Last-Event-ID` header, a query parameter, a broker reply).
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Parse untrusted bytes, such as a raw header value.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(invalid_id("empty"));
        }
        if bytes.len() > MAX_EVENT_ID_LEN {
            return Err(invalid_id("longer than 128 bytes"));
        }
        if !bytes.iter().all(|b| is_id_byte(*b)) {
            return Err(invalid_id("only A-Z a-z 0-9 . _ ~ - are allowed"));
        }
        // All bytes are ASCII, so this cannot fail; map anyway rather than unwrap.
        let text = std::str::from_utf8(bytes).map_err(|_| invalid_id("not utf-8"))?;
        Ok(EventId(Arc::from(text)))
    }

    /// An id built by this crate from parts that are valid id bytes by construction.
    /// Multiplexed ids ([`crate::multiplex`]) may be longer than [`MAX_EVENT_ID_LEN`].
    pub(crate) fn from_trusted(text: String) -> Self {
        debug_assert!(!text.is_empty() && text.bytes().all(is_id_byte), "{text}");
        EventId(Arc::from(text))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

fn invalid_id(reason: &'static str) -> Error {
    Error::InvalidEventId {
        reason: Cow::Borrowed(reason),
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", &self.0)
    }
}

impl std::str::FromStr for EventId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The name of an event, as in the SSE `event:` field.
///
/// Non-empty, at most [`MAX_EVENT_NAME_LEN`] bytes, no control characters (so no CR, LF or NUL
/// can split a frame), and never the reserved [`RESET_EVENT`]. The default name is `message`,
/// which a browser delivers to `EventSource.onmessage`.
#[derive(Clone)]
pub struct EventName(Repr);

/// Equal names are equal whatever built them (`from_static("x") == new("x")`).
impl PartialEq for EventName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventName {}

impl std::hash::Hash for EventName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl EventName {
    /// The default event name, `message`.
    pub const MESSAGE: EventName = EventName(Repr::Static("message"));

    /// Validate a user-supplied event name.
    pub fn new(name: impl AsRef<str>) -> Result<Self> {
        let name = name.as_ref();
        Self::check(name)?;
        if name == "message" {
            return Ok(Self::MESSAGE);
        }
        Ok(EventName(Repr::Shared(Arc::from(name))))
    }

    /// A name built by this crate from validated parts (a multiplexed channel's label and an
    /// event name): no control character, not `reset`, but possibly longer than
    /// [`MAX_EVENT_NAME_LEN`].
    pub(crate) fn from_trusted(name: String) -> Self {
        debug_assert!(
            !name.is_empty() && !name.chars().any(char::is_control) && name != RESET_EVENT
        );
        EventName(Repr::Shared(Arc::from(name)))
    }

    /// Validate a `'static` name without allocating.
    pub fn from_static(name: &'static str) -> Result<Self> {
        Self::check(name)?;
        Ok(EventName(Repr::Static(name)))
    }

    fn check(name: &str) -> Result<()> {
        let fail = |reason: &'static str| {
            Err(Error::InvalidEventName {
                reason: Cow::Borrowed(reason),
            })
        };
        if name.is_empty() {
            return fail("empty");
        }
        if name.len() > MAX_EVENT_NAME_LEN {
            return fail("longer than 128 bytes");
        }
        if name.chars().any(char::is_control) {
            return fail("contains a control character");
        }
        if name == RESET_EVENT {
            return fail("`reset` is reserved");
        }
        Ok(())
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl Default for EventName {
    fn default() -> Self {
        Self::MESSAGE
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventName({})", self.as_str())
    }
}

/// Check one part of a channel key: a resource id, a key prefix or a key suffix.
///
/// Accepted: 1 to [`MAX_RESOURCE_ID_LEN`] bytes of ASCII letters and digits, `-`, `_`, `.`, `~`,
/// `@`, `+`, `=`, and non-ASCII letters and digits. Refused: control characters, whitespace, the
/// `:` separator, and every character a broker reads as a pattern (`*`, `?`, `[`, `]`, `>`, `{`,
/// `}`, `\`, ...), so one resource can never reach another's topic.
pub fn validate_key_part(part: &str) -> Result<()> {
    let fail = |reason: &'static str| {
        Err(Error::InvalidResourceId {
            reason: Cow::Borrowed(reason),
        })
    };
    if part.is_empty() {
        return fail("empty");
    }
    if part.len() > MAX_RESOURCE_ID_LEN {
        return fail("longer than 128 bytes");
    }
    if !part.chars().all(is_key_char) {
        return fail("only letters, digits and - _ . ~ @ + = are allowed");
    }
    Ok(())
}

fn is_key_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '@' | '+' | '=')
    } else {
        c.is_alphanumeric()
    }
}

/// A broker topic: `:`-separated parts, each a valid key part (see [`validate_key_part`]).
///
/// The channel manager builds topics as `prefix:resourceId:suffix`, leaving out empty parts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validate a whole topic such as `discussion:123:comments`.
    pub fn new(topic: impl AsRef<str>) -> Result<Self> {
        let topic = topic.as_ref();
        if topic.len() > MAX_TOPIC_LEN {
            return Err(Error::InvalidTopic {
                reason: Cow::Borrowed("longer than 512 bytes"),
            });
        }
        for part in topic.split(':') {
            validate_key_part(part).map_err(|e| Error::InvalidTopic {
                reason: Cow::Owned(e.to_string()),
            })?;
        }
        Ok(Topic(Arc::from(topic)))
    }

    /// Build `prefix:id:suffix`; `None` or empty prefix and suffix are left out.
    ///
    /// Each of the three is one key part (see [`validate_key_part`]): a prefix or suffix holding
    /// `:` is refused, so for a given prefix and suffix (a [`ChannelManager`](crate::ChannelManager)'s
    /// are fixed) distinct ids always give distinct topics, and the parts read back from the topic
    /// are exactly those given. Managers of different shapes can still meet: a prefix-only
    /// `("a", "b", -)` and a suffix-only `(-, "a", "b")` are both `a:b`, so give every manager on
    /// one broker its own prefix.
    pub fn from_parts(prefix: Option<&str>, id: &str, suffix: Option<&str>) -> Result<Self> {
        validate_key_part(id)?;
        let prefix = prefix.filter(|p| !p.is_empty());
        let suffix = suffix.filter(|s| !s.is_empty());
        for part in prefix.iter().chain(suffix.iter()) {
            validate_key_part(part)?;
        }
        let mut s = String::with_capacity(
            id.len() + prefix.map_or(0, |p| p.len() + 1) + suffix.map_or(0, |x| x.len() + 1),
        );
        if let Some(p) = prefix {
            s.push_str(p);
            s.push(':');
        }
        s.push_str(id);
        if let Some(x) = suffix {
            s.push(':');
            s.push_str(x);
        }
        Topic::new(s)
    }

    /// The topic as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `:`-separated parts.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split(':')
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_rules() {
        assert!(EventId::parse("0-1").is_ok());
        assert!(EventId::parse("abc.DEF_~-9").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse(&"a".repeat(128)).is_ok());
        assert!(EventId::parse(&"a".repeat(129)).is_err());
        for bad in ["a b", "a\n", "a\r", "a\0", "é", "a:b", "a/b", "a%20"] {
            assert!(EventId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(EventId::parse_bytes(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn event_name_rules() {
        assert_eq!(EventName::new("message").unwrap(), EventName::MESSAGE);
        assert_eq!(
            EventName::from_static("comment-added").unwrap(),
            EventName::new("comment-added").unwrap()
        );
        assert_eq!(
            EventName::from_static("message").unwrap(),
            EventName::MESSAGE
        );
        assert!(EventName::new("comment-added").is_ok());
        assert!(EventName::new("with space").is_ok());
        for bad in ["", "a\nb", "a\rb", "a\0", "reset"] {
            assert!(EventName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_parts() {
        let t = Topic::from_parts(Some("discussion"), "123", Some("comments")).unwrap();
        assert_eq!(t.as_str(), "discussion:123:comments");
        assert!(Topic::from_parts(Some("a:b"), "c", None).is_err());
        assert!(Topic::from_parts(None, "a", Some("b:c")).is_err());
        assert!(Topic::from_parts(Some("a*"), "c", None).is_err());
        let t = Topic::from_parts(None, "123", Some("")).unwrap();
        assert_eq!(t.as_str(), "123");
        for bad in [
            "", "*", "a:b", "a b", "a\u{0}", "a>", "a?", "[a]", "a\\b", "{a}", "a,b",
        ] {
            assert!(Topic::from_parts(Some("p"), bad, None).is_err(), "{bad:?}");
        }
        assert!(Topic::from_parts(None, "Zürich-été", None).is_ok());
        assert!(Topic::from_parts(None, &"x".repeat(129), None).is_err());
        assert!(Topic::new("a::b").is_err());
    }
}
