//! `POST /v1/publish/{channel}` (one event) and `POST /v1/publish` (a batch across channels).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use ssehub::{IdempotencyKey, PublishOptions};
use utoipa::ToSchema;

use crate::app::{ApiError, Data, ErrorBody, Hub, publish_grant, publishable};
use crate::channels::check_event;
use crate::openapi::{
    CHANNEL, ChannelName, EventName, FORBIDDEN_PUBLISH, UNAUTHORIZED, UNAVAILABLE,
};

/// The most events in one batch.
pub(crate) const MAX_BATCH: usize = 1000;

/// The `400` of both publish routes.
const BAD_PUBLISH: &str = "Bad channel name, event name, idempotency key or body.";
/// The `413` of both publish routes.
const TOO_LARGE: &str = "`data` is over the limit (1 MiB by default).";

/// The body of `POST /v1/publish/{channel}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PublishRequest)]
pub(crate) struct One {
    /// Any JSON.
    #[schema(value_type = serde_json::Value)]
    pub(crate) data: Data,
    /// The event name (`message` when absent).
    #[serde(default)]
    #[schema(value_type = EventName, nullable = false)]
    pub(crate) event: Option<String>,
}

/// One event of `POST /v1/publish`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchEvent {
    #[schema(value_type = ChannelName)]
    pub(crate) channel: String,
    /// Any JSON.
    #[schema(value_type = serde_json::Value)]
    pub(crate) data: Data,
    /// The event name (`message` when absent).
    #[serde(default)]
    #[schema(value_type = EventName, nullable = false)]
    pub(crate) event: Option<String>,
}

/// The body of `POST /v1/publish`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchRequest)]
pub(crate) struct Batch {
    /// At most 1,000, published in order.
    #[schema(inline, max_items = 1000)]
    pub(crate) events: Vec<BatchEvent>,
}

/// The id of the event published.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PublishResponse)]
pub(crate) struct Published {
    pub(crate) id: String,
}

/// The ids of the events published, in their order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BatchResponse)]
pub(crate) struct PublishedMany {
    pub(crate) ids: Vec<String>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid Idempotency-Key: visible ASCII only"))?;
    IdempotencyKey::new(text)
        .map(Some)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// The data as it goes on the wire: one line (JSON's line breaks are whitespace between
/// tokens, never inside a string, so dropping them keeps the value), checked against the limit.
fn prepare(hub: &Hub, data: Data) -> Result<Data, ApiError> {
    let max = hub.config.max_data_bytes;
    if data.get().len() > max {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "data of {} bytes is over the maximum of {max} bytes",
                data.get().len()
            ),
        ));
    }
    if !data.get().contains(['\n', '\r']) {
        return Ok(data);
    }
    let line: String = data
        .get()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    RawValue::from_string(line).map_err(|e| ApiError::bad_request(format!("invalid data: {e}")))
}

fn options(event: Option<&str>, key: Option<IdempotencyKey>) -> Result<PublishOptions, ApiError> {
    let mut options = PublishOptions::new();
    if let Some(name) = event {
        check_event(name).map_err(ApiError::bad_request)?;
        options = options.event(name);
    }
    if let Some(key) = key {
        options = options.idempotency_key(key);
    }
    Ok(options)
}

fn record(route: &'static str, result: &Result<usize, ApiError>) {
    match result {
        Ok(n) => {
            metrics::counter!("ssehub_hub_published_total", "route" => route).increment(*n as u64)
        }
        Err(e) => metrics::counter!(
            "ssehub_hub_publish_errors_total",
            "route" => route,
            "status" => e.status.as_str().to_owned()
        )
        .increment(1),
    }
}

/// `POST /v1/publish/{channel}`: `{"data": …, "event"?: …}` → `{"id": …}`.
#[utoipa::path(
    post,
    path = "/v1/publish/{channel}",
    operation_id = "publish",
    summary = "Publish one event to a channel",
    security(("publishKey" = []), ("jwt" = [])),
    params(
        ("channel" = ChannelName, Path, description = CHANNEL),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
            description = "A repeat within 2 minutes, on any hub of the broker, answers the same id and publishes nothing."),
    ),
    request_body = One,
    responses(
        (status = 200, description = "Published.", body = Published),
        (status = 400, description = BAD_PUBLISH, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = FORBIDDEN_PUBLISH, body = ErrorBody),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn one(
    State(hub): State<crate::app::State>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    let body = body.map_err(rejected)?;
    let result = publish_one(&hub, &channel, &headers, &body).await;
    record("one", &result.as_ref().map(|_| 1).map_err(clone_status));
    result.map(|id| Json(Published { id }))
}

/// A body that could not be read: over `--max-body-bytes` (`413`), or cut short.
fn rejected(e: BytesRejection) -> ApiError {
    ApiError::new(e.status(), format!("request body: {}", e.body_text()))
}

fn clone_status(e: &ApiError) -> ApiError {
    ApiError::new(e.status, "")
}

async fn publish_one(
    hub: &Hub,
    channel: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, ApiError> {
    let grant = publish_grant(hub, headers)?;
    let topic = publishable(&grant, channel)?;
    let key = idempotency_key(headers)?;
    let one: One = parse(body)?;
    let data = prepare(hub, one.data)?;
    let options = options(one.event.as_deref(), key)?;
    let id = hub
        .manager
        .channel_at(topic)
        .publish_with(&data, options)
        .await
        .map_err(|e| ApiError::from_library(&e))?;
    Ok(id.to_string())
}

/// `POST /v1/publish`: `{"events": [{"channel", "data", "event"?}, …]}` → `{"ids": […]}`.
#[utoipa::path(
    post,
    path = "/v1/publish",
    operation_id = "publishBatch",
    summary = "Publish up to 1,000 events, in order, across channels",
    security(("publishKey" = []), ("jwt" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
            description = "Makes the whole batch idempotent (per event) for 2 minutes, on any hub."),
    ),
    request_body = Batch,
    responses(
        (status = 200, description = "Published; ids in the order of the events.", body = PublishedMany),
        (status = 400, description = BAD_PUBLISH, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = FORBIDDEN_PUBLISH, body = ErrorBody),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn batch(
    State(hub): State<crate::app::State>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishedMany>, ApiError> {
    let body = body.map_err(rejected)?;
    let result = publish_batch(&hub, &headers, &body).await;
    record(
        "batch",
        &result.as_ref().map(Vec::len).map_err(clone_status),
    );
    result.map(|ids| Json(PublishedMany { ids }))
}

/// The batch of `POST /v1/publish`, checked whole before anything is published.
///
/// Consecutive events of one channel and one event name go to the broker as one batch, in
/// order. With an `Idempotency-Key`, the run starting at event `i` is published under the key
/// `KEY#i`, whose part `j` is event `i + j`'s: the same batch again stores nothing twice.
async fn publish_batch(
    hub: &Hub,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<String>, ApiError> {
    let grant = publish_grant(hub, headers)?;
    let key = idempotency_key(headers)?;
    let batch: Batch = parse(body)?;
    if batch.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "too many events: {}, at most {MAX_BATCH} per batch",
            batch.events.len()
        )));
    }
    // Check everything before publishing anything.
    let mut prepared = Vec::with_capacity(batch.events.len());
    for e in batch.events {
        let topic = publishable(&grant, &e.channel)?;
        if let Some(name) = &e.event {
            check_event(name).map_err(ApiError::bad_request)?;
        }
        prepared.push((e.channel, topic, e.event, prepare(hub, e.data)?));
    }
    let mut ids = Vec::with_capacity(prepared.len());
    let mut start = 0;
    while start < prepared.len() {
        let (channel, topic, event, _) = &prepared[start];
        let end = prepared[start..]
            .iter()
            .position(|(c, _, e, _)| c != channel || e != event)
            .map_or(prepared.len(), |n| start + n);
        let options = options(event.as_deref(), key.as_ref().map(|k| k.part(start)))?;
        let run = prepared[start..end].iter().map(|(_, _, _, data)| data);
        let published = hub
            .manager
            .channel_at(topic.clone())
            .publish_many_with(run, options)
            .await
            .map_err(|e| ApiError::from_library(&e))?;
        ids.extend(published.into_iter().map(|id| id.to_string()));
        start = end;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn multi_line_data_becomes_one_line() {
        let raw =
            serde_json::value::RawValue::from_string("{\n  \"a\": [1,\r\n 2]\n}".into()).unwrap();
        let line: String = raw
            .get()
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, 2]}));
    }
}
