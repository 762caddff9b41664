//! The hub's shared state, its router, and its errors (`{"error": "…"}` with the status).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::value::RawValue;
use ssehub::ChannelManager;
use utoipa::ToSchema;

use crate::auth::{Auth, Grant};
use crate::config::Config;

/// An event's data as it was published: any JSON, kept as its text.
pub(crate) type Data = Box<RawValue>;

/// What every handler shares.
pub(crate) struct Hub {
    /// Publishes, presence, history, and the streams without presence events.
    pub(crate) manager: ChannelManager<Data>,
    /// The streams that asked for presence events (`&presence=1`): a second hub on the same
    /// broker, which presence counts as one more node.
    pub(crate) presence_manager: ChannelManager<Data>,
    pub(crate) auth: Auth,
    pub(crate) config: Config,
    /// Open streams.
    pub(crate) connections: Arc<AtomicUsize>,
    /// The Prometheus recorder (`None` when another recorder was installed first).
    pub(crate) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

pub(crate) type State = Arc<Hub>;

/// The routes, each with its method (what `/v1/openapi.json` documents; a test checks both).
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/publish/{channel}"),
    ("POST", "/v1/publish"),
    ("GET", "/v1/sse"),
    ("GET", "/v1/presence/{channel}"),
    ("GET", "/v1/history/{channel}"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
];

/// The hub's routes over `hub`.
pub(crate) fn router(hub: State) -> Router {
    Router::new()
        .route("/v1/publish/{*channel}", post(crate::publish::one))
        .route("/v1/publish", post(crate::publish::batch))
        .route("/v1/sse", get(crate::subscribe::stream))
        .route("/v1/presence/{*channel}", get(crate::query::presence))
        .route("/v1/history/{*channel}", get(crate::query::history))
        .route("/healthz", get(crate::ops::healthz))
        .route("/metrics", get(crate::ops::metrics))
        .route("/v1/openapi.json", get(crate::ops::openapi))
        .fallback(|| async {
            let routes: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such route; the routes are: {}", routes.join(", ")),
            )
        })
        .with_state(hub)
}

/// An error answer: `{"error": message}` (and `"channel"` when one channel is the reason).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) channel: Option<String>,
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            channel: None,
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// `403`, naming the channel the credential does not allow.
    pub(crate) fn forbidden(action: &str, channel: &str) -> Self {
        ApiError {
            channel: Some(channel.to_owned()),
            ..Self::new(
                StatusCode::FORBIDDEN,
                format!("the token does not allow {action} channel {channel:?}"),
            )
        }
    }

    /// `503` with `Retry-After`.
    pub(crate) fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// The answer to a library error.
    pub(crate) fn from_library(e: &ssehub::Error) -> Self {
        use ssehub::Error as E;
        match e {
            E::PayloadTooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            E::InvalidResourceId { .. }
            | E::InvalidTopic { .. }
            | E::InvalidEventId { .. }
            | E::InvalidEventName { .. }
            | E::InvalidIdempotencyKey { .. } => Self::bad_request(e.to_string()),
            E::TooManySessions(_) | E::TooManyChannels { .. } | E::Shutdown => {
                Self::unavailable(e.to_string(), 1)
            }
            E::PartlyPublished { source, .. } => {
                let mut answer = Self::from_library(source);
                answer.message = e.to_string();
                answer
            }
            _ if e.is_temporary() || matches!(e, E::Broker { .. }) => {
                Self::unavailable(format!("broker unavailable: {e}"), 1)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: String,
    /// The channel refused (403).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) channel: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            channel: self.channel,
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// The `Authorization: Bearer …` credential of a request.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The publish credential of a request (publish, presence, history): a publish key or a JWT
/// with `ssehub.publish`; `401` without a valid one.
pub(crate) fn publish_grant(hub: &Hub, headers: &HeaderMap) -> Result<Grant, ApiError> {
    hub.auth
        .grant(bearer(headers))
        .map_err(|r| ApiError::unauthorized(r.0))
}

/// `400` unless `channel` is a valid name; `403` unless `grant` may publish to it.
pub(crate) fn publishable(grant: &Grant, channel: &str) -> Result<ssehub::Topic, ApiError> {
    let topic = crate::channels::topic(channel).map_err(ApiError::bad_request)?;
    if !grant.may_publish(channel) {
        return Err(ApiError::forbidden("publishing to", channel));
    }
    Ok(topic)
}
