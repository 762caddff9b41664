//! The two servers under test, run as child processes (`ssehub-load --serve ...`).
//!
//! Both serve the same routes and publish the same events:
//!
//! - `GET /sse/{channel}` — the SSE stream of one channel.
//! - `POST /publish?channel=C&channels=K&count=N&rate=R&pad=P&batch=B` — publish `count` events to
//!   channel `C` (or to each of channels `0..K`), `rate` rounds per second (0: as fast as
//!   possible); each event's data is `{"n":<seq>,"t":<publish time, ns since the epoch>,"pad":..}`.
//! - `GET /stats` — `{"sessions":..,"slow_disconnects":..}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use ssehub_axum::{MultiplexEndpoint, PathParams, SseEndpoint, WriteTimeoutListener};
use ssehub_core::{Broker, ChannelManager};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// The event both servers publish.
#[derive(Clone, Debug, Serialize)]
pub struct BenchEvent {
    /// Sequence number within the channel, from 0.
    pub n: u64,
    /// Publish time, nanoseconds since the Unix epoch (taken just before publishing).
    pub t: u64,
    /// Padding to the requested event size.
    pub pad: &'static str,
}

/// The queue bound of both servers: ssehub's default session queue (1,024 events) and the
/// baseline's broadcast capacity.
pub const QUEUE_EVENTS: usize = 1024;

/// Nanoseconds since the Unix epoch (the realtime clock both processes share).
#[must_use]
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Query of `POST /publish`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PublishParams {
    /// The channel to publish to (when `channels` is 0).
    #[serde(default)]
    pub channel: String,
    /// Publish to each of channels `"0"`..`"K-1"` instead.
    #[serde(default)]
    pub channels: usize,
    /// Events per channel.
    pub count: u64,
    /// Rounds per second; 0 publishes as fast as possible.
    #[serde(default)]
    pub rate: f64,
    /// Bytes of padding per event.
    #[serde(default)]
    pub pad: usize,
    /// With `rate` 0 and one channel: publish in batches of this many events (ssehub's
    /// `publish_many`; the baseline publishes them one by one, it has no broker round trip to
    /// save). 0 or 1: one publish at a time, each awaited.
    #[serde(default)]
    pub batch: usize,
    /// Each round visits the channels in a new random order (seeded by the round number).
    #[serde(default)]
    pub shuffle: bool,
    /// The number of the first event (`n` runs from `first` to `first + count - 1`).
    #[serde(default)]
    pub first: u64,
    /// Publish each event again until it is accepted (for up to 60 s in all), instead of
    /// counting an error: the round after a broker restart.
    #[serde(default)]
    pub retry: bool,
}

/// A permutation of `0..len`, the same for the same `seed` (xorshift Fisher–Yates).
fn shuffled(len: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..len).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = usize::try_from(x % (i as u64 + 1)).unwrap_or(0);
        order.swap(i, j);
    }
    order
}

/// Answer of `POST /publish`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PublishAnswer {
    /// Events accepted.
    pub published: u64,
    /// Publishes that failed.
    pub errors: u64,
    /// The id of the first event published, when the server gives ids a client can resume
    /// from (ssehub); empty otherwise.
    #[serde(default)]
    pub first_id: String,
}

/// Answer of `GET /stats`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Stats {
    /// Open sessions.
    pub sessions: usize,
    /// Sessions cut off at their queue bound.
    pub slow_disconnects: u64,
}

trait Publisher: Send + Sync + 'static {
    fn publish(
        &self,
        channel: &str,
        event: &BenchEvent,
    ) -> impl std::future::Future<Output = Option<String>> + Send;

    /// Publish `events` in order; the first id, or `None` when the batch failed.
    fn publish_many(
        &self,
        channel: &str,
        events: &[BenchEvent],
    ) -> impl std::future::Future<Output = Option<String>> + Send {
        async move {
            let mut first = None;
            for e in events {
                let id = self.publish(channel, e).await?;
                first.get_or_insert(id);
            }
            first
        }
    }
}

fn pad_str(len: usize) -> &'static str {
    static PADS: Mutex<Vec<(usize, &'static str)>> = Mutex::new(Vec::new());
    let mut pads = PADS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = pads.iter().find(|(l, _)| *l == len) {
        return s;
    }
    let s: &'static str = Box::leak("x".repeat(len).into_boxed_str());
    pads.push((len, s));
    s
}

async fn run_publish<P: Publisher>(p: &P, q: PublishParams) -> PublishAnswer {
    let pad = pad_str(q.pad);
    let names: Vec<String> = if q.channels == 0 {
        vec![q.channel.clone()]
    } else {
        (0..q.channels).map(|c| c.to_string()).collect()
    };
    let start = tokio::time::Instant::now();
    let giving_up = start + Duration::from_secs(60);
    let mut answer = PublishAnswer::default();
    if q.batch > 1 && q.rate <= 0.0 && names.len() == 1 {
        let mut n = 0;
        while n < q.count {
            let size = (q.count - n).min(q.batch as u64);
            let events: Vec<BenchEvent> = (n..n + size)
                .map(|n| BenchEvent {
                    n,
                    t: now_ns(),
                    pad,
                })
                .collect();
            match p.publish_many(&names[0], &events).await {
                Some(id) => {
                    if answer.published == 0 {
                        answer.first_id = id;
                    }
                    answer.published += size;
                }
                None => answer.errors += size,
            }
            n += size;
        }
        return answer;
    }
    for n in q.first..q.first + q.count {
        if q.rate > 0.0 {
            #[allow(clippy::cast_precision_loss)]
            let at = start + Duration::from_secs_f64((n - q.first) as f64 / q.rate);
            tokio::time::sleep_until(at).await;
        }
        let order: Vec<usize> = if q.shuffle {
            shuffled(names.len(), n + 1)
        } else {
            (0..names.len()).collect()
        };
        for i in order {
            let name = &names[i];
            let id = loop {
                let event = BenchEvent {
                    n,
                    t: now_ns(),
                    pad,
                };
                match p.publish(name, &event).await {
                    Some(id) => break Some(id),
                    None if q.retry && tokio::time::Instant::now() < giving_up => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    None => break None,
                }
            };
            match id {
                Some(id) => {
                    if answer.published == 0 {
                        answer.first_id = id;
                    }
                    answer.published += 1;
                }
                None => answer.errors += 1,
            }
        }
    }
    answer
}

// ---------------------------------------------------------------- ssehub

#[derive(Clone)]
struct Hub {
    manager: ChannelManager<BenchEvent>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Publisher for Hub {
    async fn publish(&self, channel: &str, event: &BenchEvent) -> Option<String> {
        match self.manager.publish(channel, event).await {
            Ok(id) => Some(id.as_str().to_owned()),
            Err(e) => {
                // The first few failures go to stderr: what a run's error count is made of.
                static SHOWN: AtomicUsize = AtomicUsize::new(0);
                if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("ssehub-load server: publish failed: {e} ({e:?})");
                }
                None
            }
        }
    }

    async fn publish_many(&self, channel: &str, events: &[BenchEvent]) -> Option<String> {
        let ids = self.manager.publish_many(channel, events).await.ok()?;
        ids.first().map(|id| id.as_str().to_owned())
    }
}

async fn hub_publish(State(h): State<Hub>, Query(q): Query<PublishParams>) -> Json<PublishAnswer> {
    Json(run_publish(&h, q).await)
}

async fn hub_stats(State(h): State<Hub>) -> Json<Stats> {
    let slow_disconnects = h.metrics.as_ref().map_or(0, |m| {
        m.render()
            .lines()
            .find(|l| l.starts_with(ssehub_core::metric_names::SLOW_CONSUMER_DISCONNECTS))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    });
    Json(Stats {
        sessions: h.manager.total_sessions(),
        slow_disconnects,
    })
}

/// The app a user builds with ssehub: a `ChannelManager` and an `SseEndpoint`, like the demo.
fn ssehub_app(broker: Arc<dyn Broker>, metrics: bool) -> Result<Router, ssehub_core::Error> {
    let manager = ChannelManager::<BenchEvent>::builder_dyn(broker)
        .key_prefix("bench")
        .build()?;
    let cleanup = manager.clone();
    let endpoint = SseEndpoint::new(manager.clone(), "/sse/{channel}")?
        .resource(|p: &PathParams| p.get("channel").unwrap_or_default().to_owned())
        .on_disconnect(move |p: &PathParams| {
            cleanup.cleanup_if_empty(p.get("channel").unwrap_or_default());
        });
    let metrics = if metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .ok()
    } else {
        None
    };
    // Several channels on one connection: `/mux?channel=bench/1&channel=bench/2`.
    let multiplex = MultiplexEndpoint::new("/mux").channel("bench", endpoint.clone())?;
    let state = Hub { manager, metrics };
    Ok(Router::new()
        .route("/publish", post(hub_publish))
        .route("/stats", get(hub_stats))
        .with_state(state)
        .merge(endpoint.into_router())
        .merge(multiplex.into_router()))
}

// ---------------------------------------------------------------- baseline

/// One channel of the baseline: event id and JSON, shared.
type Tx = broadcast::Sender<(u64, Arc<str>)>;

/// What a competent user writes by hand: one `tokio::sync::broadcast` per channel, JSON
/// serialized once per publish, one axum `Event` per subscriber.
#[derive(Clone, Default)]
struct Baseline {
    channels: Arc<Mutex<HashMap<String, Tx>>>,
    next_id: Arc<AtomicU64>,
    sessions: Arc<AtomicUsize>,
    lagged: Arc<AtomicU64>,
}

impl Baseline {
    fn sender(&self, channel: &str) -> Tx {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(QUEUE_EVENTS).0)
            .clone()
    }
}

impl Publisher for Baseline {
    async fn publish(&self, channel: &str, event: &BenchEvent) -> Option<String> {
        let Ok(json) = serde_json::to_string(event) else {
            return None;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tx = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .cloned();
        if let Some(tx) = tx {
            // No receiver is not an error: nobody listens.
            let _ = tx.send((id, json.into()));
        }
        Some(String::new())
    }
}

struct SessionGuard(Arc<AtomicUsize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn baseline_sse(
    State(b): State<Baseline>,
    Path(channel): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = b.sender(&channel).subscribe();
    b.sessions.fetch_add(1, Ordering::AcqRel);
    let guard = SessionGuard(b.sessions.clone());
    let lagged = b.lagged.clone();
    let retry = futures_util::stream::once(async {
        Ok::<_, Infallible>(Event::default().retry(Duration::from_secs(3)))
    });
    // A receiver that lagged has lost events: end its stream so the client reconnects (the
    // same policy as ssehub's default).
    let live = tokio_stream::StreamExt::map_while(BroadcastStream::new(rx), move |r| {
        let _keep = &guard;
        match r {
            Ok((id, json)) => Some(Ok(Event::default().id(id.to_string()).data(&*json))),
            Err(BroadcastStreamRecvError::Lagged(_)) => {
                lagged.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    });
    Sse::new(futures_util::StreamExt::chain(retry, live)).keep_alive(KeepAlive::default())
}

async fn baseline_publish(
    State(b): State<Baseline>,
    Query(q): Query<PublishParams>,
) -> Json<PublishAnswer> {
    Json(run_publish(&b, q).await)
}

async fn baseline_stats(State(b): State<Baseline>) -> impl IntoResponse {
    Json(Stats {
        sessions: b.sessions.load(Ordering::Acquire),
        slow_disconnects: b.lagged.load(Ordering::Relaxed),
    })
}

fn baseline_app() -> Router {
    Router::new()
        .route("/sse/{channel}", get(baseline_sse))
        .route("/publish", post(baseline_publish))
        .route("/stats", get(baseline_stats))
        .with_state(Baseline::default())
}

// ---------------------------------------------------------------- process entry

/// Which server `--serve` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// ssehub: `ChannelManager` + `SseEndpoint`.
    Ssehub,
    /// axum `Sse` + `broadcast`, by hand.
    Baseline,
}

impl Kind {
    /// The name used on the command line and in reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ssehub => "ssehub",
            Kind::Baseline => "baseline",
        }
    }
}

async fn broker(url: &str) -> Result<Arc<dyn Broker>, Box<dyn std::error::Error>> {
    if url == "memory" {
        return Ok(Arc::new(ssehub_memory::MemoryBroker::new()));
    }
    if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        return Ok(Arc::new(ssehub_redis::RedisBroker::connect(url).await?));
    }
    if url.starts_with("nats://") {
        return Ok(Arc::new(ssehub_nats::NatsBroker::connect(url).await?));
    }
    Err(format!("unknown backend {url:?}").into())
}

/// The router of one server kind: what `--serve` serves, for in-process measurements too.
pub async fn app(
    kind: Kind,
    backend: &str,
    metrics: bool,
) -> Result<Router, Box<dyn std::error::Error>> {
    Ok(match kind {
        Kind::Ssehub => ssehub_app(broker(backend).await?, metrics)?,
        Kind::Baseline => baseline_app(),
    })
}

/// Serve `app` on `listener` as both servers are served: `TCP_NODELAY` and a 10 s write
/// timeout on every connection.
pub async fn serve_on(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    // As the demo does: close connections of clients that stopped reading. Both servers get it.
    // TCP_NODELAY on every connection (both servers): without it, Nagle's algorithm and the
    // client's delayed ACK hold back small SSE writes by up to 40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let listener = WriteTimeoutListener::new(listener, Duration::from_secs(10));
    // The routes are turned into services once, here; `axum::serve(listener, app)` would do
    // it again for every connection (`Router::with_state` per accepted connection), which
    // holds a boxed clone of every route's service per connection for its lifetime: 1.2 KB and
    // two blocks more per idle connection once the multiplexed endpoint joined the routes.
    axum::serve(listener, app.with_state::<()>(()).into_make_service()).await
}

/// Run one server until killed (the body of `ssehub-load --serve KIND --port P ...`).
pub async fn serve(
    kind: Kind,
    port: u16,
    backend: &str,
    metrics: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    crate::raise_fd_limit();
    let app = app(kind, backend, metrics).await?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    // `SSEHUB_BENCH_LEAN=1`: the ssehub server on `ssehub_axum::serve` with its lean HTTP/1
    // driver for event streams (same TCP_NODELAY and 10 s write timeout as `serve_on`).
    if kind == Kind::Ssehub && std::env::var("SSEHUB_BENCH_LEAN").is_ok_and(|v| v == "1") {
        let listener = WriteTimeoutListener::new(listener, Duration::from_secs(10));
        ssehub_axum::serve(listener, app)
            .header_read_timeout(None)
            .lean_streams(true)
            .await?;
        return Ok(());
    }
    serve_on(listener, app).await?;
    Ok(())
}
