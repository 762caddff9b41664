//! `GET /healthz`, `GET /metrics` (Prometheus) and `GET /v1/openapi.json`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::{ApiError, ErrorBody};
use crate::openapi::UNAVAILABLE;

/// How long `/healthz` waits for the broker.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer of a healthy hub.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    /// The broker: `memory`, `redis` or `nats`.
    #[schema(example = "memory")]
    pub(crate) backend: &'static str,
    /// Open streams on this hub.
    pub(crate) connections: usize,
}

/// `GET /healthz`: `200 {"status": "ok", "backend": …}`, or `503 {"error": "broker: …"}`.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health",
    summary = "Health of the hub and its broker",
    responses(
        (status = 200, description = "Healthy.", body = Health),
        (status = 503, description = UNAVAILABLE, body = ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn healthz(State(hub): State<crate::app::State>) -> Response {
    let broker = hub.manager.broker().clone();
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, broker.health()).await;
    let error = match answer {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {HEALTH_TIMEOUT:?}")),
    };
    match error {
        None => Json(Health {
            status: "ok",
            backend: crate::backend_kind(&hub.config.backend),
            connections: hub.connections.load(std::sync::atomic::Ordering::Relaxed),
        })
        .into_response(),
        Some(e) => ApiError::unavailable(format!("broker: {e}"), 5).into_response(),
    }
}

/// `GET /metrics`: the Prometheus text format (the library's metrics and the hub's).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain", body = String))
)]
pub(crate) async fn metrics(State(hub): State<crate::app::State>) -> Response {
    match &hub.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "metrics are not recorded").into_response(),
    }
}

/// `GET /v1/openapi.json`: the document, generated once.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1.", body = Object))
)]
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
        .into_response()
}
