//! `GET /healthz`, `GET /metrics` (Prometheus) and `GET /v1/openapi.json`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::ApiError;

/// How long `/healthz` waits for the broker.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /healthz`: `200 {"status": "ok", "backend": …}`, or `503 {"error": "broker: …"}`.
pub(crate) async fn healthz(State(hub): State<crate::app::State>) -> Response {
    let broker = hub.manager.broker().clone();
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, broker.health()).await;
    let error = match answer {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {HEALTH_TIMEOUT:?}")),
    };
    match error {
        None => Json(serde_json::json!({
            "status": "ok",
            "backend": crate::backend_kind(&hub.config.backend),
            "connections": hub.connections.load(std::sync::atomic::Ordering::Relaxed),
        }))
        .into_response(),
        Some(e) => ApiError::unavailable(format!("broker: {e}"), 5).into_response(),
    }
}

/// `GET /metrics`: the Prometheus text format (the library's metrics and the hub's).
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

/// `GET /v1/openapi.json`.
pub(crate) async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
