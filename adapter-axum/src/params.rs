//! [`PathParams`]: what the endpoint's path pattern captured, decoded and as sent.

use std::sync::Arc;

use smol_str::SmolStr;

/// The parameters captured by the endpoint's path pattern, e.g. `discussionId`.
///
/// Values are percent-decoded ([`get`](Self::get), [`iter`](Self::iter)): `/sse/%61dmin` and
/// `/sse/admin` both capture `admin`, and name the same channel. What the client actually sent is
/// kept too ([`raw`](Self::raw)).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PathParams {
    /// The capture names in pattern order, shared with the endpoint (no allocation per request).
    names: Arc<[Arc<str>]>,
    /// Every capture's decoded value, then its spelling in the request when that differs
    /// (empty otherwise), each length-prefixed: `4:idle0:`. A stream holds its parameters as
    /// long as it is open: up to 23 bytes they are inline, with no allocation, and longer ones
    /// are one shared allocation however many captures.
    text: SmolStr,
}

impl std::fmt::Debug for PathParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The next length-prefixed field of `rest`.
fn field<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let (len, tail) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let value = tail.get(..len)?;
    *rest = &tail[len..];
    Some(value)
}

fn push_field(text: &mut String, value: &str) {
    use std::fmt::Write as _;
    let _ = write!(text, "{}:{value}", value.len());
}

impl PathParams {
    /// The value captured for `name`, percent-decoded: what `validate`, `resource` and
    /// `authorize` should judge, since it is what names the channel.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).map(|(value, _)| value)
    }

    /// The value captured for `name` exactly as it appears in the request path, still
    /// percent-encoded (e.g. `%61dmin` where [`get`](Self::get) answers `admin`). For logging,
    /// or to refuse spellings a rule elsewhere would not recognize; never an access rule's only
    /// input.
    #[must_use]
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.find(name).map(|(_, raw)| raw)
    }

    /// All captured `(name, decoded value)` pairs, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.captures().map(|(name, value, _)| (name, value))
    }

    /// The decoded value of the pattern's last capture (the default resource id).
    pub(crate) fn last(&self) -> Option<&str> {
        self.captures().last().map(|(_, value, _)| value)
    }

    /// `(name, decoded value, raw spelling)` of every capture.
    fn captures(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        let mut rest: &str = &self.text;
        self.names.iter().map_while(move |name| {
            let value = field(&mut rest)?;
            let raw = field(&mut rest)?;
            Some((&**name, value, if raw.is_empty() { value } else { raw }))
        })
    }

    fn find(&self, name: &str) -> Option<(&str, &str)> {
        self.captures()
            .find(|(n, ..)| *n == name)
            .map(|(_, value, raw)| (value, raw))
    }

    /// One capture, already decoded (a multiplexed channel's id).
    pub(crate) fn one(name: &Arc<str>, value: &str) -> Self {
        let mut text = String::with_capacity(value.len() + 8);
        push_field(&mut text, value);
        push_field(&mut text, "");
        PathParams {
            names: Arc::from([name.clone()]),
            text: text.into(),
        }
    }

    /// Decode the captures of a matched path; `None` when one does not decode to UTF-8.
    /// `names` are the pattern's capture names, shared by every request.
    pub(crate) fn decode<'a>(
        captures: impl Iterator<Item = (&'a str, &'a str)>,
        names: &Arc<[Arc<str>]>,
    ) -> Option<Self> {
        let mut text = String::new();
        let mut seen: Vec<Arc<str>> = Vec::new();
        let mut shared = true;
        for (i, (name, raw)) in captures.enumerate() {
            let value = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .ok()?;
            push_field(&mut text, &value);
            push_field(&mut text, if value == raw { "" } else { raw });
            let known = names.get(i).filter(|n| &***n == name);
            shared &= known.is_some();
            seen.push(known.cloned().unwrap_or_else(|| Arc::from(name)));
        }
        let names = if shared && seen.len() == names.len() {
            names.clone()
        } else {
            seen.into()
        };
        Some(PathParams {
            names,
            text: text.into(),
        })
    }
}

/// What [`SseEndpoint::resource_from`](crate::SseEndpoint::resource_from) and [`SseEndpoint::validate_from`](crate::SseEndpoint::validate_from) see of a request: its
/// head, the decoded path captures, and what [`authorize_as`](crate::SseEndpoint::authorize_as)
/// returned (for example the signed-in user), so a channel can be derived on the server from
/// who is asking rather than from what the client names.
#[derive(Debug)]
pub struct RequestInfo<'a> {
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) params: &'a PathParams,
    pub(crate) auth: &'a http::Extensions,
}

impl RequestInfo<'_> {
    /// The request head (method, URI as received, headers, extensions).
    #[must_use]
    pub fn parts(&self) -> &http::request::Parts {
        self.parts
    }

    /// The decoded path captures.
    #[must_use]
    pub fn params(&self) -> &PathParams {
        self.params
    }

    /// What `authorize_as` returned for this request, by type.
    #[must_use]
    pub fn auth<A: Send + Sync + 'static>(&self) -> Option<&A> {
        self.auth.get::<A>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_keep_their_decoded_value_and_their_spelling() {
        let names: Arc<[Arc<str>]> = vec![Arc::from("org"), Arc::from("id")].into();
        let p = PathParams::decode([("org", "a%3Ab"), ("id", "12:3")].into_iter(), &names)
            .expect("decodes");
        assert_eq!(p.get("org"), Some("a:b"));
        assert_eq!(p.raw("org"), Some("a%3Ab"));
        assert_eq!(p.get("id"), Some("12:3"));
        assert_eq!(p.raw("id"), Some("12:3"));
        assert_eq!(p.get("other"), None);
        assert_eq!(p.last(), Some("12:3"));
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            vec![("org", "a:b"), ("id", "12:3")]
        );
        assert!(
            Arc::ptr_eq(&p.names, &names),
            "the endpoint's names are shared"
        );
        assert_eq!(format!("{p:?}"), r#"{"org": "a:b", "id": "12:3"}"#);
        let empty = PathParams::decode([("org", ""), ("id", "%E2%82%AC")].into_iter(), &names)
            .expect("decodes");
        assert_eq!((empty.get("org"), empty.raw("org")), (Some(""), Some("")));
        assert_eq!(empty.get("id"), Some("€"));
        assert!(PathParams::decode([("org", "%FF")].into_iter(), &names).is_none());
        let one = PathParams::one(&names[1], "x");
        assert_eq!((one.get("id"), one.raw("id")), (Some("x"), Some("x")));
        assert_eq!(PathParams::default().iter().count(), 0);
    }
}
