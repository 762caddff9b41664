//! The stream: the limits this broker creates it with, finding or creating it, and what an
//! existing stream's settings mean for the broker (its history, its epoch, how it differs).

use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode, stream};
use ssehub_core::Result;
use ssehub_core::backend::Backoff;

use crate::builder::NatsBrokerBuilder;
use crate::error::{NatsError, boxed};

/// The stream as this broker creates it when it is missing.
pub(super) fn stream_config(config: &NatsBrokerBuilder) -> stream::Config {
    stream::Config {
        name: config.stream_name(),
        subjects: vec![format!("{}.>", config.prefix)],
        max_messages_per_subject: i64::try_from(config.history).unwrap_or(i64::MAX),
        max_age: config.history_ttl,
        max_bytes: match config.max_bytes {
            0 => -1,
            n => i64::try_from(n).unwrap_or(i64::MAX),
        },
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        republish: Some(republish(&config.prefix)),
        // Zero asks for the server's default (2 minutes); the broker then sends no msg id. The
        // server refuses a window longer than the history's age.
        duplicate_window: match config.history_ttl {
            ttl if ttl.is_zero() => config.idempotency_window,
            ttl => config.idempotency_window.min(ttl),
        },
        ..Default::default()
    }
}

/// What the live feeds read (see `live`): every stored message again on
/// `_ssehub_live.<prefix>.…`, with its sequence and its subject's previous one.
pub(super) fn republish(prefix: &str) -> stream::Republish {
    stream::Republish {
        source: format!("{prefix}.>"),
        destination: super::live::live_subject(&format!("{prefix}.>")),
        headers_only: false,
    }
}

/// Find the stream, or create it with `config`.
pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    config: &stream::Config,
) -> Result<stream::Info> {
    // Nodes starting together race to create the stream: a create that loses the race fails,
    // and the next look finds the winner's stream. A few tries settle it.
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    let mut attempt = 0;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => {
                let info = stream.cached_info().clone();
                if info.config.republish == config.republish {
                    return Ok(info);
                }
                return add_republish(js, info, config).await;
            }
            Err(e) if storage_refused(&e) => {
                return Err(NatsError::StreamTooLarge {
                    max_bytes: config.max_bytes,
                    source: boxed(e),
                }
                .into());
            }
            Err(e) if attempt < 3 => {
                tracing::debug!(error = %e, stream = %config.name, "nats: stream setup failed; trying again");
                attempt += 1;
                backoff.wait().await;
            }
            Err(e) => return Err(NatsError::Stream(boxed(e)).into()),
        }
    }
}

/// A stream made before live delivery used republishing (or by hand): add it, keeping every
/// other setting. A stream that republishes elsewhere is refused: its live feeds would be silent.
async fn add_republish(
    js: &jetstream::Context,
    info: stream::Info,
    config: &stream::Config,
) -> Result<stream::Info> {
    if info.config.republish.is_some() {
        return Err(NatsError::Config(
            "the stream already republishes its messages elsewhere; ssehub needs its own republish setting (see the crate docs) for live delivery",
        )
        .into());
    }
    tracing::info!(stream = %info.config.name, "nats: adding the republish setting live delivery needs to the existing stream");
    let updated = stream::Config {
        republish: config.republish.clone(),
        ..info.config
    };
    match js.update_stream(&updated).await {
        Ok(info) => Ok(info),
        // nats-server before 2.10 cannot change a stream's republish setting.
        Err(e) => {
            tracing::error!(stream = %updated.name, error = %e, "nats: the stream has no republish setting and the server refused to add it");
            Err(NatsError::Config(
                "the stream exists without the republish setting live delivery needs, and this nats-server (before 2.10) cannot add it to an existing stream: delete the stream (ssehub creates it again; ids start a new epoch) or upgrade nats-server",
            )
            .into())
        }
    }
}

/// The server has not the storage the stream's `max_bytes` asks for.
fn storage_refused(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as K;
    matches!(e.kind(), K::JetStream(err) if err.error_code() == ErrorCode::STORAGE_RESOURCES_EXCEEDED
        || err.error_code() == ErrorCode::INSUFFICIENT_RESOURCES)
}

/// The stream incarnation: its creation time in nanoseconds, as hex.
pub(crate) fn epoch_of(info: &stream::Info) -> String {
    format!("{:x}", info.created.unix_timestamp_nanos().max(0))
}

/// Events the stream keeps per subject: its `max_msgs_per_subject`, or `usize::MAX` when that is
/// unlimited (`-1`, or `0`), where only its age and byte limits bound history.
pub(super) fn history_of(config: &stream::Config) -> usize {
    usize::try_from(config.max_messages_per_subject)
        .ok()
        .filter(|h| *h > 0)
        .unwrap_or(usize::MAX)
}

/// `<= 0` means unlimited in NATS limits.
fn limit(n: i64) -> String {
    if n <= 0 {
        "unlimited".to_string()
    } else {
        n.to_string()
    }
}

fn age(d: Duration) -> String {
    if d.is_zero() {
        "unlimited".to_string()
    } else {
        format!("{d:?}")
    }
}

/// The settings in which the existing stream `have` differs from the one this broker would
/// create (`want`), each as `name: stream has X, configured Y (builder option)`; empty when none.
pub(super) fn differences(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |name: &str, has: String, configured: String, option: &str| {
        if has != configured {
            out.push(format!(
                "{name}: stream has {has}, configured {configured} ({option})"
            ));
        }
    };
    differ(
        "max_msgs_per_subject",
        limit(have.max_messages_per_subject),
        limit(want.max_messages_per_subject),
        "history",
    );
    differ(
        "max_age",
        age(have.max_age),
        age(want.max_age),
        "history_ttl",
    );
    differ(
        "max_bytes",
        limit(have.max_bytes),
        limit(want.max_bytes),
        "max_bytes",
    );
    differ(
        "discard",
        format!("{:?}", have.discard),
        format!("{:?}", want.discard),
        "always Old",
    );
    if !want.duplicate_window.is_zero() {
        differ(
            "duplicate_window",
            age(have.duplicate_window),
            age(want.duplicate_window),
            "idempotency_window",
        );
    }
    differ(
        "retention",
        format!("{:?}", have.retention),
        format!("{:?}", want.retention),
        "always Limits",
    );
    let covered = want.subjects.iter().all(|s| have.subjects.contains(s));
    differ(
        "subjects",
        format!("{:?}", have.subjects),
        if covered {
            format!("{:?}", have.subjects)
        } else {
            format!("{:?}", want.subjects)
        },
        "prefix",
    );
    out
}

/// Warn when the existing stream differs from this broker's settings: the broker uses the stream
/// as it is (its history, its limits), so what the builder asked for does not apply.
pub(super) fn report_differences(have: &stream::Config, want: &stream::Config) {
    let differences = differences(have, want);
    if !differences.is_empty() {
        tracing::warn!(
            stream = %have.name,
            differences = %differences.join("; "),
            "nats: the stream already exists with other settings than this broker's; the stream's own settings apply (change them on the server, or delete the stream to have it created with these)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_history_is_history() {
        let mut c = stream::Config::default();
        for (per_subject, history) in [(-1, usize::MAX), (0, usize::MAX), (7, 7)] {
            c.max_messages_per_subject = per_subject;
            assert_eq!(history_of(&c), history);
        }
    }

    #[test]
    fn differences_name_both_values() {
        let want = stream_config(&NatsBrokerBuilder::new("nats://x").history(50));
        assert!(differences(&want, &want).is_empty());
        let have = stream::Config {
            max_messages_per_subject: 7,
            max_age: Duration::ZERO,
            max_bytes: -1,
            ..want.clone()
        };
        let text = differences(&have, &want).join("\n");
        assert!(
            text.contains("max_msgs_per_subject: stream has 7, configured 50"),
            "{text}"
        );
        assert!(
            text.contains("max_age: stream has unlimited, configured 86400s"),
            "{text}"
        );
        assert!(
            text.contains("max_bytes: stream has unlimited, configured 1073741824"),
            "{text}"
        );
        // Unlimited is unlimited, however it is spelled.
        let zero = stream::Config {
            max_bytes: 0,
            ..have.clone()
        };
        let minus = stream::Config {
            max_bytes: -1,
            ..have
        };
        assert!(differences(&zero, &minus).is_empty());
    }
}
