//! The one public error type of ssehub.
//!
//! # Example
//!
//! ```
//! use ssehub_core::{Error, EventId};
//!
//! let err = EventId::parse("bad id\n").unwrap_err();
//! assert!(matches!(err, Error::InvalidEventId { .. }));
//! assert!(!err.is_temporary());
//! ```

use std::borrow::Cow;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error of a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in ssehub.
///
/// Messages are lowercase and never contain the offending input verbatim when it could be large
/// or hold control characters; they describe it instead. Backends keep a private error type and
/// map it into [`Error::Broker`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A resource id (the variable part of a channel key) was refused.
    #[error("invalid resource id: {reason}")]
    InvalidResourceId {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// A topic was refused.
    #[error("invalid topic: {reason}")]
    InvalidTopic {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// An event id was refused (for example a malformed `Last-Event-ID`).
    #[error("invalid event id: {reason}")]
    InvalidEventId {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// An event name was refused (control characters, empty, too long, or reserved).
    #[error("invalid event name: {reason}")]
    InvalidEventName {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// A payload is larger than the broker or channel accepts.
    #[error("payload of {size} bytes is over the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Size of the refused payload in bytes.
        size: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The event could not be serialized to JSON.
    #[error("event could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A limit on concurrent sessions was reached.
    #[error("too many sessions: {0}")]
    TooManySessions(Cow<'static, str>),
    /// The node holds as many channels as it may
    /// ([`max_channels`](crate::ChannelManagerBuilder::max_channels)); a new one cannot open.
    #[error("too many channels on this node (at most {max})")]
    TooManyChannels {
        /// The limit in force.
        max: usize,
    },
    /// The hub or broker has been shut down.
    #[error("shut down")]
    Shutdown,
    /// The broker failed.
    #[error("broker error ({backend}): {message}")]
    Broker {
        /// Which backend raised it, e.g. `"redis"`.
        backend: &'static str,
        /// What went wrong, lowercase.
        message: String,
        /// Whether retrying later may succeed (connection lost, timeout).
        temporary: bool,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether the same call may succeed later (a broker outage, a full server), as opposed to a
    /// request that is wrong in itself. Reconnect logic retries only temporary errors.
    #[must_use]
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Broker { temporary, .. } => *temporary,
            Error::TooManySessions(_) | Error::TooManyChannels { .. } | Error::Shutdown => true,
            _ => false,
        }
    }

    /// Build a broker error. Backends call this from their private error mapping.
    pub fn broker(
        backend: &'static str,
        temporary: bool,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Error::Broker {
            backend,
            message: message.into(),
            temporary,
            source,
        }
    }
}
