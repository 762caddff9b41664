//! [`MultiplexEndpoint`]: several channels, of any registered endpoints, on one SSE response.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;
use ssehub_core::multiplex::{MultiplexedSession, Tagged, decode_positions};
use ssehub_core::{Error, Session, SubscribeOptions};

use crate::body::{OnDrop, SseBody};
use crate::endpoint::{Admitted, SseEndpoint};
use crate::params::PathParams;
use crate::response::{choose_transport, method_not_allowed, stream_headers, text};
use crate::settings::StreamSettings;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One registered endpoint, seen through its hooks, whatever its event type.
pub(crate) trait MuxChannel: Send + Sync + 'static {
    fn admit<'a>(
        &'a self,
        parts: &'a http::request::Parts,
        params: PathParams,
    ) -> BoxFuture<'a, Result<Admitted, (StatusCode, &'static str)>>;

    fn open(
        &self,
        admitted: &Admitted,
        last_event_id: Option<String>,
    ) -> BoxFuture<'static, Result<Session, Error>>;

    fn refusal(&self, e: &Error, resource: &str) -> Option<(StatusCode, String)>;

    fn on_drop(&self, params: PathParams) -> Option<OnDrop>;
}

impl<E: Serialize + Send + Sync + 'static> MuxChannel for SseEndpoint<E> {
    fn admit<'a>(
        &'a self,
        parts: &'a http::request::Parts,
        params: PathParams,
    ) -> BoxFuture<'a, Result<Admitted, (StatusCode, &'static str)>> {
        Box::pin(self.config().admit(parts, params))
    }

    fn open(
        &self,
        admitted: &Admitted,
        last_event_id: Option<String>,
    ) -> BoxFuture<'static, Result<Session, Error>> {
        // `from_tail`: a channel that delivers nothing before the client reconnects still
        // resumes exactly (its position is the topic's newest event at connect).
        let options: SubscribeOptions<E> = self
            .config()
            .options(admitted, Arc::new(Tagged), last_event_id)
            .from_tail(true);
        let manager = self.manager().clone();
        let resource = admitted.resource.clone();
        Box::pin(async move { manager.subscribe(&resource, options).await })
    }

    fn refusal(&self, e: &Error, resource: &str) -> Option<(StatusCode, String)> {
        self.config().refusal(e, resource)
    }

    fn on_drop(&self, params: PathParams) -> Option<OnDrop> {
        self.config().on_drop(params)
    }
}

struct Registered {
    /// The name of the pattern capture the channel's id fills.
    capture: Arc<str>,
    endpoint: Arc<dyn MuxChannel>,
}

/// Serves one path (e.g. `/api/sse`) as SSE streams that carry any set of channels of the
/// [`SseEndpoint`]s registered under names: `GET /api/sse?channel=comments/123&channel=votes/123`.
///
/// - A channel is `{name}/{id}`: `id` fills the last capture of the endpoint registered as
///   `name` (`discussionId` of `/api/sse/comments/{discussionId}`), and every hook of that
///   endpoint — `validate`, `resource`, `authorize`, `initial_event`, `on_disconnect` — runs
///   for the channel as if its own URL had been asked for. One channel refused refuses the
///   request, with that channel's status (`400`, `401`, `403` ...) and a body naming it.
/// - At most [`max_channels`](Self::max_channels) channels (32 by default), no repeats, at least
///   one: `400` otherwise.
/// - Events, ids and resets are those of [`ssehub_core::multiplex`]: `event:` is the channel
///   (`comments/123`, or `comments/123:name` for a named event), the `id:` holds every
///   channel's position so a reconnect resumes each exactly, and a channel that cannot resume
///   gets its own `reset` (`{"reason":..,"channel":"comments/123"}`), then its initial event.
/// - The stream ends when one of its channels' sessions ends (shutdown, slow client, lost
///   broker, revocation, lifetime); the client reconnects and resumes every channel.
///
/// # Example
///
/// ```
/// use ssehub_axum::{MultiplexEndpoint, SseEndpoint};
/// use ssehub_core::ChannelManager;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = ssehub_memory::MemoryBroker::new();
/// let comments = ChannelManager::<serde_json::Value>::builder(broker.clone())
///     .key_prefix("comments").build()?;
/// let votes = ChannelManager::<serde_json::Value>::builder(broker)
///     .key_prefix("votes").build()?;
/// let comments = SseEndpoint::new(comments, "/api/sse/comments/{discussionId}")?;
/// let votes = SseEndpoint::new(votes, "/api/sse/votes/{discussionId}")?;
///
/// let mux = MultiplexEndpoint::new("/api/sse")
///     .channel("comments", comments.clone())?
///     .channel("votes", votes.clone())?;
/// let app: axum::Router = axum::Router::new()
///     .merge(comments.into_router())
///     .merge(votes.into_router())
///     .merge(mux.into_router());
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct MultiplexEndpoint {
    config: Arc<MuxConfig>,
}

#[derive(Clone)]
struct MuxConfig {
    path: String,
    channels: HashMap<String, Arc<Registered>>,
    max_channels: usize,
    settings: StreamSettings,
}

impl fmt::Debug for MultiplexEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.config.channels.keys().collect();
        names.sort();
        f.debug_struct("MultiplexEndpoint")
            .field("path", &self.config.path)
            .field("channels", &names)
            .field("max_channels", &self.config.max_channels)
            .finish_non_exhaustive()
    }
}

/// The default [`MultiplexEndpoint::max_channels`].
pub const DEFAULT_MAX_CHANNELS: usize = 32;

/// The last `{capture}` of a matchit pattern (`{*rest}` counts too).
fn last_capture(pattern: &str) -> Option<Arc<str>> {
    crate::endpoint::capture_names(pattern).pop()
}

impl MultiplexEndpoint {
    /// Serve `path` (an exact path, no captures). No channel is registered yet; the retry hint
    /// is 3 s, keep-alive comments come after 15 s of silence, as on [`SseEndpoint`].
    pub fn new(path: impl Into<String>) -> Self {
        MultiplexEndpoint {
            config: Arc::new(MuxConfig {
                path: path.into(),
                channels: HashMap::new(),
                max_channels: DEFAULT_MAX_CHANNELS,
                settings: StreamSettings::default(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut MuxConfig {
        Arc::make_mut(&mut self.config)
    }

    fn settings_mut(&mut self) -> &mut StreamSettings {
        &mut self.config_mut().settings
    }

    /// Carry the channels of `endpoint` under `name`: a client names them `{name}/{id}`. The
    /// name is 1 to 64 ASCII letters, digits, `-` and `_`; the endpoint's pattern needs a
    /// capture for the id to fill.
    pub fn channel<E: Serialize + Send + Sync + 'static>(
        mut self,
        name: &str,
        endpoint: SseEndpoint<E>,
    ) -> Result<Self, Error> {
        let bad = |reason: String| Error::InvalidConfig {
            reason: reason.into(),
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(format!(
                "channel name {name:?}: 1 to 64 of A-Z a-z 0-9 - _"
            )));
        }
        let capture = last_capture(endpoint.pattern()).ok_or_else(|| {
            bad(format!(
                "channel name {name:?}: pattern {:?} has no capture for the id",
                endpoint.pattern()
            ))
        })?;
        if self.config.channels.contains_key(name) {
            return Err(bad(format!("channel name {name:?} is registered twice")));
        }
        self.config_mut().channels.insert(
            name.to_owned(),
            Arc::new(Registered {
                capture,
                endpoint: Arc::new(endpoint),
            }),
        );
        Ok(self)
    }

    /// At most this many channels per connection (at least 1); more answer `400`. Default: 32.
    #[must_use]
    pub fn max_channels(mut self, max: usize) -> Self {
        self.config_mut().max_channels = max.max(1);
        self
    }

    crate::settings::stream_settings_setters!();

    /// The path served.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.config.path
    }

    /// Whether this endpoint serves `path`.
    #[must_use]
    pub fn matches(&self, path: &str) -> bool {
        path == self.config.path
    }

    /// An axum router serving this endpoint at its path, to `merge` into an app.
    pub fn into_router<S: Clone + Send + Sync + 'static>(self) -> axum::Router<S> {
        let path = self.config.path.clone();
        axum::Router::new().route_service(&path, self)
    }

    /// Answer one request (the request body is ignored).
    pub fn respond(
        &self,
        parts: http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Response<SseBody>> + Send + 'static>> {
        let config = self.config.clone();
        Box::pin(async move { config.respond(parts).await })
    }
}

/// The `channel` values of a query, decoded the way `URLSearchParams` encoded them.
/// `None` when one is not UTF-8.
fn channel_params(query: &str) -> Option<Vec<String>> {
    crate::resume::query_values(query, "channel")
        .map(|v| String::from_utf8(crate::resume::form_decode(v)).ok())
        .collect()
}

fn refuse(status: StatusCode, why: String) -> Response<SseBody> {
    text(status, Bytes::from(why))
}

impl MuxConfig {
    async fn respond(&self, parts: http::request::Parts) -> Response<SseBody> {
        if parts.uri.path() != self.path {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if let Some(res) = method_not_allowed(&parts) {
            return res;
        }
        let Some(labels) = channel_params(parts.uri.query().unwrap_or("")) else {
            return text(StatusCode::BAD_REQUEST, "a channel is not valid UTF-8\n");
        };
        if labels.is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                "name at least one channel: ?channel={name}/{id}\n",
            );
        }
        if labels.len() > self.max_channels {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "too many channels: {} asked, at most {} per connection\n",
                    labels.len(),
                    self.max_channels
                ),
            );
        }
        // Admit every channel before opening any: one refusal refuses the request.
        let mut admitted = Vec::with_capacity(labels.len());
        for (i, label) in labels.iter().enumerate() {
            let shown = label.escape_debug();
            if labels[..i].contains(label) {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("channel \"{shown}\" is named twice\n"),
                );
            }
            let registered = label
                .split_once('/')
                .filter(|(_, id)| !id.is_empty() && !id.contains(':'))
                .and_then(|(name, id)| Some((self.channels.get(name)?, id)));
            let Some((registered, id)) = registered else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("channel \"{shown}\" is not {{name}}/{{id}} of a known name\n"),
                );
            };
            let params = PathParams::one(&registered.capture, id);
            match registered.endpoint.admit(&parts, params).await {
                Ok(a) => admitted.push((label.as_str(), registered.clone(), a)),
                Err((status, why)) => {
                    return refuse(status, format!("channel \"{shown}\": {why}"));
                }
            }
        }
        let transport = choose_transport(&parts);
        let last_event_id = match crate::response::resume_point(&parts, transport.as_ref()) {
            Ok(id) => id,
            Err(head) => return *head,
        };
        let starts = match last_event_id {
            None => vec![None; admitted.len()],
            Some(text) => decode_positions(&text, admitted.len()).unwrap_or_else(|| {
                // Not a multiplexed id: every channel starts over with a `malformed-id` reset
                // (`!` is never a valid id).
                vec![Some("!".to_owned()); admitted.len()]
            }),
        };
        let opened = futures_util::future::join_all(
            admitted
                .iter()
                .zip(&starts)
                .map(|((_, r, a), start)| r.endpoint.open(a, start.clone())),
        )
        .await;
        let mut stream = MultiplexedSession::new(
            transport.clone(),
            Some(self.settings.retry),
            self.settings.keep_alive,
        );
        let mut on_drops: Vec<OnDrop> = Vec::new();
        let mut failure = None;
        for ((label, registered, admitted), session) in admitted.into_iter().zip(opened) {
            match session {
                Ok(session) => {
                    stream = match stream.channel(label, session) {
                        Ok(s) => s,
                        Err(e) => {
                            return refuse(
                                StatusCode::BAD_REQUEST,
                                format!("channel \"{}\": {e}\n", label.escape_debug()),
                            );
                        }
                    };
                    on_drops.extend(registered.endpoint.on_drop(admitted.params));
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some((label.to_owned(), registered, admitted.resource, e));
                    }
                }
            }
        }
        if let Some((label, registered, resource, e)) = failure {
            // The channels opened so far leave with `stream`, and their hooks run.
            drop(stream);
            OnDrop::Each(on_drops).run();
            return match registered.endpoint.refusal(&e, &resource) {
                Some((status, why)) => refuse(
                    status,
                    format!("channel \"{}\": {why}", label.escape_debug()),
                ),
                None => self.settings.refuse(transport.as_ref(), &e),
            };
        }
        let on_drop = (!on_drops.is_empty()).then_some(OnDrop::Each(on_drops));
        let mut res = Response::new(SseBody::multiplexed(stream, on_drop));
        stream_headers(&mut res, transport.as_ref());
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_channel_params() {
        assert_eq!(
            last_capture("/api/sse/comments/{discussionId}").as_deref(),
            Some("discussionId")
        );
        assert_eq!(last_capture("/a/{x}/b/{*rest}").as_deref(), Some("rest"));
        assert_eq!(
            crate::endpoint::capture_names("/a/{x}/b/{*rest}")
                .iter()
                .map(|n| &**n)
                .collect::<Vec<_>>(),
            ["x", "rest"]
        );
        assert_eq!(last_capture("/a/b"), None);
        assert_eq!(
            channel_params("channel=comments/1&x=2&channel=votes%2F1&channel=a+b&lastEventId=~")
                .unwrap(),
            ["comments/1", "votes/1", "a b"]
        );
        assert_eq!(channel_params("channel=%FF"), None);
        assert_eq!(channel_params("").unwrap(), Vec::<String>::new());
    }
}
