//! The app: its state (channel managers, SSE endpoints, store) and its routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Serialize;
use ssehub::{Broker, ChannelManager, MultiplexEndpoint, PathParams, SseEndpoint};

use super::events::{CommentEvent, PresenceEvent, VoteEvent};
use super::handlers::{
    add_comment, cast_vote, get_count, get_sessions, get_votes, healthz, page, render_metrics,
};
use super::store::Store;

/// The demo's state: the channel managers, the SSE endpoints and the store.
#[derive(Clone)]
pub struct AppState {
    /// The typed channel manager of the comments (`discussion:{id}:comments`).
    pub comments: ChannelManager<CommentEvent>,
    /// The SSE endpoint serving those channels.
    pub endpoint: SseEndpoint<CommentEvent>,
    /// The typed channel manager of the votes (`discussion:{id}:votes`).
    pub votes: ChannelManager<VoteEvent>,
    /// The SSE endpoint serving the votes channels.
    pub votes_endpoint: SseEndpoint<VoteEvent>,
    /// The typed channel manager of the viewer counts (`discussion:{id}:presence`), over a
    /// broker of this node's own: every node learns the cluster-wide counts from presence and
    /// tells its own clients.
    pub presence: ChannelManager<PresenceEvent>,
    /// The SSE endpoint serving the viewer counts.
    pub presence_endpoint: SseEndpoint<PresenceEvent>,
    /// `GET /api/sse?channel=…`: comments, votes and viewers on one connection.
    pub multiplex: MultiplexEndpoint,
    /// Where the comment counts and votes live.
    pub store: Store,
    pub(super) backend: String,
    pub(super) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Now, in milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The broker's name for `/healthz`, from its type: `MemoryBroker` is `memory`.
fn backend_label(broker: &dyn Broker) -> String {
    let debug = format!("{broker:?}");
    let ty: String = debug
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    ty.strip_suffix("Broker").unwrap_or(&ty).to_lowercase()
}

impl AppState {
    /// Build the state over any broker, with the numbers kept in this process.
    pub fn new(broker: Arc<dyn Broker>) -> ssehub::Result<Self> {
        Self::with_store(broker, Store::memory())
    }

    /// Build the state over any broker, with the numbers kept in `store` (shared by every node
    /// when it is Redis or NATS).
    pub fn with_store(broker: Arc<dyn Broker>, store: Store) -> ssehub::Result<Self> {
        let backend = backend_label(broker.as_ref());
        let comments = ChannelManager::<CommentEvent>::builder_dyn(broker.clone())
            .key_prefix("discussion")
            .key_suffix("comments")
            .build()?;
        // 2. The SSE route: its initial event carries the current count.
        let endpoint = discussion_endpoint(
            &comments,
            "/api/sse/comments/{discussionId}",
            &store,
            |store, id| async move {
                let count = store
                    .comment_count(&id)
                    .await
                    .inspect_err(|e| tracing::warn!("no initial count for {id}: {e}"))
                    .ok()?;
                Some(CommentEvent {
                    discussion_id: id,
                    comment_count: count,
                    timestamp: now_ms(),
                })
            },
        )?;
        let votes = ChannelManager::<VoteEvent>::builder_dyn(broker)
            .key_prefix("discussion")
            .key_suffix("votes")
            .build()?;
        let votes_endpoint = discussion_endpoint(
            &votes,
            "/api/sse/votes/{discussionId}",
            &store,
            |store, id| async move {
                let votes = store
                    .votes(&id)
                    .await
                    .inspect_err(|e| tracing::warn!("no initial votes for {id}: {e}"))
                    .ok()?;
                Some(VoteEvent {
                    discussion_id: id,
                    up: votes.up,
                    down: votes.down,
                    timestamp: now_ms(),
                })
            },
        )?;
        // The viewers: presence tells every node the cluster-wide count of the comments
        // streams; each node republishes it to its own viewers' streams, through a broker of
        // its own (the count is already cluster-wide, so it must not cross nodes again).
        let presence = ChannelManager::<PresenceEvent>::builder(ssehub::MemoryBroker::new())
            .key_prefix("discussion")
            .key_suffix("presence")
            .build()?;
        let counts = comments.clone();
        let presence_endpoint = discussion_endpoint(
            &presence,
            "/api/sse/presence/{discussionId}",
            &store,
            move |_store, id| {
                let counts = counts.clone();
                async move {
                    let sessions = counts.cluster_session_count(&id).await.ok()?;
                    Some(PresenceEvent {
                        discussion_id: id,
                        sessions: sessions as u64,
                        timestamp: now_ms(),
                    })
                }
            },
        )?;
        republish_presence(&comments, &presence);
        let multiplex = MultiplexEndpoint::new("/api/sse")
            .channel("comments", endpoint.clone())?
            .channel("votes", votes_endpoint.clone())?
            .channel("presence", presence_endpoint.clone())?;
        Ok(AppState {
            comments,
            endpoint,
            votes,
            votes_endpoint,
            presence,
            presence_endpoint,
            multiplex,
            store,
            backend,
            metrics: None,
        })
    }

    /// Serve `/metrics` from this Prometheus recorder handle.
    #[must_use]
    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The broker's name as `/healthz` reports it (`memory`, `redis`, `nats`).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// End every stream of every endpoint (graceful shutdown); the multiplexed streams end
    /// with their channels.
    pub fn shutdown(&self) {
        self.endpoint.shutdown();
        self.votes_endpoint.shutdown();
        self.presence_endpoint.shutdown();
    }
}

/// Publish a `presence` event to `presence`'s channel of a discussion whenever the cluster-wide
/// count of `comments` streams on it changes. Presence already coalesces the changes; the
/// latest count per discussion waits in a map for one task to publish, so a burst costs one
/// entry per discussion, never a queue.
fn republish_presence(
    comments: &ChannelManager<CommentEvent>,
    presence: &ChannelManager<PresenceEvent>,
) {
    let latest: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let wake = Arc::new(tokio::sync::Notify::new());
    {
        let (latest, wake) = (latest.clone(), wake.clone());
        comments.on_presence(move |id, sessions| {
            if let Ok(mut map) = latest.lock() {
                map.insert(id.to_owned(), sessions);
            }
            wake.notify_one();
        });
    }
    let presence = presence.clone();
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            let batch: Vec<(String, usize)> = match latest.lock() {
                Ok(mut map) => map.drain().collect(),
                Err(_) => return,
            };
            for (id, sessions) in batch {
                let event = PresenceEvent {
                    discussion_id: id.clone(),
                    sessions: sessions as u64,
                    timestamp: now_ms(),
                };
                if let Err(e) = presence.publish(&id, &event).await {
                    tracing::debug!("presence of {id} not published: {e}");
                }
            }
        }
    });
}

/// Install the Prometheus recorder globally and register every ssehub metric at zero
/// ([`ssehub::metric_names::describe`]), so `/metrics` lists them all from startup.
pub fn install_metrics()
-> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    ssehub::metric_names::describe();
    Ok(handle)
}

/// An SSE endpoint for one kind of discussion channel: the discussion id names the channel, the
/// initial event comes from `initial(store, id)`, and the channel goes with its last session.
fn discussion_endpoint<E, F, Fut>(
    manager: &ChannelManager<E>,
    pattern: &str,
    store: &Store,
    initial: F,
) -> ssehub::Result<SseEndpoint<E>>
where
    E: Serialize + Send + Sync + 'static,
    F: Fn(Store, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<E>> + Send + 'static,
{
    let store = store.clone();
    let initial = Arc::new(initial);
    let cleanup = manager.clone();
    Ok(SseEndpoint::new(manager.clone(), pattern)?
        .resource(|p: &PathParams| p.get("discussionId").unwrap_or_default().to_owned())
        .validate(|p: &PathParams| p.get("discussionId").is_some_and(|id| !id.is_empty()))
        .initial_event(move |p: PathParams| {
            let id = p.get("discussionId").map(str::to_owned);
            let (store, initial) = (store.clone(), initial.clone());
            async move { initial(store, id?).await }
        })
        .on_disconnect(move |p: &PathParams| {
            if let Some(id) = p.get("discussionId") {
                cleanup.cleanup_if_empty(id);
            }
        }))
}

/// The whole app as a router (used by `main` and by the end-to-end tests).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route(
            "/api/comments/{discussion_id}",
            post(add_comment).get(get_count),
        )
        .route("/api/votes/{discussion_id}", post(cast_vote).get(get_votes))
        .route("/api/sessions/{discussion_id}", get(get_sessions))
        .route("/metrics", get(render_metrics))
        .route_service(state.endpoint.pattern(), state.endpoint.clone())
        .route_service(state.votes_endpoint.pattern(), state.votes_endpoint.clone())
        .route_service(
            state.presence_endpoint.pattern(),
            state.presence_endpoint.clone(),
        )
        .route_service(state.multiplex.path(), state.multiplex.clone())
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
    let not_built = get(move || async move { (StatusCode::NOT_FOUND, msg) });
    Router::new()
        .route("/react", not_built.clone())
        .route("/react/", not_built.clone())
        .route("/react/{*rest}", not_built)
}
