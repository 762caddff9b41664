//! NATS backend for ssehub: JetStream history with stream-sequence ids, or core NATS only.
//!
//! [`NatsBroker`] keeps one NATS connection per broker. In the default
//! [`Mode::JetStream`] every topic is a subject of one JetStream stream (`<prefix>.>`) that keeps
//! the last `history` events per subject, so browsers resume after a reconnect; the event id is
//! `<epoch>-<stream sequence>`, where the epoch identifies the stream incarnation (its creation
//! time), so an id from a deleted and recreated stream answers a gap, never a wrong replay. In
//! [`Mode::Core`] events go over core NATS only: no history, and a dropped connection yields a
//! [`Delivery::Gap`] so sessions are sent a `reset`.
//!
//! Supported servers: nats-server 2.9 and newer with JetStream enabled (`-js`) for
//! [`Mode::JetStream`]; any nats-server 2.x for [`Mode::Core`]. Tested against nats-server
//! 2.9.10 (Debian). Uses only APIs present in 2.9: stream create/info, publish with ack,
//! `STREAM.MSG.GET` by sequence and last-by-subject, and ephemeral ordered pull consumers
//! (`direct_get` is not used: it needs `allow_direct`, which a 2.9 stream does not set by default).
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use ssehub_core::{Broker, Delivery, Message, Topic};
//! use ssehub_nats::NatsBroker;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let broker = NatsBroker::connect("nats://127.0.0.1:4222").await?;
//! let topic = Topic::new("discussion:1:comments")?;
//! let mut sub = broker.subscribe(&topic).await?;
//! let id = broker.publish(&topic, Message::new("hello")).await?;
//! match sub.next().await {
//!     Some(Delivery::Event(env)) => assert_eq!(env.id, id),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # How live events learn their id
//!
//! The stream sequence is only known once the server stored the event, so a plain core-NATS
//! subscriber could not learn it. In JetStream mode each live topic on a node is therefore fed by
//! one ephemeral *ordered pull consumer* filtered to the topic's subject: every message carries
//! its stream sequence, the consumer detects its own gaps (missed heartbeats, a sequence jump, a
//! restarted server) and restarts after the last delivered sequence, so nothing published while
//! the node was disconnected is lost as long as it is still in the stream; when it is not, the
//! subscription yields [`Delivery::Gap`].

#![forbid(unsafe_code)]

mod error;
mod subject;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

pub use async_nats;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use ssehub_core::{
    Broker, Capabilities, Delivery, Envelope, Error, EventId, EventName, Message, Replay, Result,
    Subscription, Topic,
};
use tokio::sync::{OnceCell, broadcast};
use tokio::task::JoinHandle;

use crate::error::{NatsError, boxed};
use crate::subject::{
    escape_token, subject_topic, topic_subject, unescape_token, valid_prefix, valid_stream_name,
};

/// Header carrying the (escaped) event name.
const EVENT_HEADER: &str = "Ssehub-Event";
/// Header carrying the stream epoch (JetStream mode).
const EPOCH_HEADER: &str = "Ssehub-Epoch";
/// Header carrying the whole event id (core mode).
const ID_HEADER: &str = "Ssehub-Id";
/// Bytes kept free for headers below the server's `max_payload` (which counts headers too).
const HEADER_RESERVE: usize = 1024;

/// How events travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Events are stored in a JetStream stream: history, replay, nothing lost across reconnects
    /// (within the history window). Needs a server started with JetStream (`-js`).
    #[default]
    JetStream,
    /// Core NATS only: no history (resume answers `reset`), a dropped connection is a gap.
    Core,
}

/// Builds a [`NatsBroker`]; every setter documents its default.
///
/// Its `Debug` output never shows credentials (a password in the URL, a token).
#[derive(Clone)]
#[must_use]
pub struct NatsBrokerBuilder {
    url: String,
    prefix: String,
    stream: Option<String>,
    history: usize,
    max_payload: usize,
    max_age: Option<Duration>,
    mode: Mode,
    token: Option<String>,
    user_password: Option<(String, String)>,
    timeout: Duration,
    presence_window: Duration,
    subscriber_buffer: usize,
    ping_interval: Duration,
}

impl fmt::Debug for NatsBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBrokerBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("stream", &self.stream_name())
            .field("history", &self.history)
            .field("max_payload", &self.max_payload)
            .field("max_age", &self.max_age)
            .field("mode", &self.mode)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "user_password",
                &self.user_password.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("timeout", &self.timeout)
            .field("presence_window", &self.presence_window)
            .field("subscriber_buffer", &self.subscriber_buffer)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

/// `nats://user:secret@host` → `nats://<redacted>@host`, for every comma-separated URL.
fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let (scheme, rest) = u.split_once("://").map_or(("", u), |(s, r)| (s, r));
            let sep = if scheme.is_empty() { "" } else { "://" };
            match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}{sep}<redacted>@{host}"),
                None => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl NatsBrokerBuilder {
    /// Start from the defaults, connecting to `url` (e.g. `nats://127.0.0.1:4222`; several
    /// servers comma-separated).
    pub fn new(url: impl Into<String>) -> Self {
        NatsBrokerBuilder {
            url: url.into(),
            prefix: "ssehub".to_string(),
            stream: None,
            history: 1000,
            max_payload: 1024 * 1024,
            max_age: None,
            mode: Mode::JetStream,
            token: None,
            user_password: None,
            timeout: Duration::from_secs(5),
            presence_window: Duration::from_millis(250),
            subscriber_buffer: 4096,
            ping_interval: Duration::from_secs(10),
        }
    }

    /// Root of every subject: topic `a:b` becomes `<prefix>.a.b` (each part escaped to one
    /// token). Dot-separated tokens of `A-Z a-z 0-9 - _`. Default: `ssehub`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// JetStream stream name. Default: the prefix upper-cased with `.` replaced by `_`
    /// (`SSEHUB`).
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = Some(name.into());
        self
    }

    /// Events kept per topic (`max_messages_per_subject` of the stream) when the broker creates
    /// the stream. Default: 1,000. An existing stream keeps its own setting, which
    /// [`Capabilities::history`] then reports.
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// Largest payload accepted, in bytes. Default: 1 MiB. The broker declares the smaller of
    /// this and the server's `max_payload` minus 1 KiB kept for headers (NATS counts headers in
    /// `max_payload`, which is 1 MiB by default).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Age after which the stream drops events, when the broker creates it. Default: none (only
    /// the per-topic history limit applies).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// JetStream (default) or core NATS only.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Authenticate with a token. Default: none (or whatever the URL carries).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticate with a user and password. Default: none (or whatever the URL carries).
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// How long a publish waits for the server's confirmation, and the bound of every other
    /// request (replay, health, connecting). Default: 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long [`Broker::cluster_sessions`] collects the answers of other nodes. Default:
    /// 250 ms.
    pub fn presence_window(mut self, window: Duration) -> Self {
        self.presence_window = window;
        self
    }

    /// Events a local subscription stream may fall behind before it receives a gap. Default:
    /// 4,096.
    pub fn subscriber_buffer(mut self, events: usize) -> Self {
        self.subscriber_buffer = events.max(1);
        self
    }

    /// How often the client pings the server when the connection is otherwise quiet. A server
    /// that stops answering (frozen process, half-open connection, silent network) is dropped
    /// after three unanswered pings, so it is detected within about three intervals, and the
    /// client reconnects: JetStream subscriptions resume where they were, core ones get a gap.
    /// Default: 10 s (async-nats' own default is 60 s, i.e. about 3 minutes to notice).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(10));
        self
    }

    fn stream_name(&self) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| self.prefix.to_ascii_uppercase().replace('.', "_"))
    }

    /// Connect, and in JetStream mode create the stream unless it exists.
    pub async fn build(self) -> Result<NatsBroker> {
        if !valid_prefix(&self.prefix) {
            return Err(NatsError::Config(
                "the prefix must be dot-separated tokens of A-Z a-z 0-9 - _",
            )
            .into());
        }
        let stream_name = self.stream_name();
        if !valid_stream_name(&stream_name) {
            return Err(
                NatsError::Config("the stream name must be 1-64 of A-Z a-z 0-9 - _").into(),
            );
        }
        let (events_tx, _) = broadcast::channel(64);
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout))
            .ping_interval(self.ping_interval)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * attempts as u64).min(1000))
            })
            .event_callback({
                let events_tx = events_tx.clone();
                // The first `Connected` is the initial connect, not a reconnect.
                let was_disconnected = Arc::new(AtomicBool::new(false));
                move |event| {
                    let events_tx = events_tx.clone();
                    let was_disconnected = was_disconnected.clone();
                    async move {
                        let ev = match event {
                            async_nats::Event::Connected => {
                                if was_disconnected.swap(false, Ordering::AcqRel) {
                                    ssehub_core::metrics::broker_reconnected("nats");
                                }
                                Some(ConnEvent::Connected)
                            }
                            async_nats::Event::Disconnected => {
                                was_disconnected.store(true, Ordering::Release);
                                Some(ConnEvent::Disconnected)
                            }
                            async_nats::Event::SlowConsumer(_) => Some(ConnEvent::SlowConsumer),
                            other => {
                                tracing::debug!(event = %other, "nats connection event");
                                None
                            }
                        };
                        if let Some(ev) = ev {
                            tracing::debug!(?ev, "nats connection event");
                            let _ = events_tx.send(ev);
                        }
                    }
                }
            });
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        // `retry_on_initial_connect` returns at once; wait for the first connection ourselves.
        let client = options
            .connect(self.url.as_str())
            .await
            .map_err(NatsError::Connect)?;
        wait_connected(&client, self.timeout).await?;
        let server_max = client.server_info().max_payload;
        let max_payload = self
            .max_payload
            .min(server_max.saturating_sub(HEADER_RESERVE));

        let mut js = jetstream::new(client.clone());
        js.set_timeout(self.timeout);
        let node = format!("{:016x}", rand::random::<u64>() | 1);
        let (epoch, history) = match self.mode {
            Mode::JetStream => {
                let info = ensure_stream(&js, &self, &stream_name).await?;
                (
                    epoch_of(&info),
                    usize::try_from(info.config.max_messages_per_subject)
                        .ok()
                        .filter(|h| *h > 0),
                )
            }
            Mode::Core => (node.clone(), None),
        };
        let inner = Arc::new(Inner {
            client,
            js,
            stream_name,
            epoch: RwLock::new(epoch),
            history,
            max_payload,
            node,
            counter: AtomicU64::new(0),
            publish_lock: tokio::sync::Mutex::new(()),
            topics: Mutex::new(HashMap::new()),
            subscriptions: Arc::new(AtomicUsize::new(0)),
            presence: Mutex::new(HashMap::new()),
            events: events_tx,
            tasks: Mutex::new(Vec::new()),
            config: self,
        });
        inner.start_background().await?;
        Ok(NatsBroker { inner })
    }
}

async fn wait_connected(client: &async_nats::Client, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return Err(NatsError::NotConnected.into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsBrokerBuilder,
    name: &str,
) -> Result<stream::Info> {
    let stream_config = stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{}.>", config.prefix)],
        max_messages_per_subject: i64::try_from(config.history).unwrap_or(i64::MAX),
        max_age: config.max_age.unwrap_or_default(),
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    // Nodes starting together race to create the stream: a create that loses the race fails,
    // and the next look finds the winner's stream. A few tries settle it.
    let mut attempt = 0;
    loop {
        match js.get_or_create_stream(stream_config.clone()).await {
            Ok(stream) => return Ok(stream.cached_info().clone()),
            Err(e) if attempt < 3 => {
                tracing::debug!(error = %e, stream = name, "nats: stream setup failed; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(NatsError::Stream(boxed(e)).into()),
        }
    }
}

/// The stream incarnation: its creation time in nanoseconds, as hex.
fn epoch_of(info: &stream::Info) -> String {
    format!("{:x}", info.created.unix_timestamp_nanos().max(0))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnEvent {
    Connected,
    Disconnected,
    SlowConsumer,
}

/// A NATS-backed [`Broker`]. Cheap to clone (clones share the connection and subscriptions).
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsBrokerBuilder,
    client: async_nats::Client,
    js: jetstream::Context,
    stream_name: String,
    /// JetStream: the stream's epoch as last seen (refreshed on reconnect). Core: the node epoch.
    epoch: RwLock<String>,
    history: Option<usize>,
    max_payload: usize,
    /// Random id of this broker instance (presence, core-mode id epoch).
    node: String,
    /// Core mode: last id counter.
    counter: AtomicU64,
    /// Core mode: ids are given in publish order.
    publish_lock: tokio::sync::Mutex<()>,
    topics: Mutex<HashMap<Topic, Weak<TopicShared>>>,
    subscriptions: Arc<AtomicUsize>,
    /// Presence: the last local session count reported per topic subject.
    presence: Mutex<HashMap<String, usize>>,
    events: broadcast::Sender<ConnEvent>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("config", &self.inner.config)
            .field("node", &self.inner.node)
            .field("history", &self.inner.history)
            .field("max_payload", &self.inner.max_payload)
            .finish_non_exhaustive()
    }
}

/// One live topic on this node: one NATS feed fanned out to every local stream.
struct TopicShared {
    topic: Topic,
    tx: broadcast::Sender<Delivery>,
    ready: OnceCell<()>,
    task: Mutex<Option<JoinHandle<()>>>,
    broker: Weak<Inner>,
}

impl Drop for TopicShared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        if let Some(inner) = self.broker.upgrade() {
            let mut topics = lock(&inner.topics);
            if topics
                .get(&self.topic)
                .is_some_and(|w| w.strong_count() == 0)
            {
                topics.remove(&self.topic);
            }
        }
    }
}

struct SubscriptionGuard(Arc<AtomicUsize>);

impl SubscriptionGuard {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        SubscriptionGuard(count)
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NatsBroker {
    /// Connect to `url` with the defaults (JetStream mode, prefix `ssehub`; see
    /// [`NatsBrokerBuilder`]).
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// Start building a broker that connects to `url`.
    pub fn builder(url: impl Into<String>) -> NatsBrokerBuilder {
        NatsBrokerBuilder::new(url)
    }

    /// The underlying client (one connection per broker).
    #[must_use]
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The mode this broker runs in.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.inner.config.mode
    }

    /// The NATS subject a topic maps to (`<prefix>.<escaped part>…`).
    #[must_use]
    pub fn subject_for(&self, topic: &Topic) -> String {
        topic_subject(&self.inner.config.prefix, topic)
    }

    /// The current epoch (JetStream: of the stream incarnation; core: of this broker).
    #[must_use]
    pub fn epoch(&self) -> String {
        self.inner.epoch()
    }
}

impl Inner {
    fn epoch(&self) -> String {
        self.epoch.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_epoch(&self, epoch: String) {
        *self.epoch.write().unwrap_or_else(|e| e.into_inner()) = epoch;
    }

    /// A message to ourselves through the server: when it returns, the server has processed
    /// everything this connection sent before it (a flush only empties our socket buffer).
    async fn round_trip(&self) -> Result<()> {
        let probe = async {
            let subject = self.client.new_inbox();
            let mut sub = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| NatsError::Subscribe(boxed(e)))?;
            self.client
                .publish(subject, Bytes::from_static(b"probe"))
                .await
                .map_err(|e| NatsError::Publish(boxed(e)))?;
            sub.next().await.ok_or(NatsError::ProbeTimeout)?;
            Ok::<(), Error>(())
        };
        tokio::time::timeout(self.config.timeout, probe)
            .await
            .map_err(|_| Error::from(NatsError::ProbeTimeout))?
    }

    fn presence_root(&self) -> String {
        format!("_ssehub_presence.{}", self.config.prefix)
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Re-read the stream (recreating it if it vanished) and refresh the epoch.
    async fn refresh_stream(&self) -> Result<stream::Info> {
        let info = ensure_stream(&self.js, &self.config, &self.stream_name).await?;
        self.set_epoch(epoch_of(&info));
        Ok(info)
    }

    /// Background tasks: epoch refresh on reconnect, presence responder.
    async fn start_background(self: &Arc<Self>) -> Result<()> {
        let mut tasks = Vec::new();
        if self.config.mode == Mode::JetStream {
            let weak = Arc::downgrade(self);
            let mut rx = self.events.subscribe();
            tasks.push(tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(ConnEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            let Some(inner) = weak.upgrade() else { return };
                            if let Err(e) = inner.refresh_stream().await {
                                tracing::warn!(error = %e, "nats: stream refresh after reconnect failed");
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        // Presence responder: answers `<root>.<topic tokens>` requests with this node's count.
        let mut sub = self
            .client
            .subscribe(format!("{}.>", self.presence_root()))
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        let weak = Arc::downgrade(self);
        tasks.push(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                if msg.payload.as_ref() == inner.node.as_bytes() {
                    continue; // our own request
                }
                let Some(topic) = subject_topic(&inner.presence_root(), &msg.subject) else {
                    continue;
                };
                let live = lock(&inner.topics)
                    .get(&topic)
                    .is_some_and(|w| w.strong_count() > 0);
                let count = if live {
                    lock(&inner.presence)
                        .get(topic.as_str())
                        .copied()
                        .unwrap_or(0)
                } else {
                    0
                };
                let _ = inner
                    .client
                    .publish(reply, Bytes::from(count.to_string()))
                    .await;
            }
        }));
        self.client
            .flush()
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        lock(&self.tasks).extend(tasks);
        Ok(())
    }

    fn parse_id(&self, id: &EventId) -> Option<(String, u64)> {
        let (epoch, seq) = id.as_str().rsplit_once('-')?;
        // Only the canonical spelling: digits, no leading zero, never 0.
        if epoch.is_empty()
            || seq.is_empty()
            || seq.starts_with('0')
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some((epoch.to_string(), seq.parse().ok()?))
    }

    async fn publish_jetstream(&self, subject: String, message: Message) -> Result<EventId> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let epoch = self.epoch();
            let headers = headers_for(&message.event, Some((EPOCH_HEADER, &epoch)))?;
            if !self.connected() {
                return Err(NatsError::NotConnected.into());
            }
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, message.data.clone())
                .await
                .map_err(|e| NatsError::Publish(boxed(e)))?;
            let ack = match ack.await {
                Ok(ack) => ack,
                Err(e) => {
                    use async_nats::jetstream::context::PublishErrorKind as K;
                    match e.kind() {
                        // Nothing was stored: safe to recreate the stream and try once more.
                        K::StreamNotFound if attempt == 1 => {
                            self.refresh_stream().await?;
                            continue;
                        }
                        K::TimedOut | K::BrokenPipe => {
                            return Err(NatsError::Unconfirmed(Some(boxed(e))).into());
                        }
                        _ => return Err(NatsError::Publish(boxed(e)).into()),
                    }
                }
            };
            if ack.stream != self.stream_name {
                return Err(NatsError::WrongStream(ack.stream).into());
            }
            return EventId::parse(&format!("{epoch}-{}", ack.sequence));
        }
    }

    async fn publish_core(&self, subject: String, message: Message) -> Result<EventId> {
        let id = {
            let _order = self.publish_lock.lock().await;
            if !self.connected() {
                return Err(NatsError::NotConnected.into());
            }
            let n = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
            let id = EventId::parse(&format!("{}-{n}", self.node))?;
            let headers = headers_for(&message.event, Some((ID_HEADER, id.as_str())))?;
            self.client
                .publish_with_headers(subject, headers, message.data)
                .await
                .map_err(|e| NatsError::Publish(boxed(e)))?;
            id
        };
        // The flush returns once the event left our socket (not once the server routed it: core
        // NATS is at-most-once); a publish buffered during an outage errors here.
        match tokio::time::timeout(self.config.timeout, self.client.flush()).await {
            Ok(Ok(())) if self.connected() => Ok(id),
            Ok(Ok(())) => Err(NatsError::Unconfirmed(None).into()),
            Ok(Err(e)) => Err(NatsError::Unconfirmed(Some(boxed(e))).into()),
            Err(_) => Err(NatsError::Unconfirmed(None).into()),
        }
    }

    /// Start the NATS feed of a topic; returns once it is live.
    async fn start_feed(
        self: &Arc<Self>,
        topic: &Topic,
        tx: broadcast::Sender<Delivery>,
    ) -> Result<JoinHandle<()>> {
        let subject = topic_subject(&self.config.prefix, topic);
        match self.config.mode {
            Mode::Core => {
                let sub = self
                    .client
                    .subscribe(subject)
                    .await
                    .map_err(|e| NatsError::Subscribe(boxed(e)))?;
                let events = self.events.subscribe();
                // A flush only means the SUB left our socket; a round trip on the same
                // connection means the server registered it, so an event published from any
                // connection after `subscribe` returns reaches us.
                self.round_trip().await?;
                Ok(tokio::spawn(core_feed(sub, events, tx)))
            }
            Mode::JetStream => {
                let info = self.refresh_stream().await?;
                let feed = JsFeed {
                    js: self.js.clone(),
                    stream_name: self.stream_name.clone(),
                    subject,
                    epoch: epoch_of(&info),
                    last: info.state.last_sequence,
                    last_on_subject: false,
                    tx,
                };
                let events = self.events.subscribe();
                let messages = feed.open().await?;
                Ok(tokio::spawn(feed.run(messages, events)))
            }
        }
    }
}

fn headers_for(event: &EventName, extra: Option<(&'static str, &str)>) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    let mut name = String::new();
    escape_token(event.as_str(), &mut name);
    headers.insert(EVENT_HEADER, name.as_str());
    if let Some((k, v)) = extra {
        headers.insert(k, v);
    }
    Ok(headers)
}

fn event_of(headers: Option<&HeaderMap>) -> Option<EventName> {
    let Some(value) = headers.and_then(|h| h.get(EVENT_HEADER)) else {
        return Some(EventName::MESSAGE);
    };
    EventName::from_wire(&unescape_token(value.as_str())?).ok()
}

async fn core_feed(
    mut sub: async_nats::Subscriber,
    mut events: broadcast::Receiver<ConnEvent>,
    tx: broadcast::Sender<Delivery>,
) {
    let mut gap_sent = false;
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else {
                    let _ = tx.send(Delivery::Gap);
                    return;
                };
                let id = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(ID_HEADER))
                    .and_then(|v| EventId::parse(v.as_str()).ok());
                match (id, event_of(msg.headers.as_ref())) {
                    (Some(id), Some(event)) => {
                        gap_sent = false;
                        let _ = tx.send(Delivery::Event(Envelope { id, event, data: msg.payload }));
                    }
                    _ => tracing::warn!(subject = %msg.subject, "nats: ignored a message without valid ssehub headers"),
                }
            }
            ev = events.recv() => match ev {
                Ok(ConnEvent::Disconnected | ConnEvent::SlowConsumer)
                | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Core NATS does not keep what was sent while we were away or dropped.
                    if !gap_sent {
                        gap_sent = true;
                        let _ = tx.send(Delivery::Gap);
                    }
                }
                Ok(ConnEvent::Connected) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The JetStream feed of one topic: an ordered pull consumer from `last + 1`, restarted after
/// the last delivered sequence whenever it fails.
struct JsFeed {
    js: jetstream::Context,
    stream_name: String,
    subject: String,
    epoch: String,
    /// Last stream sequence handled (delivered, or the stream's last when the feed started).
    last: u64,
    /// Whether `last` is a message of this subject that was delivered.
    last_on_subject: bool,
    tx: broadcast::Sender<Delivery>,
}

impl JsFeed {
    async fn open(&self) -> Result<consumer::pull::Ordered> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.last + 1,
                },
                // Short pulls, so heartbeats (half of this) notice a lost consumer quickly.
                max_expires: Duration::from_secs(4),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        consumer
            .messages()
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)).into())
    }

    /// Whether every message of the subject after `self.last` is still in the stream. Trimming
    /// drops the oldest messages of a subject first, so it is enough that `last` is still there.
    ///
    /// Only a definite "no such message" counts as trimmed: a request that failed (a timeout
    /// under load, a reconnect) proves nothing, so it is asked again, with backoff, until the
    /// server answers. (Answering "trimmed" on a failed request sent spurious `reset`s to every
    /// session of the topic.)
    async fn nothing_trimmed(&self) -> bool {
        if !self.last_on_subject {
            return true;
        }
        let mut delay = Duration::from_millis(50);
        loop {
            let error: async_nats::Error = match self.js.get_stream_no_info(&self.stream_name).await
            {
                Ok(stream) => match stream.get_raw_message(self.last).await {
                    Ok(_) => return true,
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                        return false;
                    }
                    Err(e) => Box::new(e),
                },
                Err(e) => Box::new(e),
            };
            tracing::debug!(error = %error, subject = %self.subject, "nats: cannot tell whether history was trimmed; asking again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn run(
        mut self,
        mut messages: consumer::pull::Ordered,
        mut events: broadcast::Receiver<ConnEvent>,
    ) {
        let mut received = 0u64;
        // Poll at least every second. async-nats 0.51's ordered consumer answers `Pending` after
        // its first missed heartbeat without arranging a wake-up, so without a new message it
        // would never look again. (`next` is cancel-safe: dropping it loses nothing.) One timer
        // per feed, not one per message.
        let mut repoll = tokio::time::interval(Duration::from_secs(1));
        repoll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = repoll.tick() => continue,
                event = events.recv() => match event {
                    // Reconnected: start again after the last event delivered. Messages the
                    // server sent to the old connection are gone, and the ordered consumer only
                    // notices a hole when a later message arrives: with no later publish, the
                    // subscription would stall behind it.
                    Ok(ConnEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::debug!(subject = %self.subject, last = self.last, "nats: reconnected; reopening the ordered consumer");
                        drop(messages);
                        messages = self.reopen().await;
                        received = 0;
                        continue;
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            match next {
                Some(Ok(msg)) => {
                    let Ok(info) = msg.info() else { continue };
                    let (seq, consumer_seq) = (info.stream_sequence, info.consumer_sequence);
                    // consumer_seq restarting at 1 means the ordered consumer recreated itself
                    // (after the last sequence it delivered): check nothing was trimmed meanwhile.
                    if consumer_seq == 1 && received > 0 && !self.nothing_trimmed().await {
                        tracing::warn!(subject = %self.subject, last = self.last, "nats: history trimmed while the consumer was recreated; sessions get a reset");
                        let _ = self.tx.send(Delivery::Gap);
                    }
                    received += 1;
                    if seq <= self.last {
                        continue; // already delivered (a recreated consumer starting earlier)
                    }
                    self.last = seq;
                    self.last_on_subject = true;
                    let headers = msg.headers.as_ref();
                    let epoch = headers
                        .and_then(|h| h.get(EPOCH_HEADER))
                        .map_or(self.epoch.as_str(), |v| v.as_str());
                    let id = EventId::parse(&format!("{epoch}-{seq}"));
                    match (id, event_of(headers)) {
                        (Ok(id), Some(event)) => {
                            let env = Envelope {
                                id,
                                event,
                                data: msg.payload.clone(),
                            };
                            let _ = self.tx.send(Delivery::Event(env));
                        }
                        _ => {
                            tracing::warn!(subject = %self.subject, seq, "nats: ignored a message with invalid ssehub headers");
                        }
                    }
                }
                other => {
                    match other {
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, subject = %self.subject, "nats: ordered consumer failed; restarting")
                        }
                        _ => {
                            tracing::debug!(subject = %self.subject, "nats: ordered consumer ended; restarting")
                        }
                    }
                    drop(messages);
                    messages = self.reopen().await;
                    received = 0;
                }
            }
        }
    }

    /// Reopen after a failure, retrying until it works; yields a gap when events were lost.
    async fn reopen(&mut self) -> consumer::pull::Ordered {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            let info = match self.js.get_stream(&self.stream_name).await {
                Ok(mut s) => match s.info().await {
                    Ok(info) => info.clone(),
                    Err(_) => continue,
                },
                Err(_) => continue,
            };
            if epoch_of(&info) != self.epoch {
                // A new stream incarnation: everything before it is gone.
                tracing::warn!(subject = %self.subject, "nats: the stream was recreated; sessions get a reset");
                let _ = self.tx.send(Delivery::Gap);
                self.epoch = epoch_of(&info);
                self.last = info.state.last_sequence;
                self.last_on_subject = false;
            } else if !self.nothing_trimmed().await {
                tracing::warn!(subject = %self.subject, last = self.last, "nats: history trimmed while the consumer was down; sessions get a reset");
                let _ = self.tx.send(Delivery::Gap);
                self.last = info.state.last_sequence;
                self.last_on_subject = false;
            }
            match self.open().await {
                Ok(m) => return m,
                Err(e) => {
                    tracing::debug!(error = %e, "nats: reopening the ordered consumer failed")
                }
            }
        }
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, topic: &Topic, message: Message) -> Result<EventId> {
        let max = self.inner.max_payload;
        if message.data.len() > max {
            return Err(Error::PayloadTooLarge {
                size: message.data.len(),
                max,
            });
        }
        let subject = topic_subject(&self.inner.config.prefix, topic);
        match self.inner.config.mode {
            Mode::JetStream => self.inner.publish_jetstream(subject, message).await,
            Mode::Core => self.inner.publish_core(subject, message).await,
        }
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription> {
        let (shared, rx) = {
            let mut topics = lock(&self.inner.topics);
            let shared = match topics.get(topic).and_then(Weak::upgrade) {
                Some(shared) => shared,
                None => {
                    let shared = Arc::new(TopicShared {
                        topic: topic.clone(),
                        tx: broadcast::channel(self.inner.config.subscriber_buffer).0,
                        ready: OnceCell::new(),
                        task: Mutex::new(None),
                        broker: Arc::downgrade(&self.inner),
                    });
                    topics.insert(topic.clone(), Arc::downgrade(&shared));
                    shared
                }
            };
            // Subscribed before the feed starts, so nothing it sends is missed.
            let rx = shared.tx.subscribe();
            (shared, rx)
        };
        shared
            .ready
            .get_or_try_init(|| async {
                let task = self.inner.start_feed(topic, shared.tx.clone()).await?;
                *lock(&shared.task) = Some(task);
                Ok::<(), Error>(())
            })
            .await?;
        let guard = SubscriptionGuard::new(self.inner.subscriptions.clone());
        Ok(Box::pin(futures_util::stream::unfold(
            (rx, shared, guard),
            |(mut rx, shared, guard)| async move {
                match rx.recv().await {
                    Ok(d) => Some((d, (rx, shared, guard))),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(topic = %shared.topic.as_str(), missed = n, "nats: a subscription fell behind its topic's buffer; it gets a reset");
                        Some((Delivery::Gap, (rx, shared, guard)))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        )))
    }

    async fn replay(&self, topic: &Topic, after: &EventId) -> Result<Replay> {
        if self.inner.config.mode == Mode::Core {
            return Ok(Replay::Gap);
        }
        let Some((epoch, seq)) = self.inner.parse_id(after) else {
            return Ok(Replay::Gap);
        };
        let timeout = self.inner.config.timeout;
        tokio::time::timeout(timeout * 2, self.replay_inner(topic, &epoch, seq))
            .await
            .map_err(|_| Error::from(NatsError::ReplayTimeout))?
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_history(self.inner.history)
            .with_max_payload(self.inner.max_payload)
            .with_durable(self.inner.config.mode == Mode::JetStream)
            .with_presence(true)
    }

    fn id_order(&self, a: &EventId, b: &EventId) -> Option<std::cmp::Ordering> {
        let (ea, sa) = self.inner.parse_id(a)?;
        let (eb, sb) = self.inner.parse_id(b)?;
        (ea == eb).then(|| sa.cmp(&sb))
    }

    fn active_subscriptions(&self) -> usize {
        self.inner.subscriptions.load(Ordering::Acquire)
    }

    async fn cluster_sessions(&self, topic: &Topic, local: usize) -> Result<usize> {
        {
            let mut presence = lock(&self.inner.presence);
            if local == 0 {
                presence.remove(topic.as_str());
            } else {
                presence.insert(topic.as_str().to_string(), local);
            }
        }
        let inner = &self.inner;
        let subject = topic_subject(&inner.presence_root(), topic);
        let inbox = inner.client.new_inbox();
        let mut sub = inner
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| NatsError::Presence(boxed(e)))?;
        inner
            .client
            .publish_with_reply(subject, inbox, Bytes::from(inner.node.clone()))
            .await
            .map_err(|e| NatsError::Presence(boxed(e)))?;
        inner
            .client
            .flush()
            .await
            .map_err(|e| NatsError::Presence(boxed(e)))?;
        let mut total = local;
        let deadline = tokio::time::sleep(inner.config.presence_window);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                msg = sub.next() => match msg {
                    Some(msg) => {
                        let n = std::str::from_utf8(&msg.payload).ok().and_then(|s| s.parse::<usize>().ok());
                        total = total.saturating_add(n.unwrap_or(0));
                    }
                    None => break,
                }
            }
        }
        Ok(total)
    }

    async fn health(&self) -> Result<()> {
        let inner = &self.inner;
        let timeout = inner.config.timeout;
        let probe = async {
            inner.round_trip().await?;
            if inner.config.mode == Mode::JetStream {
                inner.refresh_stream().await?;
            }
            Ok::<(), Error>(())
        };
        if !inner.connected() {
            return Err(NatsError::NotConnected.into());
        }
        tokio::time::timeout(timeout, probe)
            .await
            .map_err(|_| Error::from(NatsError::ProbeTimeout))?
    }
}

impl NatsBroker {
    async fn replay_inner(&self, topic: &Topic, epoch: &str, after: u64) -> Result<Replay> {
        let inner = &self.inner;
        let subject = topic_subject(&inner.config.prefix, topic);
        let mut stream = inner
            .js
            .get_stream(&inner.stream_name)
            .await
            .map_err(|e| NatsError::Read(boxed(e)))?;
        let info = stream
            .info()
            .await
            .map_err(|e| NatsError::Read(boxed(e)))?
            .clone();
        let current = epoch_of(&info);
        if current != inner.epoch() {
            inner.set_epoch(current.clone());
        }
        if epoch != current
            || after == 0
            || after < info.state.first_sequence
            || after > info.state.last_sequence
        {
            return Ok(Replay::Gap);
        }
        // The id must be a message of this topic, published under this epoch, still stored.
        if !message_is(&stream, after, &subject, epoch).await? {
            return Ok(Replay::Gap);
        }
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m.sequence,
            Err(e) => {
                use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
                if e.kind() == K::NoMessageFound {
                    return Ok(Replay::Gap);
                }
                return Err(NatsError::Read(boxed(e)).into());
            }
        };
        let mut events = Vec::new();
        if last > after {
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: after + 1,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| NatsError::Read(boxed(e)))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| NatsError::Read(boxed(e)))?;
            let mut prev = after;
            while prev < last {
                let msg = match messages.next().await {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => return Err(NatsError::Read(boxed(e)).into()),
                    None => return Err(NatsError::ReplayTimeout.into()),
                };
                let seq = msg.info().map_err(NatsError::Read)?.stream_sequence;
                if seq <= prev {
                    continue;
                }
                prev = seq;
                let headers = msg.headers.as_ref();
                let msg_epoch = headers
                    .and_then(|h| h.get(EPOCH_HEADER))
                    .map_or(current.as_str(), |v| v.as_str());
                match (
                    EventId::parse(&format!("{msg_epoch}-{seq}")),
                    event_of(headers),
                ) {
                    (Ok(id), Some(event)) => events.push(Envelope {
                        id,
                        event,
                        data: msg.payload.clone(),
                    }),
                    // Not an ssehub event: it cannot be told, so neither can the rest.
                    _ => return Ok(Replay::Gap),
                }
            }
        }
        // Trimming drops the oldest first: if `after` is still there, nothing after it was
        // skipped while we read.
        if !message_is(&stream, after, &subject, epoch).await? {
            return Ok(Replay::Gap);
        }
        Ok(Replay::Events(events))
    }
}

async fn message_is(stream: &stream::Stream, seq: u64, subject: &str, epoch: &str) -> Result<bool> {
    match stream.get_raw_message(seq).await {
        Ok(m) => Ok(m.subject.as_str() == subject
            && m.headers.get(EPOCH_HEADER).map(|v| v.as_str()) == Some(epoch)),
        Err(e) => {
            use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
            match e.kind() {
                K::NoMessageFound | K::InvalidSubject => Ok(false),
                // "no message found" comes back as a JetStream API error on some servers.
                K::JetStream(_) => Ok(false),
                K::Other => Err(NatsError::Read(boxed(e)).into()),
            }
        }
    }
}
