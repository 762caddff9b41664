//! [`PathParams`]: what the endpoint's path pattern captured, decoded and as sent.

use std::sync::Arc;

/// The parameters captured by the endpoint's path pattern, e.g. `discussionId`.
///
/// Values are percent-decoded ([`get`](Self::get), [`iter`](Self::iter)): `/sse/%61dmin` and
/// `/sse/admin` both capture `admin`, and name the same channel. What the client actually sent is
/// kept too ([`raw`](Self::raw)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathParams(Arc<[Param]>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Param {
    /// Shared with the endpoint's pattern (no allocation per request).
    name: Arc<str>,
    /// Percent-decoded.
    value: String,
    /// As in the request path, when it differs from `value` (it was percent-encoded).
    raw: Option<String>,
}

impl PathParams {
    /// The value captured for `name`, percent-decoded: what `validate`, `resource` and
    /// `authorize` should judge, since it is what names the channel.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).map(|p| p.value.as_str())
    }

    /// The value captured for `name` exactly as it appears in the request path, still
    /// percent-encoded (e.g. `%61dmin` where [`get`](Self::get) answers `admin`). For logging,
    /// or to refuse spellings a rule elsewhere would not recognize; never an access rule's only
    /// input.
    #[must_use]
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.find(name)
            .map(|p| p.raw.as_deref().unwrap_or(&p.value))
    }

    /// All captured `(name, decoded value)` pairs, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|p| (&*p.name, p.value.as_str()))
    }

    /// The decoded value of the pattern's last capture (the default resource id).
    pub(crate) fn last(&self) -> Option<&str> {
        self.0.last().map(|p| p.value.as_str())
    }

    fn find(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| &*p.name == name)
    }

    /// One capture, already decoded (a multiplexed channel's id).
    pub(crate) fn one(name: &Arc<str>, value: &str) -> Self {
        PathParams(Arc::from([Param {
            name: name.clone(),
            value: value.to_owned(),
            raw: None,
        }]))
    }

    /// Decode the captures of a matched path; `None` when one does not decode to UTF-8.
    /// `names` are the pattern's capture names, shared by every request.
    pub(crate) fn decode<'a>(
        captures: impl Iterator<Item = (&'a str, &'a str)>,
        names: &[Arc<str>],
    ) -> Option<Self> {
        let params: Option<Vec<Param>> = captures
            .map(|(name, raw)| {
                let value = percent_encoding::percent_decode_str(raw)
                    .decode_utf8()
                    .ok()?;
                let raw = (value != raw).then(|| raw.to_owned());
                Some(Param {
                    name: names
                        .iter()
                        .find(|n| &***n == name)
                        .cloned()
                        .unwrap_or_else(|| Arc::from(name)),
                    value: value.into_owned(),
                    raw,
                })
            })
            .collect();
        params.map(|p| PathParams(p.into()))
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
