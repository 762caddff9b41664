//! The comments demo as a runnable app: live comment counts and votes per discussion.
//!
//! ```text
//! cargo run --example comments                      # memory backend, http://127.0.0.1:3000
//! cargo run --example comments -- --addr 127.0.0.1:3001
//! cargo run --example comments --features redis -- --backend redis://127.0.0.1:6379
//! cargo run --example comments --features redis -- --backend redis+cluster://127.0.0.1:7000,127.0.0.1:7001
//! cargo run --example comments --features nats -- --backend nats://127.0.0.1:4222
//! SSEHUB_ADDR=0.0.0.0:8080 SSEHUB_BACKEND=redis://127.0.0.1:6379 cargo run --example comments --features redis
//! cargo run --example comments -- --help
//! ```
//!
//! `--addr HOST:PORT` (default `127.0.0.1:3000`, environment `SSEHUB_ADDR`) is where it listens;
//! `--backend memory|redis://…|redis+cluster://HOST:PORT[,HOST:PORT…]|nats://…` (default `memory`,
//! environment `SSEHUB_BACKEND`; a cluster is reached through any of its nodes) is both
//! the broker and where the demo keeps its numbers (comment counts, votes): in this process for
//! `memory`, in Redis keys under `ssehub-demo:` or in the JetStream key-value bucket
//! `ssehub-demo` otherwise. Two processes on different addresses with the same Redis or NATS URL
//! share events and numbers: a comment posted on one reaches browsers connected to the other,
//! both answer the same count, and a browser may reconnect to either.
//!
//! - `GET /` — a page with one native `EventSource` on the multiplexing endpoint: the live
//!   count, votes, "N viewing" and a connection badge.
//! - `GET /api/sse/comments/{discussionId}` — the SSE stream; its initial event has the count.
//! - `POST /api/comments/{discussionId}` — adds a comment and publishes `comment-added`.
//! - `GET /api/comments/{discussionId}` — the current count as JSON (what a page refetches
//!   after a `reset`).
//! - `POST /api/votes/{discussionId}` with `{"vote":"up"}` or `{"vote":"down"}` — counts the
//!   vote and publishes `vote-cast` with the running totals; 400 for any other body.
//! - `GET /api/votes/{discussionId}` — the current totals as JSON.
//! - `GET /api/sse/votes/{discussionId}` — the votes stream; its initial event has the totals.
//! - `GET /api/sessions/{discussionId}` — `{"sessions": n}`, the streams open on the
//!   discussion's comments across the cluster, as presence reports them.
//! - `GET /api/sse/presence/{discussionId}` — the viewers stream: `{"type":"presence",
//!   "discussionId","sessions","timestamp"}` whenever the cluster-wide number of streams on the
//!   discussion's comments changes (coalesced), the current number first.
//! - `GET /api/sse?channel=comments/{id}&channel=votes/{id}&channel=presence/{id}` — any of
//!   those streams together on one connection (the multiplexing endpoint): each event's
//!   `event:` field names its channel, and its id resumes every channel exactly.
//! - `GET /healthz` — the broker's health: 200 `{"status":"ok","backend":"memory"}`, or 503
//!   with `"status":"error"` and the `"error"`.
//! - `GET /metrics` — ssehub's metrics in the Prometheus text format, every one from startup.
//! - `GET /react/` — the React + TanStack Query demo (`@ssehub/client`'s hooks), served from
//!   `clients/typescript/demo/dist` once built (`cd clients/typescript && npm ci &&
//!   npm run build:demo`); `SSEHUB_REACT_DIST` points elsewhere.
//!
//! The code: `events.rs` (the events), `store.rs` (where the numbers live, and the broker),
//! `app.rs` (the state and the routes), `handlers.rs` (the HTTP handlers) and `page.html` (the
//! page); this file is the command line.

mod app;
mod events;
mod handlers;
mod once;
mod store;

pub use app::{AppState, app, install_metrics, react_dist};
pub use events::{CommentEvent, PresenceEvent, Vote, VoteEvent, Votes};
pub use once::{ONCE_WINDOW, Once};
pub use store::{MemoryData, STORE_PREFIX, Store, broker};

use std::time::Duration;

use ssehub::BoxError;

/// The command line of the comments demo: live comment counts and votes per discussion over
/// Server-Sent Events.
#[derive(Debug, clap::Parser)]
#[command(
    name = "comments",
    about = "The ssehub comments demo: live comment counts and votes per discussion over \
             Server-Sent Events."
)]
pub struct Cli {
    /// Where to listen
    #[arg(
        long,
        env = "SSEHUB_ADDR",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:3000",
        value_parser = parse_addr
    )]
    pub addr: String,
    /// The broker, which also keeps the demo's counts and votes: memory (this process only), or
    /// a Redis or NATS URL that several processes share (with the redis / nats feature)
    #[arg(
        long,
        env = "SSEHUB_BACKEND",
        value_name = "memory|redis://…|redis+cluster://…|nats://…",
        default_value = "memory",
        hide_env_values = true,
        value_parser = parse_backend
    )]
    pub backend: String,
    /// Serve event streams with ssehub's lean HTTP/1 driver (`Serve::lean_streams`: an idle
    /// stream holds no read or write buffer); `false` serves every request with hyper
    #[arg(
        long,
        env = "SSEHUB_LEAN_STREAMS",
        value_name = "true|false",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub lean_streams: bool,
}

/// How the demo serves its routes: [`ssehub::serve`] (a 10 s deadline on every request head,
/// TCP_NODELAY, graceful shutdown) with the lean HTTP/1 driver for event streams. The tests
/// serve the demo, and their own routers, with it too.
pub fn serve(
    listener: impl Into<ssehub::WriteTimeoutListener<tokio::net::TcpListener>>,
    app: axum::Router,
) -> ssehub::Serve {
    ssehub::serve(listener, app).lean_streams(true)
}

/// `HOST:PORT`, the host a name or an address (`[::1]` for IPv6).
fn parse_addr(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err("expected HOST:PORT, for example 127.0.0.1:3000".to_owned()),
    }
}

/// `memory`, `redis://…`, `rediss://…`, `redis+cluster://…`, `rediss+cluster://…` or `nats://…`.
fn parse_backend(s: &str) -> Result<String, String> {
    let known = [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
        "nats://",
    ];
    if s == "memory" || known.iter().any(|scheme| s.starts_with(scheme)) {
        Ok(s.to_owned())
    } else {
        Err(
            "expected memory, redis://HOST:PORT, redis+cluster://HOST:PORT[,HOST:PORT…] or nats://HOST:PORT"
                .to_owned(),
        )
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let cli = <Cli as clap::Parser>::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let recorder = install_metrics()?;
    let broker = broker(&cli.backend).await?;
    let store = Store::open(&cli.backend).await?;
    let state = AppState::with_store(broker, store)?.with_metrics(recorder);
    let listener = tokio::net::TcpListener::bind(&cli.addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "comments demo on http://{addr} (backend: {})",
        state.backend()
    );
    // Close connections of clients that stop reading (after their stream was cut off).
    let listener = ssehub::WriteTimeoutListener::new(listener, Duration::from_secs(30));
    let streams = state.clone();
    // Routes turned into services once (`with_state`), shared by every connection; every
    // request head must arrive within 10 s (`ssehub::serve`, unlike `axum::serve`).
    let app = app(state).with_state::<()>(());
    serve(listener, app)
        .lean_streams(cli.lean_streams)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: ending every stream");
            streams.shutdown();
            tokio::time::sleep(Duration::from_millis(100)).await;
        })
        .await?;
    Ok(())
}
