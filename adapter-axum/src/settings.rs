//! What both endpoints ([`SseEndpoint`](crate::SseEndpoint),
//! [`MultiplexEndpoint`](crate::MultiplexEndpoint)) set the same way for their streams: the retry
//! hint and its jitter, keep-alive comments, and the answer when no stream can open.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use ssehub_core::{Error, Transport};

use crate::body::SseBody;
use crate::response::{stream_headers, text};

/// The longest retry hint, retry jitter and keep-alive interval an [`SseEndpoint`](crate::SseEndpoint) or a
/// [`MultiplexEndpoint`](crate::MultiplexEndpoint) uses: 24 hours.
/// Longer settings are clamped to it when set, so no hint or timer computed from them can
/// overflow (`Duration::MAX` is a valid way to say "as long as possible").
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// How to answer when no stream can be opened for a temporary reason (session limits reached,
/// server shutting down, broker unavailable). A full channel table
/// ([`Error::TooManyChannels`]) is always answered `503` with `Retry-After`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// `200` with a `retry:` hint (base plus jitter) and an immediate end of stream. A browser's
    /// `EventSource` then reconnects after the hint; it would give up for good on a non-200.
    #[default]
    RetryLater,
    /// `503 Service Unavailable` with `Retry-After`, for clients that retry on their own.
    ServiceUnavailable,
}

#[derive(Clone, Debug)]
pub(crate) struct StreamSettings {
    pub(crate) retry: Duration,
    pub(crate) retry_jitter: Duration,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) unavailable: Unavailable,
    hasher: RandomState,
}

impl Default for StreamSettings {
    /// A 3 s retry hint with up to 2 s of jitter, keep-alive after 15 s of silence, `200` with
    /// a retry hint when no stream can open.
    fn default() -> Self {
        StreamSettings {
            retry: Duration::from_secs(3),
            retry_jitter: Duration::from_secs(2),
            keep_alive: Some(Duration::from_secs(15)),
            unavailable: Unavailable::RetryLater,
            hasher: RandomState::new(),
        }
    }
}

impl StreamSettings {
    /// The retry hint plus a random part of the jitter.
    pub(crate) fn jittered_retry(&self) -> Duration {
        let jitter = u64::try_from(self.retry_jitter.as_millis()).unwrap_or(u64::MAX);
        let mut h = self.hasher.build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let extra = h.finish() % jitter.saturating_add(1);
        self.retry.saturating_add(Duration::from_millis(extra))
    }

    /// The answer when no stream can be opened for a temporary reason (see [`Unavailable`]).
    pub(crate) fn refuse(&self, transport: &dyn Transport, why: &Error) -> Response<SseBody> {
        let retry = self.jittered_retry();
        tracing::debug!(error = %why, ?retry, "no stream opened");
        // A full channel table is said plainly, whatever the policy: a browser should not keep
        // a connection slot open retrying into it.
        let answer = match why {
            Error::TooManyChannels { .. } => Unavailable::ServiceUnavailable,
            _ => self.unavailable,
        };
        match answer {
            Unavailable::RetryLater => {
                let mut res = Response::new(SseBody::once(transport.retry(retry)));
                stream_headers(&mut res, transport);
                res
            }
            Unavailable::ServiceUnavailable => {
                let mut res = text(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n");
                let secs = retry.as_secs().max(1);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
                res
            }
        }
    }
}

/// The setters of [`StreamSettings`] on an endpoint with `fn settings_mut(&mut self) -> &mut
/// StreamSettings`: one definition and one set of docs for both endpoints.
macro_rules! stream_settings_setters {
    () => {
        /// The `retry:` hint sent first on every stream. Default: 3 s. At most
        /// [`MAX_DURATION`](crate::MAX_DURATION) (longer is clamped to it).
        #[must_use]
        pub fn retry(mut self, retry: std::time::Duration) -> Self {
            self.settings_mut().retry = retry.min(crate::MAX_DURATION);
            self
        }

        /// The most random extra delay added to retry hints of streams refused or ended by the
        /// server (limits, shutdown), so clients do not all return at once. Default: 2 s. At
        /// most [`MAX_DURATION`](crate::MAX_DURATION) (longer is clamped to it), so a hint is
        /// at most twice that.
        #[must_use]
        pub fn retry_jitter(mut self, jitter: std::time::Duration) -> Self {
            self.settings_mut().retry_jitter = jitter.min(crate::MAX_DURATION);
            self
        }

        /// Send a keep-alive comment after this long without output; `None` disables it.
        /// Default: 15 s. At most [`MAX_DURATION`](crate::MAX_DURATION) (longer is clamped to
        /// it).
        #[must_use]
        pub fn keep_alive(mut self, every: Option<std::time::Duration>) -> Self {
            self.settings_mut().keep_alive = every.map(|d| d.min(crate::MAX_DURATION));
            self
        }

        /// How to answer when no stream can be opened for a temporary reason.
        /// Default: [`Unavailable::RetryLater`](crate::Unavailable::RetryLater).
        #[must_use]
        pub fn unavailable(mut self, answer: crate::Unavailable) -> Self {
            self.settings_mut().unavailable = answer;
            self
        }
    };
}

pub(crate) use stream_settings_setters;
