//! `ssehub`: a Server-Sent Events hub. Publish over HTTP (`POST /v1/publish/{channel}`),
//! subscribe with a JWT (`GET /v1/sse?channel=…`), on memory, Redis or NATS. The wire contract is
//! in PROTOCOL.md; `ssehub --help` lists every flag and its environment variable.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use ssehub::{Broker, ChannelManager};
use tower_http::cors::{AllowOrigin, CorsLayer};

mod app;
mod auth;
mod channels;
mod config;
mod openapi;
mod ops;
mod publish;
mod query;
mod subscribe;

use crate::app::{Data, Hub};
use crate::config::Config;

/// What kind of backend a `--backend` value names.
pub(crate) fn backend_kind(backend: &str) -> &'static str {
    match backend.split_once("://").map(|(scheme, _)| scheme) {
        _ if backend == "memory" => "memory",
        Some("redis" | "rediss" | "redis+cluster") => "redis",
        Some("nats" | "tls") => "nats",
        _ => "unknown",
    }
}

async fn connect(backend: &str) -> Result<Arc<dyn Broker>, String> {
    let fail = |e: ssehub::Error| format!("--backend {}: {e}", redact(backend));
    Ok(match backend_kind(backend) {
        "memory" => Arc::new(ssehub::MemoryBroker::new()),
        "redis" => Arc::new(ssehub::RedisBroker::connect(backend).await.map_err(fail)?),
        "nats" => Arc::new(ssehub::NatsBroker::connect(backend).await.map_err(fail)?),
        _ => {
            return Err(format!(
                "--backend {}: memory, redis://…, redis+cluster://… or nats://…",
                redact(backend)
            ));
        }
    })
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", &url[at..]),
        _ => url.to_owned(),
    }
}

fn cors(config: &Config) -> Option<CorsLayer> {
    if config.cors_origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(600));
    Some(if config.cors_origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        // Explicit origins may send the `ssehub_token` cookie (`withCredentials`).
        layer.allow_origin(origins).allow_credentials(true)
    })
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn run(config: Config) -> Result<(), String> {
    let addrs = config.listen_addrs().await?;
    let auth = auth::Auth::from_config(&config)?;
    if config.development() {
        tracing::warn!(
            "development mode: no --publish-key and no JWT key, anyone may publish and subscribe \
             (allowed on a loopback address only)"
        );
    } else if !auth.has_jwt() {
        tracing::warn!(
            "no --jwt-secret or --jwt-public-key: only publish keys can subscribe (browsers cannot)"
        );
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "no /metrics"))
        .ok();
    let broker = connect(&config.backend).await?;
    let build = |events: bool| {
        ChannelManager::<Data>::builder_dyn(broker.clone())
            .max_event_bytes(config.max_data_bytes.saturating_add(64))
            .presence_events(events)
            .build()
            .map_err(|e| e.to_string())
    };
    let manager = build(false)?;
    let presence_manager = build(true)?;
    let listener = tokio::net::TcpListener::bind(addrs[0])
        .await
        .map_err(|e| format!("--addr {}: {e}", config.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let body_limit = config
        .max_body_bytes
        .max(config.max_data_bytes.saturating_add(64 * 1024));
    let cors_layer = cors(&config);
    let hub = Arc::new(Hub {
        manager: manager.clone(),
        presence_manager: presence_manager.clone(),
        auth,
        config,
        connections: Arc::new(AtomicUsize::new(0)),
        metrics,
    });
    // One span per request, with its path only: a `?token=` never reaches the logs.
    let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(
        |req: &axum::http::Request<axum::body::Body>| {
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
        },
    );
    let mut router = app::router(hub.clone())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(trace);
    if let Some(layer) = cors_layer {
        router = router.layer(layer);
    }
    tracing::info!(
        addr = %local,
        backend = backend_kind(&hub.config.backend),
        "ssehub listening"
    );
    // A stable line for scripts and tests, whatever the log format.
    eprintln!("ssehub listening on http://{local}");
    ssehub::serve(listener, router)
        .header_read_timeout(Some(hub.config.header_timeout))
        .max_connections_per_ip(hub.config.max_connections_per_ip)
        .lean_streams(hub.config.lean_streams)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: ending every stream with a retry hint");
            manager.shutdown(Duration::from_secs(1), Duration::from_secs(4));
            presence_manager.shutdown(Duration::from_secs(1), Duration::from_secs(4));
        })
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ssehub: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.json_logs);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ssehub: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backend_kinds_and_redaction() {
        assert_eq!(super::backend_kind("memory"), "memory");
        assert_eq!(super::backend_kind("redis+cluster://a:1,b:2"), "redis");
        assert_eq!(super::backend_kind("nats://x:4222"), "nats");
        assert_eq!(super::backend_kind("postgres://x"), "unknown");
        assert_eq!(super::redact("redis://u:secret@h:1"), "redis://…@h:1");
    }
}
