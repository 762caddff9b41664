//! [`NatsBrokerBuilder`]: the settings of a [`NatsBroker`], each setter with its default.

use std::fmt;
use std::time::Duration;

use ssehub_core::Result;

use crate::NatsBroker;
use crate::error::NatsError;
use crate::subject::{valid_prefix, valid_stream_name};

/// How events travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Events are stored in a JetStream stream: history, replay, nothing lost across reconnects
    /// (within the history window). Needs a server started with JetStream (`-js`).
    #[default]
    JetStream,
    /// Core NATS only: no history (resume answers `reset`), a dropped connection is a gap.
    ///
    /// At most once, and never silently: a publish answers `Ok` once the server it is connected
    /// to has routed the event to every subscription it had (a probe sent after the event came
    /// back on the same connection), so each subscriber connected then receives it, or a gap
    /// when its own connection drops first. A publish that cannot be confirmed within the
    /// response timeout, or across a reconnect, fails with a temporary error: the event may or
    /// may not have been delivered. In a cluster, `Ok` means the publisher's server routed it;
    /// a subscriber on another server behind a failing route may miss it without a gap.
    Core,
}

/// Builds a [`NatsBroker`]; every setter documents its default, [`build`](Self::build)
/// connects.
///
/// - The payload limit in force is the smaller of `max_payload` and the server's `max_payload`
///   minus 1 KiB kept for headers (NATS counts headers in `max_payload`, 1 MiB by default).
/// - A server that stops answering is dropped after three unanswered pings, so it is detected
///   within about three `ping_interval`s; the client then reconnects (the wait grows by 50 ms
///   per attempt up to `reconnect_max_delay`): JetStream subscriptions resume where they were,
///   core ones get a gap.
///
/// Its `Debug` output never shows credentials (a password in the URL, a token).
#[derive(Clone)]
#[must_use]
pub struct NatsBrokerBuilder {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) stream: Option<String>,
    pub(crate) history: usize,
    pub(crate) max_payload: usize,
    pub(crate) history_ttl: Duration,
    pub(crate) idempotency_window: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) mode: Mode,
    pub(crate) token: Option<String>,
    pub(crate) user_password: Option<(String, String)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) health_timeout: Duration,
    pub(crate) subscriber_buffer: usize,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) ping_interval: Duration,
}

impl fmt::Debug for NatsBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBrokerBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("stream", &self.stream_name())
            .field("history", &self.history)
            .field("max_payload", &self.max_payload)
            .field("history_ttl", &self.history_ttl)
            .field("max_bytes", &self.max_bytes)
            .field("mode", &self.mode)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "user_password",
                &self.user_password.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("health_timeout", &self.health_timeout)
            .field("subscriber_buffer", &self.subscriber_buffer)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
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
            history_ttl: Duration::from_secs(24 * 3600),
            idempotency_window: ssehub_core::DEFAULT_IDEMPOTENCY_WINDOW,
            max_bytes: 1 << 30,
            mode: Mode::JetStream,
            token: None,
            user_password: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            health_timeout: Duration::from_secs(5),
            subscriber_buffer: 4096,
            reconnect_max_delay: Duration::from_secs(1),
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
    /// the stream. Default: 1,000.
    ///
    /// An existing stream keeps its own settings (this, [`history_ttl`](Self::history_ttl),
    /// [`max_bytes`](Self::max_bytes)); the broker logs a warning naming each one that differs,
    /// and [`Capabilities::history`](ssehub_core::Capabilities::history) reports the stream's
    /// own: its `max_msgs_per_subject`, or `usize::MAX` when that is unlimited (`-1`), where only
    /// the stream's age and byte limits bound history.
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// How long history lives: the stream's `max_age` (events older than this are dropped, so a
    /// topic nobody publishes to any more does not keep its history forever) when the broker
    /// creates the stream. Default: 24 hours. Zero keeps events until the per-topic history
    /// limit or [`max_bytes`](Self::max_bytes) drops them.
    ///
    /// A session resuming from an id older than this gets a `reset`.
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// How long a publish's idempotency key is remembered. JetStream: the stream's
    /// `duplicate_window` when the broker creates it, and each publish's `Nats-Msg-Id` is its
    /// topic and key, so a repeat within it, from any node, is stored once and answers the
    /// first id. Core mode: each node remembers its own publishes (a repeat through the same
    /// node sends nothing; through another node it is sent again: core NATS shares no state).
    /// Default: 2 minutes, and at most [`history_ttl`](Self::history_ttl) (the server refuses
    /// a longer window). Zero remembers none.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Largest size of the whole stream in bytes (its `max_bytes`) when the broker creates it:
    /// past it the oldest events of the stream are dropped, so publishing goes on when many
    /// topics fill it (without a limit, the server's JetStream storage fills up and then every
    /// publish fails). Default: 1 GiB. Zero: no limit.
    ///
    /// The server sets this much of its JetStream storage aside for the stream: building fails
    /// with a (non-temporary) error naming this setting when the server has less.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
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

    ssehub_core::broker_builder_setters! {
        max_payload = "1 MiB",
        subscriber_buffer = "4,096",
        connect_timeout = "5 seconds",
        response_timeout = "5 seconds",
        health_timeout = "5 seconds",
        reconnect_max_delay = "1 second",
        ping_interval = "10 seconds",
    }

    pub(crate) fn stream_name(&self) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| self.prefix.to_ascii_uppercase().replace('.', "_"))
    }

    /// Check the settings, connect, and in JetStream mode create the stream unless it exists.
    pub async fn build(self) -> Result<NatsBroker> {
        if !valid_prefix(&self.prefix) {
            return Err(NatsError::Config(
                "the prefix must be dot-separated tokens of A-Z a-z 0-9 - _",
            )
            .into());
        }
        if !valid_stream_name(&self.stream_name()) {
            return Err(
                NatsError::Config("the stream name must be 1-64 of A-Z a-z 0-9 - _").into(),
            );
        }
        NatsBroker::open(self).await
    }
}
