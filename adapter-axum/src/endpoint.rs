//! The SSE endpoint: path pattern, hooks, and the answer to one request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Serialize;
use ssehub_core::{ChannelManager, Error, SubscribeOptions, Transport};

use crate::body::{DisconnectFn, OnDrop, SseBody};
use crate::params::{PathParams, RequestInfo};
use crate::response::{choose_transport, method_not_allowed, resume_point, stream_headers, text};
use crate::settings::StreamSettings;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type ValidateFn = dyn Fn(&PathParams) -> bool + Send + Sync;
type AuthorizeFn = dyn Fn(&http::request::Parts, &PathParams) -> BoxFuture<Result<http::Extensions, StatusCode>>
    + Send
    + Sync;
type RequestFn<T> = dyn Fn(&RequestInfo<'_>) -> T + Send + Sync;

/// Where the resource id comes from: the path captures (checked before `authorize`), or the
/// whole request and what `authorize` returned (after it).
enum ResourceFn {
    Params(Arc<dyn Fn(&PathParams) -> String + Send + Sync>),
    Request(Arc<RequestFn<Option<String>>>),
}

impl Clone for ResourceFn {
    fn clone(&self) -> Self {
        match self {
            ResourceFn::Params(f) => ResourceFn::Params(f.clone()),
            ResourceFn::Request(f) => ResourceFn::Request(f.clone()),
        }
    }
}
type InitialFn<E> = dyn Fn(PathParams) -> BoxFuture<Option<E>> + Send + Sync;

/// The `{name}` / `{*name}` captures of a matchit pattern, in order.
pub(crate) fn capture_names(pattern: &str) -> Vec<Arc<str>> {
    let mut names = Vec::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = rest[start + 1..start + len].trim_start_matches('*');
        if !name.is_empty() {
            names.push(Arc::from(name));
        }
        rest = &rest[start + len + 1..];
    }
    names
}

/// Serves one path pattern (e.g. `/api/sse/comments/{discussionId}`) as SSE streams of a
/// [`ChannelManager`]'s channels. Cheap to clone; a tower `Service` itself, and the inside of
/// an [`SseLayer`](crate::SseLayer).
pub struct SseEndpoint<E> {
    config: Arc<Config<E>>,
}

pub(crate) struct Config<E> {
    manager: ChannelManager<E>,
    pattern: String,
    router: Arc<matchit::Router<()>>,
    /// The pattern's capture names, shared by every request's params.
    capture_names: Arc<[Arc<str>]>,
    resource: ResourceFn,
    validate: Option<Arc<ValidateFn>>,
    validate_request: Option<Arc<RequestFn<bool>>>,
    authorize: Option<Arc<AuthorizeFn>>,
    initial_event: Option<Arc<InitialFn<E>>>,
    on_disconnect: Option<Arc<DisconnectFn>>,
    settings: StreamSettings,
}

impl<E> Clone for Config<E> {
    fn clone(&self) -> Self {
        Config {
            manager: self.manager.clone(),
            pattern: self.pattern.clone(),
            router: self.router.clone(),
            capture_names: self.capture_names.clone(),
            resource: self.resource.clone(),
            validate: self.validate.clone(),
            validate_request: self.validate_request.clone(),
            authorize: self.authorize.clone(),
            initial_event: self.initial_event.clone(),
            on_disconnect: self.on_disconnect.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<E> Clone for SseEndpoint<E> {
    fn clone(&self) -> Self {
        SseEndpoint {
            config: self.config.clone(),
        }
    }
}

impl<E> fmt::Debug for SseEndpoint<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseEndpoint")
            .field("pattern", &self.config.pattern)
            .field("retry", &self.config.settings.retry)
            .field("keep_alive", &self.config.settings.keep_alive)
            .field("unavailable", &self.config.settings.unavailable)
            .finish_non_exhaustive()
    }
}

impl<E: Serialize + Send + Sync + 'static> SseEndpoint<E> {
    /// Serve `pattern` (matchit syntax: `{name}` captures one segment) from `manager`.
    ///
    /// By default the resource id is the pattern's last capture (the whole path when there is
    /// none), every request is valid and authorized, there is no initial event, the retry hint
    /// is 3 s, keep-alive comments come after 15 s of silence.
    pub fn new(manager: ChannelManager<E>, pattern: impl Into<String>) -> Result<Self, Error> {
        let pattern = pattern.into();
        let names: Arc<[Arc<str>]> = capture_names(&pattern).into();
        let mut router = matchit::Router::new();
        router
            .insert(pattern.clone(), ())
            .map_err(|e| Error::InvalidConfig {
                reason: format!("bad path pattern: {e}").into(),
            })?;
        Ok(SseEndpoint {
            config: Arc::new(Config {
                manager,
                pattern,
                router: Arc::new(router),
                capture_names: names,
                resource: ResourceFn::Params(Arc::new(|p: &PathParams| {
                    p.last().unwrap_or_default().to_owned()
                })),
                validate: None,
                validate_request: None,
                authorize: None,
                initial_event: None,
                on_disconnect: None,
                settings: StreamSettings::default(),
            }),
        })
    }

    fn settings_mut(&mut self) -> &mut StreamSettings {
        &mut self.config_mut().settings
    }

    pub(crate) fn config(&self) -> &Config<E> {
        &self.config
    }

    fn config_mut(&mut self) -> &mut Config<E> {
        Arc::make_mut(&mut self.config)
    }

    /// The path pattern, e.g. for `Router::route_service`.
    #[must_use]
    pub fn pattern(&self) -> &str {
        &self.config.pattern
    }

    /// An axum router serving this endpoint at its pattern, to `merge` into an app.
    pub fn into_router<S: Clone + Send + Sync + 'static>(self) -> axum::Router<S> {
        let pattern = self.config.pattern.clone();
        axum::Router::new().route_service(&pattern, self)
    }

    /// The manager whose channels this endpoint serves.
    #[must_use]
    pub fn manager(&self) -> &ChannelManager<E> {
        &self.config.manager
    }

    /// Which resource id (channel) a request's params name.
    #[must_use]
    pub fn resource(mut self, f: impl Fn(&PathParams) -> String + Send + Sync + 'static) -> Self {
        self.config_mut().resource = ResourceFn::Params(Arc::new(f));
        self
    }

    /// Which resource id (channel) a request names, from the whole request and what
    /// [`authorize_as`](Self::authorize_as) returned: per-user channels are derived on the
    /// server (`user:{id}:notifications` for the signed-in user), so a client cannot name
    /// another user's channel. Runs after `authorize`; `None` answers `403`. Replaces
    /// [`resource`](Self::resource).
    #[must_use]
    pub fn resource_from(
        mut self,
        f: impl Fn(&RequestInfo<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.config_mut().resource = ResourceFn::Request(Arc::new(f));
        self
    }

    /// Refuse requests that fail this check with `400`, judged after `authorize` on the whole
    /// request and what `authorize_as` returned. (The params-only [`validate`](Self::validate)
    /// runs before `authorize`.)
    #[must_use]
    pub fn validate_from(
        mut self,
        f: impl Fn(&RequestInfo<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.config_mut().validate_request = Some(Arc::new(f));
        self
    }

    /// Refuse requests whose params fail this check with `400`.
    /// Resource ids are also validated by the manager (non-empty, bounded, no wildcards).
    #[must_use]
    pub fn validate(mut self, f: impl Fn(&PathParams) -> bool + Send + Sync + 'static) -> Self {
        self.config_mut().validate = Some(Arc::new(f));
        self
    }

    /// Decide, from the request head and params, whether the client may open the stream; an
    /// `Err(status)` (typically 401 or 403) is answered before any stream opens. Checked again on
    /// every reconnect, so a revoked client gets no replayed events.
    ///
    /// The hook sees both forms of the request's path: `parts.uri` exactly as received (still
    /// percent-encoded, so `/sse/%61dmin` and `/sse/admin` differ there) and `params`
    /// percent-decoded (both capture `admin`, and both open the `admin` channel). **Write access
    /// rules against `params`** ([`PathParams::get`]), the values `validate` and `resource` see
    /// and that name the channel: a rule matching `parts.uri.path()` can be bypassed by
    /// encoding a character differently. [`PathParams::raw`] gives a capture as sent.
    #[must_use]
    pub fn authorize<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts, &PathParams) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StatusCode>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.config_mut().authorize = Some(Arc::new(move |parts, params| {
            let answer = f(parts, params);
            Box::pin(async move { answer.await.map(|()| http::Extensions::new()) })
        }));
        self
    }

    /// [`authorize`](Self::authorize), keeping what the check learned: `Ok(value)` (the user,
    /// say) is visible to [`resource_from`](Self::resource_from) and
    /// [`validate_from`](Self::validate_from) as [`RequestInfo::auth`]. Replaces `authorize`.
    #[must_use]
    pub fn authorize_as<A, F, Fut>(mut self, f: F) -> Self
    where
        A: Clone + Send + Sync + 'static,
        F: Fn(&http::request::Parts, &PathParams) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<A, StatusCode>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.config_mut().authorize = Some(Arc::new(move |parts, params| {
            let answer = f(parts, params);
            Box::pin(async move {
                let value = answer.await?;
                let mut auth = http::Extensions::new();
                auth.insert(value);
                Ok(auth)
            })
        }));
        self
    }

    /// The event sent first on a connection that does not resume exactly (a fresh connect, or
    /// after a `reset`); it carries no id, so it never moves the client's resume point. It is
    /// computed after the session has joined the live feed: nothing published meanwhile is
    /// lost, and it is never older than the events that follow it. An exact resume carries
    /// only the missed events.
    #[must_use]
    pub fn initial_event<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(PathParams) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<E>> + Send + 'static,
    {
        self.config_mut().initial_event = Some(Arc::new(move |p| Box::pin(f(p))));
        self
    }

    /// Called exactly once per opened stream when it ends, whatever ended it. The session has
    /// already left its channel when it runs.
    #[must_use]
    pub fn on_disconnect(mut self, f: impl Fn(&PathParams) + Send + Sync + 'static) -> Self {
        self.config_mut().on_disconnect = Some(Arc::new(f));
        self
    }

    crate::settings::stream_settings_setters!();

    /// End every stream cleanly (queued events drain, then a jittered `retry:` hint) and refuse
    /// new ones; call it from the server's graceful-shutdown signal.
    pub fn shutdown(&self) {
        self.config.manager.shutdown(
            self.config.settings.retry,
            self.config.settings.retry_jitter,
        );
    }

    /// Whether this endpoint serves `path`.
    #[must_use]
    pub fn matches(&self, path: &str) -> bool {
        self.config.router.at(path).is_ok()
    }

    /// Answer one request (the request body is ignored).
    pub fn respond(&self, parts: http::request::Parts) -> BoxFuture<Response<SseBody>> {
        let config = self.config.clone();
        Box::pin(async move { config.respond(parts).await })
    }
}

impl<E: Serialize + Send + Sync + 'static> Config<E> {
    async fn respond(&self, parts: http::request::Parts) -> Response<SseBody> {
        let params = match self.router.at(parts.uri.path()) {
            // Captures are percent-decoded (browsers encode non-ASCII ids); what does not decode
            // to UTF-8 is refused. Validation runs on the decoded text, so `%3A` is a `:`.
            Ok(m) => match PathParams::decode(m.params.iter(), &self.capture_names) {
                Some(p) => p,
                None => return text(StatusCode::BAD_REQUEST, "invalid parameters\n"),
            },
            Err(_) => return text(StatusCode::NOT_FOUND, "not found\n"),
        };
        if let Some(res) = method_not_allowed(&parts) {
            return res;
        }
        let admitted = match self.admit(&parts, params).await {
            Ok(a) => a,
            Err((status, body)) => return text(status, body),
        };
        let transport = choose_transport(&parts);
        let last_event_id = match resume_point(&parts, transport.as_ref()) {
            Ok(id) => id,
            Err(head) => return *head,
        };
        let options = self
            .options(&admitted, transport.clone(), last_event_id)
            .retry(Some(self.settings.retry))
            .keep_alive(self.settings.keep_alive);
        // Boxed on its own: the request's future stays under the allocator's small-size cache
        // limit (about 1 KiB for glibc), so the next request reuses its memory exactly. As one
        // 1.4 KB future, each request left a hole that fragmented the heap between the
        // connections' long-lived blocks: 0.7 KiB of RSS per idle connection.
        match Box::pin(self.manager.subscribe(&admitted.resource, options)).await {
            Ok(session) => {
                let on_drop = self.on_drop(admitted.params);
                let mut res = Response::new(SseBody::session(session, on_drop));
                stream_headers(&mut res, transport.as_ref());
                res
            }
            Err(e) => match self.refusal(&e, &admitted.resource) {
                Some((status, body)) => text(status, body),
                None => self.settings.refuse(transport.as_ref(), &e),
            },
        }
    }

    /// Run the request through `validate`, `resource`, `authorize`, `validate_from` and
    /// `resource_from`: the channel it may open, or the status and text to refuse it with.
    pub(crate) async fn admit(
        &self,
        parts: &http::request::Parts,
        params: PathParams,
    ) -> Result<Admitted, (StatusCode, &'static str)> {
        if let Some(validate) = &self.validate
            && !validate(&params)
        {
            return Err((StatusCode::BAD_REQUEST, "invalid parameters\n"));
        }
        let from_params = match &self.resource {
            ResourceFn::Params(f) => {
                let resource = f(&params);
                if self.manager.topic(&resource).is_err() {
                    return Err((StatusCode::BAD_REQUEST, "invalid resource id\n"));
                }
                Some(resource)
            }
            ResourceFn::Request(_) => None,
        };
        let auth = match &self.authorize {
            Some(authorize) => authorize(parts, &params)
                .await
                .map_err(|status| (status, "not authorized\n"))?,
            None => http::Extensions::new(),
        };
        let info = RequestInfo {
            parts,
            params: &params,
            auth: &auth,
        };
        if let Some(validate) = &self.validate_request
            && !validate(&info)
        {
            return Err((StatusCode::BAD_REQUEST, "invalid parameters\n"));
        }
        let derived = match &self.resource {
            ResourceFn::Request(f) => f(&info),
            ResourceFn::Params(_) => None,
        };
        let resource = match (from_params, derived) {
            (Some(resource), _) => resource,
            (None, Some(resource)) if self.manager.topic(&resource).is_ok() => resource,
            (None, Some(_)) => return Err((StatusCode::BAD_REQUEST, "invalid resource id\n")),
            (None, None) => return Err((StatusCode::FORBIDDEN, "not authorized\n")),
        };
        Ok(Admitted { resource, params })
    }

    /// How an admitted request's session starts (without retry hint and keep-alive).
    pub(crate) fn options(
        &self,
        admitted: &Admitted,
        transport: Arc<dyn Transport>,
        last_event_id: Option<String>,
    ) -> SubscribeOptions<E> {
        let mut options = SubscribeOptions::new()
            .transport(transport)
            .last_event_id(last_event_id);
        if let Some(initial) = self.initial_event.clone() {
            // Computed by the manager once the session has joined the live feed, and only when
            // the session does not resume exactly.
            let params = admitted.params.clone();
            options = options.initial_with(move || initial(params.clone()));
        }
        options
    }

    pub(crate) fn on_drop(&self, params: PathParams) -> Option<OnDrop> {
        self.on_disconnect.clone().map(|f| OnDrop::Call(f, params))
    }

    /// The answer to a failed `subscribe` that is not temporary; `None` for "try again later".
    pub(crate) fn refusal(&self, e: &Error, resource: &str) -> Option<(StatusCode, String)> {
        match e {
            Error::InvalidResourceId { .. } | Error::InvalidTopic { .. } => {
                tracing::debug!(error = %e, "refused");
                Some((StatusCode::BAD_REQUEST, "invalid resource id\n".into()))
            }
            // The initial event could not be encoded (serialization failed, too large, a bad
            // event name), or the app is misconfigured: it would fail the same way on every
            // retry, so no retry hint. A 500 makes a browser's `EventSource` stop instead of
            // reconnecting forever.
            Error::Serialize(_)
            | Error::PayloadTooLarge { .. }
            | Error::InvalidEventName { .. }
            | Error::InvalidConfig { .. } => {
                tracing::error!(
                    error = %e,
                    pattern = %self.pattern,
                    resource = %resource,
                    "stream could not open (initial event or configuration); answering 500"
                );
                Some((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error\n".into(),
                ))
            }
            // A broker error that retrying cannot fix (a wrong key type, a permission, the
            // broker's configuration): a 500 naming it, so a browser stops instead of retrying
            // forever and the operator sees the cause in the log and the response.
            _ if !e.is_temporary() => {
                tracing::error!(
                    error = %e,
                    pattern = %self.pattern,
                    resource = %resource,
                    "stream could not open (permanent error); answering 500"
                );
                Some((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")))
            }
            _ => None,
        }
    }
}

/// A request admitted to one channel: its resource id, and the params its hooks saw.
pub(crate) struct Admitted {
    pub(crate) resource: String,
    pub(crate) params: PathParams,
}
