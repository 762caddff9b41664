//! Reading one message or the stream's state, with one answer to "is it there?" for the feed and
//! the replay alike.
//!
//! Only a definite answer from the server counts: "no message found" (or "stream not found": the
//! stream, and so the message, is gone) means absent. Every other failure (a timeout, a
//! reconnect, a JetStream 503 while a stream leader is elected, a cluster not available) says
//! nothing about the message: the request is retried a few times with backoff, within the
//! response timeout, and then reported as [`NatsError::Read`], a temporary error. It never
//! becomes "absent", which would send sessions a spurious `reset`, and it never retries forever.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, RawMessageError};
use async_nats::jetstream::{ErrorCode, message::StreamMessage};
use futures_util::StreamExt;
use ssehub_core::Result;
use ssehub_core::backend::Backoff;
use tokio::time::Instant;

use crate::error::{NatsError, boxed};

/// Attempts of one look-up before it is reported as a temporary failure.
const ATTEMPTS: u32 = 4;

/// A handle on the stream that makes no request by itself.
pub(super) type StreamHandle = stream::Stream<()>;

/// What a failed message get says about the message: `true` when the server definitely has no
/// such message, `false` when it says nothing (ask again).
pub(super) fn says_absent(error: &RawMessageError) -> bool {
    match error.kind() {
        LastRawMessageErrorKind::NoMessageFound | LastRawMessageErrorKind::InvalidSubject => true,
        LastRawMessageErrorKind::JetStream(e) => {
            let code = e.error_code();
            code == ErrorCode::NO_MESSAGE_FOUND || code == ErrorCode::STREAM_NOT_FOUND
        }
        LastRawMessageErrorKind::Other => false,
    }
}

/// One message get: `Some` when found, `None` when definitely absent, an error to retry.
fn classify(
    result: std::result::Result<StreamMessage, RawMessageError>,
) -> std::result::Result<Option<StreamMessage>, async_nats::Error> {
    match result {
        Ok(m) => Ok(Some(m)),
        Err(e) if says_absent(&e) => Ok(None),
        Err(e) => Err(boxed(e)),
    }
}

/// Run `attempt` until it answers, at most [`ATTEMPTS`] times and within `timeout`; then the last
/// failure as a temporary error.
pub(super) async fn retrying<T, F, Fut>(
    what: &'static str,
    timeout: Duration,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, async_nats::Error>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    let mut tries = 0;
    loop {
        tries += 1;
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => return Err(NatsError::ReadTimeout(what).into()),
        };
        let delay = backoff.next_delay();
        if tries >= ATTEMPTS || Instant::now() + delay >= deadline {
            tracing::debug!(error = %error, what, tries, "nats: look-up failed; giving up for now");
            return Err(NatsError::Read(error).into());
        }
        tracing::debug!(error = %error, what, "nats: look-up failed; asking again");
        tokio::time::sleep(delay).await;
    }
}

/// The message at `seq`; `None` when the stream has none there.
pub(super) async fn message(
    stream: &StreamHandle,
    seq: u64,
    timeout: Duration,
) -> Result<Option<StreamMessage>> {
    retrying("message by sequence", timeout, || async {
        classify(stream.get_raw_message(seq).await)
    })
    .await
}

/// The last message of `subject`; `None` when the subject has none.
pub(super) async fn last_of(
    stream: &StreamHandle,
    subject: &str,
    timeout: Duration,
) -> Result<Option<StreamMessage>> {
    retrying("last message of a subject", timeout, || async {
        classify(stream.get_last_raw_message_by_subject(subject).await)
    })
    .await
}

/// The stream's info.
pub(super) async fn info(stream: &StreamHandle, timeout: Duration) -> Result<stream::Info> {
    retrying("stream info", timeout, || async {
        stream.get_info().await.map_err(boxed)
    })
    .await
}

/// How many messages the stream holds of each subject matching `filter` (one request, paged by
/// the server).
pub(super) async fn subject_counts(
    stream: &StreamHandle,
    filter: &str,
    timeout: Duration,
) -> Result<Vec<(String, u64)>> {
    retrying("messages per subject", timeout, || async {
        let mut subjects = stream.info_with_subjects(filter).await.map_err(boxed)?;
        let mut counts = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (name, n) = entry.map_err(boxed)?;
            counts.push((name, u64::try_from(n).unwrap_or(u64::MAX)));
        }
        Ok(counts)
    })
    .await
}
