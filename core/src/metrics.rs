//! Metric names, recorded through the [`metrics`] facade (a no-op until the application installs
//! a recorder, e.g. `metrics-exporter-prometheus`).
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `ssehub_sessions` | gauge | open sessions on this node |
//! | `ssehub_channels` | gauge | channels (broker subscriptions) on this node |
//! | `ssehub_events_published_total` | counter | events accepted by the broker from this node |
//! | `ssehub_publish_errors_total` | counter | publishes that failed |
//! | `ssehub_events_delivered_total` | counter | event frames queued to sessions (one per session) |
//! | `ssehub_slow_consumer_disconnects_total` | counter | sessions ended because their queue overflowed |
//! | `ssehub_resets_total` | counter, label `reason` | `reset` events sent |
//! | `ssehub_replays_total` | counter | resumes answered from history |
//! | `ssehub_replayed_events_total` | counter | events sent from history |
//! | `ssehub_broker_gaps_total` | counter | live-feed gaps reported by the broker |
//! | `ssehub_broker_reconnects_total` | counter, label `backend` | broker connections re-established |
//!
//! # Example
//!
//! ```
//! assert_eq!(ssehub_core::metrics::SESSIONS, "ssehub_sessions");
//! ```

/// Open sessions on this node.
pub const SESSIONS: &str = "ssehub_sessions";
/// Channels (broker subscriptions) on this node.
pub const CHANNELS: &str = "ssehub_channels";
/// Events accepted by the broker from this node.
pub const EVENTS_PUBLISHED: &str = "ssehub_events_published_total";
/// Publishes that failed.
pub const PUBLISH_ERRORS: &str = "ssehub_publish_errors_total";
/// Event frames queued to sessions.
pub const EVENTS_DELIVERED: &str = "ssehub_events_delivered_total";
/// Sessions ended because their queue overflowed.
pub const SLOW_CONSUMER_DISCONNECTS: &str = "ssehub_slow_consumer_disconnects_total";
/// `reset` events sent, by reason.
pub const RESETS: &str = "ssehub_resets_total";
/// Resumes answered from history.
pub const REPLAYS: &str = "ssehub_replays_total";
/// Events sent from history.
pub const REPLAYED_EVENTS: &str = "ssehub_replayed_events_total";
/// Live-feed gaps reported by the broker.
pub const BROKER_GAPS: &str = "ssehub_broker_gaps_total";
/// Broker connections re-established, by backend.
pub const BROKER_RECONNECTS: &str = "ssehub_broker_reconnects_total";

/// Count a broker reconnect; backends call it when their connection comes back.
pub fn broker_reconnected(backend: &'static str) {
    metrics::counter!(BROKER_RECONNECTS, "backend" => backend).increment(1);
}

pub(crate) fn resets_sent(reason: crate::ResetReason, sessions: usize) {
    metrics::counter!(RESETS, "reason" => reason.as_str()).increment(sessions as u64);
}
