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
//! [`describe`] describes them all to the recorder and registers each at zero, so an exporter
//! lists every one from startup.
//!
//! # Example
//!
//! ```
//! assert_eq!(ssehub_core::metric_names::SESSIONS, "ssehub_sessions");
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

/// Every value of the `reason` label of [`RESETS`].
const RESET_REASONS: [crate::ResetReason; 8] = [
    crate::ResetReason::MalformedId,
    crate::ResetReason::OutOfWindow,
    crate::ResetReason::NoHistory,
    crate::ResetReason::BrokerGap,
    crate::ResetReason::Overflow,
    crate::ResetReason::HistoryTrimmed,
    crate::ResetReason::EpochChanged,
    crate::ResetReason::DataLost,
];

/// Every value of the `backend` label of [`BROKER_RECONNECTS`].
const BACKENDS: [&str; 3] = ["memory", "redis", "nats"];

/// Describe every metric of this module to the installed recorder and register each at zero
/// (every known label value of the labelled ones), so an exporter shows all of them from
/// startup instead of each one only after its first use.
///
/// Call it once, right after installing the recorder. Calling it again, or after sessions
/// exist, changes no value: the gauges are registered by adding zero, not by setting them.
///
/// # Example
///
/// ```
/// use std::sync::Mutex;
/// use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
///
/// /// A recorder that notes the names it is told about.
/// #[derive(Default)]
/// struct Names(Mutex<Vec<String>>);
///
/// impl Recorder for Names {
///     fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
///     fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
///     fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
///     fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
///         self.0.lock().unwrap().push(key.name().to_owned());
///         Counter::noop()
///     }
///     fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
///         self.0.lock().unwrap().push(key.name().to_owned());
///         Gauge::noop()
///     }
///     fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
///         Histogram::noop()
///     }
/// }
///
/// let names = Names::default();
/// metrics::with_local_recorder(&names, ssehub_core::metric_names::describe);
/// let names = names.0.into_inner().unwrap();
/// assert!(names.iter().any(|n| n == ssehub_core::metric_names::SESSIONS));
/// assert!(names.iter().any(|n| n == ssehub_core::metric_names::BROKER_GAPS));
/// // `ssehub_resets_total` once per reason, `ssehub_broker_reconnects_total` once per backend.
/// assert_eq!(names.iter().filter(|n| *n == ssehub_core::metric_names::RESETS).count(), 8);
/// ```
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};

    describe_gauge!(SESSIONS, "Open sessions on this node.");
    describe_gauge!(CHANNELS, "Channels (broker subscriptions) on this node.");
    describe_counter!(
        EVENTS_PUBLISHED,
        "Events accepted by the broker from this node."
    );
    describe_counter!(PUBLISH_ERRORS, "Publishes that failed.");
    describe_counter!(
        EVENTS_DELIVERED,
        "Event frames queued to sessions (one per session)."
    );
    describe_counter!(
        SLOW_CONSUMER_DISCONNECTS,
        "Sessions ended because their queue overflowed."
    );
    describe_counter!(RESETS, "`reset` events sent, by reason.");
    describe_counter!(REPLAYS, "Resumes answered from history.");
    describe_counter!(REPLAYED_EVENTS, "Events sent from history.");
    describe_counter!(BROKER_GAPS, "Live-feed gaps reported by the broker.");
    describe_counter!(
        BROKER_RECONNECTS,
        "Broker connections re-established, by backend."
    );

    for name in [SESSIONS, CHANNELS] {
        metrics::gauge!(name).increment(0.0);
    }
    for name in [
        EVENTS_PUBLISHED,
        PUBLISH_ERRORS,
        EVENTS_DELIVERED,
        SLOW_CONSUMER_DISCONNECTS,
        REPLAYS,
        REPLAYED_EVENTS,
        BROKER_GAPS,
    ] {
        metrics::counter!(name).increment(0);
    }
    for reason in RESET_REASONS {
        metrics::counter!(RESETS, "reason" => reason.as_str()).increment(0);
    }
    for backend in BACKENDS {
        metrics::counter!(BROKER_RECONNECTS, "backend" => backend).increment(0);
    }
}

/// Count a broker reconnect; backends call it when their connection comes back.
pub fn broker_reconnected(backend: &'static str) {
    metrics::counter!(BROKER_RECONNECTS, "backend" => backend).increment(1);
}

pub(crate) fn resets_sent(reason: crate::ResetReason, sessions: usize) {
    metrics::counter!(RESETS, "reason" => reason.as_str()).increment(sessions as u64);
}
