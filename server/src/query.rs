//! `GET /v1/presence/{channel}` and `GET /v1/history/{channel}` (publish credentials).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::value::RawValue;
use ssehub::EventId;

use crate::app::{ApiError, publish_grant, publishable};

/// The most events one history answer holds (and the default `limit`).
pub(crate) const MAX_HISTORY: usize = 1000;

#[derive(Debug, Serialize)]
pub(crate) struct PresenceAnswer {
    channel: String,
    connections: usize,
    users: Vec<UserAnswer>,
}

#[derive(Debug, Serialize)]
struct UserAnswer {
    sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<serde_json::Value>,
    connections: usize,
}

/// `GET /v1/presence/{channel}` → `{"channel", "connections", "users": [{"sub", "info"?,
/// "connections"}]}`, across every hub on the broker.
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

#[derive(Debug, Serialize)]
pub(crate) struct HistoryAnswer {
    events: Vec<HistoryEvent>,
    complete: bool,
}

#[derive(Debug, Serialize)]
struct HistoryEvent {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    data: Box<RawValue>,
}

/// `GET /v1/history/{channel}?since=ID&limit=N` → `{"events": [{"id", "event"?, "data"}],
/// "complete"}`: the events after `since` (required), oldest first, at most `limit` (default
/// and maximum 1000); `complete: false` when history no longer reaches back to `since`.
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
