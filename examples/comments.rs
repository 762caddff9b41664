//! The comments demo as a runnable app: live comment counts per discussion.
//!
//! ```text
//! cargo run --example comments                      # memory backend, http://127.0.0.1:3000
//! cargo run --example comments -- --port 3001
//! cargo run --example comments --features redis -- --backend redis://127.0.0.1:6379
//! cargo run --example comments --features nats -- --backend nats://127.0.0.1:4222
//! ```
//!
//! Two processes on different ports with the same Redis or NATS URL share events: a comment
//! posted on one reaches browsers connected to the other, and a browser may reconnect to either.
//!
//! - `GET /` — a page with a native `EventSource`, the live count and a connection badge.
//! - `GET /api/sse/comments/{discussionId}` — the SSE stream; its initial event has the count.
//! - `POST /api/comments/{discussionId}` — adds a comment and publishes `comment-added`.
//! - `GET /api/comments/{discussionId}` — the current count as JSON (what a page refetches
//!   after a `reset`).
//! - `GET /metrics` — ssehub's metrics in the Prometheus text format.
//! - `GET /react/` — the React + TanStack Query demo (`@ssehub/client`'s hooks), served from
//!   `clients/typescript/demo/dist` once built (`cd clients/typescript && npm ci &&
//!   npm run build:demo`); `SSEHUB_REACT_DIST` points elsewhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use ssehub::{Broker, ChannelManager, PathParams, SseEndpoint};

// Its TypeScript twin, `clients/typescript/demo/generated/CommentEvent.ts`, is generated from
// this definition by `tests/ts_types.rs` (`SSEHUB_WRITE_TS=1 cargo test --test ts_types`). ts-rs
// names the type after serde's `rename` (it is also the tag's value); the test renames it.
/// 1. The event type — serialized as `{type, discussionId, commentCount, timestamp}`.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename = "comment-added", rename_all = "camelCase")]
pub struct CommentEvent {
    /// The discussion the comment was added to.
    pub discussion_id: String,
    /// The discussion's comment count after the addition.
    #[ts(type = "number")]
    pub comment_count: u64,
    /// When, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

/// The demo's state: the channel manager, the SSE endpoint and the comment counts.
#[derive(Clone)]
pub struct AppState {
    /// The typed channel manager (`discussion:{id}:comments`).
    pub comments: ChannelManager<CommentEvent>,
    /// The SSE endpoint serving those channels.
    pub endpoint: SseEndpoint<CommentEvent>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AppState {
    /// Build the state over any broker.
    pub fn new(broker: Arc<dyn Broker>) -> ssehub::Result<Self> {
        let comments = ChannelManager::<CommentEvent>::builder_dyn(broker)
            .key_prefix("discussion")
            .key_suffix("comments")
            .build()?;
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let initial_counts = counts.clone();
        let cleanup = comments.clone();
        // 2. The SSE route .
        let endpoint = SseEndpoint::new(comments.clone(), "/api/sse/comments/{discussionId}")?
            .resource(|p: &PathParams| p.get("discussionId").unwrap_or_default().to_owned())
            .validate(|p: &PathParams| p.get("discussionId").is_some_and(|id| !id.is_empty()))
            .initial_event(move |p: PathParams| {
                let counts = initial_counts.clone();
                async move {
                    let id = p.get("discussionId")?.to_owned();
                    let count = counts.lock().ok()?.get(&id).copied().unwrap_or(0);
                    Some(CommentEvent {
                        discussion_id: id,
                        comment_count: count,
                        timestamp: now_ms(),
                    })
                }
            })
            .on_disconnect(move |p: &PathParams| {
                if let Some(id) = p.get("discussionId") {
                    cleanup.cleanup_if_empty(id);
                }
            });
        Ok(AppState {
            comments,
            endpoint,
            counts,
            metrics: None,
        })
    }

    /// Serve `/metrics` from this Prometheus recorder handle.
    #[must_use]
    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    fn count(&self, id: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.get(id).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// The whole app as a router (used by `main` and by the end-to-end tests).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/api/comments/{discussion_id}",
            post(add_comment).get(get_count),
        )
        .route("/metrics", get(render_metrics))
        .route_service(state.endpoint.pattern(), state.endpoint.clone())
        .merge(react_demo())
        .with_state(state)
}

/// Where the built React demo lives: `SSEHUB_REACT_DIST`, else `clients/typescript/demo/dist`.
pub fn react_dist() -> std::path::PathBuf {
    std::env::var_os("SSEHUB_REACT_DIST").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript/demo/dist"),
        Into::into,
    )
}

/// `GET /react/…`: the built React demo, or a page saying how to build it.
fn react_demo<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let dist = react_dist();
    if dist.join("index.html").is_file() {
        return Router::new().nest_service("/react", tower_http::services::ServeDir::new(dist));
    }
    let msg = format!(
        "The React demo has not been built: {} is missing.\n\n\
         Build it with:\n  cd clients/typescript && npm ci && npm run build:demo\n",
        dist.join("index.html").display()
    );
    let not_built = get(move || async move { (axum::http::StatusCode::NOT_FOUND, msg) });
    Router::new()
        .route("/react", not_built.clone())
        .route("/react/", not_built.clone())
        .route("/react/{*rest}", not_built)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    match &state.metrics {
        Some(h) => (axum::http::StatusCode::OK, h.render()),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            "no metrics recorder\n".to_owned(),
        ),
    }
}

async fn get_count(State(state): State<AppState>, Path(id): Path<String>) -> impl IntoResponse {
    Json(serde_json::json!({ "discussionId": id, "commentCount": state.count(&id) }))
}

/// 3. Publish: add a comment, then tell every connected client.
async fn add_comment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CommentEvent>, (axum::http::StatusCode, String)> {
    let bad = |e: ssehub::Error| {
        let status = if e.is_temporary() {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            axum::http::StatusCode::BAD_REQUEST
        };
        (status, format!("{e}\n"))
    };
    state.comments.topic(&id).map_err(bad)?;
    let count = {
        let mut counts = state.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry(id.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let event = CommentEvent {
        discussion_id: id.clone(),
        comment_count: count,
        timestamp: now_ms(),
    };
    state.comments.publish(&id, &event).await.map_err(bad)?;
    Ok(Json(event))
}

/// Parse `--port N` and `--backend URL` (memory unless compiled with another backend).
fn args() -> (u16, String) {
    let mut port = 3000;
    let mut backend = "memory".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => port = it.next().and_then(|p| p.parse().ok()).unwrap_or(port),
            "--backend" => backend = it.next().unwrap_or(backend),
            other => eprintln!("ignoring unknown argument {other:?}"),
        }
    }
    (port, backend)
}

/// The broker named by `--backend`: `memory`, `redis://…` or `nats://…` (the last two when the
/// `redis` / `nats` features are compiled in).
pub async fn broker(url: &str) -> Result<Arc<dyn Broker>, Box<dyn std::error::Error>> {
    if url == "memory" {
        return Ok(Arc::new(ssehub::MemoryBroker::new()));
    }
    #[cfg(feature = "redis")]
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(Arc::new(ssehub::RedisBroker::connect(url).await?));
    }
    #[cfg(feature = "nats")]
    if url.starts_with("nats://") {
        return Ok(Arc::new(ssehub::NatsBroker::connect(url).await?));
    }
    Err(format!("backend {url:?} is not compiled in (see the crate's features)").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (port, backend) = args();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let state = AppState::new(broker(&backend).await?)?.with_metrics(recorder);
    let endpoint = state.endpoint.clone();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("comments demo on http://{addr} (backend: {backend})");
    // Close connections of clients that stop reading (after their stream was cut off).
    let listener = ssehub::axum::WriteTimeoutListener::new(listener, Duration::from_secs(30));
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: ending every stream");
            endpoint.shutdown();
            tokio::time::sleep(Duration::from_millis(100)).await;
        })
        .await?;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ssehub comments demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; }
  .badge { padding: .2rem .6rem; border-radius: 1rem; color: white; background: #b91c1c; }
  .badge.on { background: #15803d; }
  #count { font-size: 3rem; font-weight: bold; }
</style>
</head>
<body>
<h1>Discussion <span id="discussion"></span></h1>
<p>Status: <span id="status" class="badge">disconnected</span></p>
<p>Comments: <span id="count">–</span></p>
<button id="add">Add a comment</button>
<pre id="log"></pre>
<script>
  const id = new URLSearchParams(location.search).get('discussion') || '123';
  document.getElementById('discussion').textContent = id;
  const status = document.getElementById('status');
  const count = document.getElementById('count');
  const log = document.getElementById('log');
  const show = (n) => { count.textContent = String(n); };
  const refetch = () => fetch(`/api/comments/${encodeURIComponent(id)}`)
    .then((r) => r.json()).then((j) => show(j.commentCount));
  const es = new EventSource(`/api/sse/comments/${encodeURIComponent(id)}`);
  es.onopen = () => { status.textContent = 'connected'; status.className = 'badge on'; };
  es.onerror = () => { status.textContent = 'disconnected'; status.className = 'badge'; };
  es.onmessage = (e) => {
    const event = JSON.parse(e.data);
    if (event.type === 'comment-added') show(event.commentCount);
    log.textContent = `last event id: ${e.lastEventId || '(initial)'}\n` + log.textContent;
  };
  // The server could not replay what we missed: refetch the state.
  es.addEventListener('reset', refetch);
  document.getElementById('add').onclick = () =>
    fetch(`/api/comments/${encodeURIComponent(id)}`, { method: 'POST' });
</script>
</body>
</html>
"#;
