//! `GET /v1/sse?channel=A&channel=B…`: one multiplexed stream of several channels, the
//! library's [`MultiplexedSession`] wire format, authorized by a JWT, ending when it expires.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use ssehub::multiplex::decode_positions;
use ssehub::{MultiplexedSession, Sse, SubscribeOptions, Transport};

use crate::app::{ApiError, ErrorBody, bearer};
use crate::auth::Grant;
use crate::channels::check_channel;
use crate::openapi::{ChannelName, PresenceFlag, UNAVAILABLE};

/// The `retry:` hint sent first and when a stream ends.
pub(crate) const RETRY: Duration = Duration::from_secs(1);
/// A keep-alive comment after this long without an event.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The cookie that may carry the token.
pub(crate) const COOKIE: &str = "ssehub_token";

/// What the query of a stream asks for.
#[derive(Debug, Default)]
struct Query {
    channels: Vec<String>,
    token: Option<String>,
    last_event_id: Option<String>,
    presence: bool,
}

fn parse_query(raw: Option<&str>) -> Query {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*k {
            "channel" => q.channels.push(v.into_owned()),
            "token" => q.token = Some(v.into_owned()),
            "lastEventId" => q.last_event_id = Some(v.into_owned()),
            "presence" => q.presence = matches!(&*v, "1" | "true" | "yes"),
            _ => {}
        }
    }
    q
}

/// The `ssehub_token` cookie of a request.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// How long until `exp` (seconds since the epoch) plus `leeway` seconds, to the millisecond: a
/// token accepted within the leeway lives until its end, and no stream outlives its token.
fn until_expiry(exp: u64, leeway: u64) -> Duration {
    let end = UNIX_EPOCH + Duration::from_secs(exp.saturating_add(leeway));
    end.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// `GET /v1/sse`.
#[utoipa::path(
    get,
    path = "/v1/sse",
    operation_id = "subscribe",
    summary = "Subscribe to channels: one multiplexed text/event-stream",
    security(("jwt" = []), ("tokenQuery" = []), ("tokenCookie" = [])),
    params(
        ("channel" = Vec<ChannelName>, Query, style = Form, explode, min_items = 1, max_items = 32),
        ("lastEventId" = Option<String>, Query,
            description = "Resume point when the Last-Event-ID header cannot be set."),
        ("Last-Event-ID" = Option<String>, Header, nullable = false),
        ("presence" = inline(Option<PresenceFlag>), Query,
            description = "Also receive `CHANNEL:presence` events, `{\"sessions\": n, \"joined\": [sub…], \"left\": [sub…]}`, when a channel's cluster-wide sessions or users change."),
    ),
    responses(
        (status = 200, description = "The stream (see PROTOCOL.md).", content_type = "text/event-stream", body = String),
        (status = 400, description = "No channel, too many, a bad or repeated name.", body = ErrorBody),
        (status = 401, description = "No token, or an invalid or expired one.", body = ErrorBody),
        (status = 403, description = "The token does not allow a channel; `channel` names it.", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn stream(
    State(hub): State<crate::app::State>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = parse_query(raw.as_deref());
    // The token: the header, then `?token=`, then the cookie.
    let token = bearer(&headers)
        .map(str::to_owned)
        .or(query.token.clone())
        .or_else(|| cookie_token(&headers));
    let grant = hub
        .auth
        .grant(token.as_deref())
        .map_err(|r| ApiError::unauthorized(r.0))?;
    if query.channels.is_empty() {
        return Err(ApiError::bad_request(
            "name at least one channel: /v1/sse?channel=NAME",
        ));
    }
    if query.channels.len() > hub.config.max_channels {
        return Err(ApiError::bad_request(format!(
            "too many channels: {} asked, at most {} per connection",
            query.channels.len(),
            hub.config.max_channels
        )));
    }
    let mut topics = Vec::with_capacity(query.channels.len());
    for (i, channel) in query.channels.iter().enumerate() {
        check_channel(channel).map_err(ApiError::bad_request)?;
        if query.channels[..i].contains(channel) {
            return Err(ApiError::bad_request(format!(
                "channel {channel:?} is named twice"
            )));
        }
        topics.push(crate::channels::topic(channel).map_err(ApiError::bad_request)?);
    }
    for channel in &query.channels {
        if !grant.may_subscribe(channel) {
            return Err(ApiError::forbidden("subscribing to", channel));
        }
    }
    let guard = ConnectionGuard::acquire(&hub.connections, hub.config.max_connections)
        .ok_or_else(|| ApiError::unavailable("too many connections on this hub", 5))?;
    // One id resumes every channel; anything else starts each over with a `malformed-id` reset.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id.clone())
        .filter(|s| !s.is_empty());
    let n = query.channels.len();
    let starts = match last_event_id {
        None => vec![None; n],
        Some(text) => decode_positions(&text, n).unwrap_or_else(|| vec![Some("!".to_owned()); n]),
    };
    let manager = if query.presence {
        &hub.presence_manager
    } else {
        &hub.manager
    };
    let user = grant
        .claims()
        .and_then(|c| c.sub.clone().map(|sub| (sub, c.info.clone())));
    let opened =
        futures_util::future::join_all(topics.into_iter().zip(&starts).map(|(topic, start)| {
            let mut options = SubscribeOptions::new()
                .for_multiplex()
                .from_tail(true)
                .last_event_id(start.clone());
            if let Some((sub, info)) = &user {
                options = options.user(sub.clone(), info.clone());
            }
            let channel = manager.channel_at(topic);
            async move { channel.subscribe(options).await }
        }))
        .await;
    let transport: Arc<dyn Transport> = Arc::new(Sse);
    let mut mux = MultiplexedSession::new(transport.clone(), Some(RETRY), Some(KEEP_ALIVE));
    for (label, session) in query.channels.iter().zip(opened) {
        let session = session.map_err(|e| {
            let mut err = ApiError::from_library(&e);
            err.message = format!("channel {label:?}: {}", err.message);
            err
        })?;
        mux = mux
            .channel(label, session)
            .map_err(|e| ApiError::bad_request(format!("channel {label:?}: {e}")))?;
    }
    // The stream ends when the token expires, with a retry hint: the client comes back with a
    // fresh token and its last id.
    let expires = match &grant {
        Grant::Token(claims) => {
            let left = until_expiry(claims.exp, hub.config.jwt_leeway);
            Some(Box::pin(tokio::time::sleep(left)))
        }
        Grant::All => None,
    };
    metrics::counter!("ssehub_hub_streams_opened_total").increment(1);
    let body = HubStream {
        mux: Some(mux),
        expires,
        transport,
        _guard: guard,
    };
    let mut res = Body::from_stream(body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    *res.status_mut() = StatusCode::OK;
    Ok(res)
}

/// Counts an open stream while it lives.
struct ConnectionGuard(Arc<AtomicUsize>);

impl ConnectionGuard {
    fn acquire(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        metrics::gauge!("ssehub_hub_streams").increment(1.0);
        Some(ConnectionGuard(count.clone()))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("ssehub_hub_streams").decrement(1.0);
    }
}

/// The multiplexed stream, ended with a retry hint when the token expires.
struct HubStream {
    mux: Option<MultiplexedSession>,
    expires: Option<Pin<Box<tokio::time::Sleep>>>,
    transport: Arc<dyn Transport>,
    _guard: ConnectionGuard,
}

impl Stream for HubStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(mux) = this.mux.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(expires) = this.expires.as_mut()
            && expires.as_mut().poll(cx).is_ready()
        {
            // Leave every channel now; the last frame tells the client when to come back.
            this.mux = None;
            this.expires = None;
            metrics::counter!("ssehub_hub_streams_expired_total").increment(1);
            return Poll::Ready(Some(Ok(this.transport.retry(RETRY))));
        }
        match Pin::new(mux).poll_next(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(None) => {
                this.mux = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_cookie() {
        let q = parse_query(Some(
            "channel=a%2Fb&channel=c&token=t&lastEventId=~x&presence=1&other=2",
        ));
        assert_eq!(q.channels, ["a/b", "c"]);
        assert_eq!(q.token.as_deref(), Some("t"));
        assert_eq!(q.last_event_id.as_deref(), Some("~x"));
        assert!(q.presence);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ssehub_token=abc.def; b=2"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("abc.def"));
    }
}
