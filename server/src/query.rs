//! `GET /v1/presence/{channel}` and `GET /v1/history/{channel}` (publish credentials).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::value::RawValue;
use ssehub::EventId;
use utoipa::ToSchema;

use crate::app::{ApiError, ErrorBody, publish_grant, publishable};
use crate::openapi::{
    CHANNEL, ChannelName, FORBIDDEN_PUBLISH, HistoryLimit, UNAUTHORIZED, UNAVAILABLE,
};

/// The most events one history answer holds (and the default `limit`).
pub(crate) const MAX_HISTORY: usize = 1000;

/// Who is on a channel, across every hub on the broker.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Presence)]
pub(crate) struct PresenceAnswer {
    pub(crate) channel: String,
    /// Open streams on the channel.
    pub(crate) connections: usize,
    #[schema(inline)]
    pub(crate) users: Vec<UserAnswer>,
}

/// One user (`sub`) on a channel.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserAnswer {
    pub(crate) sub: String,
    /// The user's `ssehub.info` claim, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = serde_json::Value)]
    pub(crate) info: Option<serde_json::Value>,
    /// The user's open streams on the channel.
    pub(crate) connections: usize,
}

/// `GET /v1/presence/{channel}` → `{"channel", "connections", "users": [{"sub", "info"?,
/// "connections"}]}`, across every hub on the broker.
#[utoipa::path(
    get,
    path = "/v1/presence/{channel}",
    operation_id = "presence",
    summary = "Who is on a channel, across every hub",
    security(("publishKey" = []), ("jwt" = [])),
    params(("channel" = ChannelName, Path, description = CHANNEL)),
    responses(
        (status = 200, description = "Presence.", body = PresenceAnswer),
        (status = 400, description = "Bad channel name.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = FORBIDDEN_PUBLISH, body = ErrorBody),
    )
)]
pub(crate) async fn presence(
    State(hub): State<crate::app::State>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PresenceAnswer>, ApiError> {
    let grant = publish_grant(&hub, &headers)?;
    let topic = publishable(&grant, &channel)?;
    let p = hub.manager.channel_at(topic).presence();
    Ok(Json(PresenceAnswer {
        channel,
        connections: p.sessions,
        users: p
            .users
            .into_iter()
            .map(|u| UserAnswer {
                sub: u.user,
                info: u.info,
                connections: u.sessions,
            })
            .collect(),
    }))
}

/// A channel's events after an id, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = History)]
pub(crate) struct HistoryAnswer {
    #[schema(inline)]
    pub(crate) events: Vec<HistoryEvent>,
    /// false when history no longer reaches back to `since`.
    pub(crate) complete: bool,
}

/// One event of a channel's history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryEvent {
    pub(crate) id: String,
    /// The event name, when not `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) event: Option<String>,
    /// The data as published: any JSON.
    #[schema(value_type = serde_json::Value)]
    pub(crate) data: Box<RawValue>,
}

/// `GET /v1/history/{channel}?since=ID&limit=N` → `{"events": [{"id", "event"?, "data"}],
/// "complete"}`: the events after `since` (required), oldest first, at most `limit` (default
/// and maximum 1000); `complete: false` when history no longer reaches back to `since`.
#[utoipa::path(
    get,
    path = "/v1/history/{channel}",
    operation_id = "history",
    summary = "A channel's events after an id",
    security(("publishKey" = []), ("jwt" = [])),
    params(
        ("channel" = ChannelName, Path, description = CHANNEL),
        ("since" = String, Query),
        ("limit" = inline(Option<HistoryLimit>), Query),
    ),
    responses(
        (status = 200, description = "Events, oldest first.", body = HistoryAnswer),
        (status = 400, description = "Bad channel name, no `since`, or a bad `limit`.", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = FORBIDDEN_PUBLISH, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn history(
    State(hub): State<crate::app::State>,
    Path(channel): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<HistoryAnswer>, ApiError> {
    let grant = publish_grant(&hub, &headers)?;
    let topic = publishable(&grant, &channel)?;
    let mut since = None;
    let mut limit = MAX_HISTORY;
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match &*k {
            "since" => since = Some(v.into_owned()),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_HISTORY).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("invalid limit: 1 to {MAX_HISTORY}"))
                    })?;
            }
            _ => {}
        }
    }
    let since = since.ok_or_else(|| {
        ApiError::bad_request("since is required: the id after which events are wanted")
    })?;
    let channel_handle = hub.manager.channel_at(topic);
    // An id of a multiplexed stream (`~…`) is not one channel's; any other id the broker does
    // not know is a gap, as the stream would treat it.
    let history = match EventId::parse(&since) {
        Ok(id) => channel_handle
            .history(&id, limit)
            .await
            .map_err(|e| ApiError::from_library(&e))?,
        Err(_) => ssehub::History::default(),
    };
    let events = history
        .events
        .into_iter()
        .map(|env| {
            let data = String::from_utf8(env.data.to_vec())
                .ok()
                .and_then(|s| RawValue::from_string(s).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("event {} is not JSON", env.id),
                    )
                })?;
            let name = env.event.as_str();
            Ok(HistoryEvent {
                id: env.id.to_string(),
                event: (name != ssehub::EventName::MESSAGE.as_str()).then(|| name.to_owned()),
                data,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(HistoryAnswer {
        events,
        complete: history.complete,
    }))
}
