//! The HTTP handlers: the page, `/healthz`, `/metrics` and the JSON API.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use ssehub::{BoxError, IdempotencyKey, PublishOptions};

use super::app::{AppState, now_ms};
use super::events::{CommentEvent, Vote, VoteEvent};
use super::once::Once;

/// The page served at `/`: one `EventSource` on the multiplexing endpoint.
const PAGE: &str = include_str!("page.html");

pub(super) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub(super) async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    match &state.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (StatusCode::NOT_FOUND, "no metrics recorder\n".to_owned()),
    }
}

/// How long `/healthz` waits for the broker's answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /healthz`: 200 `{"status":"ok","backend":…}`, or 503 with the error.
pub(super) async fn healthz(
    State(state): State<AppState>,
) -> (StatusCode, Json<serde_json::Value>) {
    let check = tokio::time::timeout(HEALTH_TIMEOUT, state.comments.broker().health()).await;
    let error = match check {
        Ok(Ok(())) => {
            return (
                StatusCode::OK,
                Json(serde_json::json!({ "status": "ok", "backend": state.backend })),
            );
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {HEALTH_TIMEOUT:?}"),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "error", "backend": state.backend, "error": error })),
    )
}

/// An error answer: `{"error": "…"}` with its status.
type ApiError = (StatusCode, Json<serde_json::Value>);

fn api_error(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
}

/// 400 for what the client sent wrong (an invalid id), 503 for what may pass.
fn hub_error(e: ssehub::Error) -> ApiError {
    let status = if e.is_temporary() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_REQUEST
    };
    api_error(status, e)
}

fn store_error(e: BoxError) -> ApiError {
    tracing::warn!("store: {e}");
    api_error(StatusCode::SERVICE_UNAVAILABLE, e)
}

pub(super) async fn get_count(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let count = state.store.comment_count(&id).await.map_err(store_error)?;
    Ok(Json(
        serde_json::json!({ "discussionId": id, "commentCount": count }),
    ))
}

/// The request's `Idempotency-Key`: none, or 1 to 255 visible ASCII characters (else `400`).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(IdempotencyKey::new)
        .and_then(Result::ok)
        .ok_or_else(|| {
            api_error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key: 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key))
}

/// How to publish a request's event: under its idempotency key, so that a repeat (which
/// publishes again) stores nothing new.
fn publish_options(key: Option<&IdempotencyKey>) -> PublishOptions {
    match key {
        Some(key) => PublishOptions::new().idempotency_key(key.clone()),
        None => PublishOptions::new(),
    }
}

/// 3. Publish: add a comment, then tell every connected client.
///
/// With an `Idempotency-Key`, a repeat within the window (on any node) counts nothing and
/// answers the first response.
pub(super) async fn add_comment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CommentEvent>, (StatusCode, String)> {
    let text = |(status, Json(body)): ApiError| {
        let msg = body["error"].as_str().unwrap_or_default().to_owned();
        (status, format!("{msg}\n"))
    };
    let key = idempotency_key(&headers).map_err(text)?;
    state.comments.topic(&id).map_err(hub_error).map_err(text)?;
    let now = now_ms();
    let (count, timestamp) = match &key {
        Some(key) => {
            state
                .store
                .add_comment_once(
                    &id,
                    Once {
                        key: key.as_str(),
                        at: now,
                    },
                )
                .await
        }
        None => state.store.add_comment(&id).await.map(|count| (count, now)),
    }
    .map_err(store_error)
    .map_err(text)?;
    let event = CommentEvent {
        discussion_id: id.clone(),
        comment_count: count,
        timestamp,
    };
    state
        .comments
        .publish_with(&id, &event, publish_options(key.as_ref()))
        .await
        .map_err(hub_error)
        .map_err(text)?;
    Ok(Json(event))
}

/// `POST /api/votes/{id}`: count the vote, then publish the totals on the votes channel. With
/// an `Idempotency-Key`, as [`add_comment`].
pub(super) async fn cast_vote(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<VoteEvent>, ApiError> {
    // Every other body is a 400: not `application/json`, not JSON, or not one of the two.
    const EXPECTED: &str = r#"expected {"vote":"up"} or {"vote":"down"}"#;
    let Json(body) = body.map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            format!("{EXPECTED}: {}", e.body_text()),
        )
    })?;
    let vote =
        Vote::from_body(&body).ok_or_else(|| api_error(StatusCode::BAD_REQUEST, EXPECTED))?;
    let key = idempotency_key(&headers)?;
    state.votes.topic(&id).map_err(hub_error)?;
    let now = now_ms();
    let (totals, timestamp) = match &key {
        Some(key) => {
            let once = Once {
                key: key.as_str(),
                at: now,
            };
            state.store.vote_once(&id, vote, once).await
        }
        None => state
            .store
            .vote(&id, vote)
            .await
            .map(|totals| (totals, now)),
    }
    .map_err(store_error)?;
    let event = VoteEvent {
        discussion_id: id.clone(),
        up: totals.up,
        down: totals.down,
        timestamp,
    };
    state
        .votes
        .publish_with(&id, &event, publish_options(key.as_ref()))
        .await
        .map_err(hub_error)?;
    Ok(Json(event))
}

/// `GET /api/votes/{id}`: the current totals (what a page refetches after a `reset`).
pub(super) async fn get_votes(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let votes = state.store.votes(&id).await.map_err(store_error)?;
    Ok(Json(
        serde_json::json!({ "discussionId": id, "up": votes.up, "down": votes.down }),
    ))
}

/// `GET /api/sessions/{id}`: `{"sessions": n}`, the comments streams open on the discussion on
/// every node (a look-up in this node's presence table).
pub(super) async fn get_sessions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sessions = state
        .comments
        .cluster_session_count(&id)
        .await
        .map_err(hub_error)?;
    Ok(Json(serde_json::json!({ "sessions": sessions })))
}
