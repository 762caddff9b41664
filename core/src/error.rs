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
    /// The application's own configuration was refused, at startup: a path pattern that does
    /// not parse or lacks a capture ([`SseEndpoint::new`], [`MultiplexEndpoint::channel`] in
    /// ssehub-axum), a multiplexed channel's name or label, a channel session opened without
    /// [`SubscribeOptions::for_multiplex`](crate::SubscribeOptions::for_multiplex), a key prefix
    /// or suffix that is not a valid key part ([`ChannelManagerBuilder::build`](crate::ChannelManagerBuilder::build)).
    /// Never temporary: fix the code.
    ///
    /// [`SseEndpoint::new`]: https://docs.rs/ssehub-axum/latest/ssehub_axum/struct.SseEndpoint.html#method.new
    /// [`MultiplexEndpoint::channel`]: https://docs.rs/ssehub-axum/latest/ssehub_axum/struct.MultiplexEndpoint.html#method.channel
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, naming the setting.
        reason: Cow<'static, str>,
    },
    /// A resource id (the variable part of a channel key) was refused: by
    /// [`validate_key_part`](crate::validate_key_part), and so by every [`ChannelManager`](crate::ChannelManager)
    /// method that takes a resource id (`publish`, `subscribe`, `channel`, `topic`,
    /// `close_channel`) and by [`Topic::from_parts`](crate::Topic::from_parts). The HTTP adapter
    /// answers `400`.
    #[error("invalid resource id: {reason}")]
    InvalidResourceId {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// A whole topic was refused by [`Topic::new`](crate::Topic::new): over
    /// [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes, or a part that is not a valid key part.
    #[error("invalid topic: {reason}")]
    InvalidTopic {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// An event id was refused by [`EventId::parse`](crate::EventId::parse) (empty, too long,
    /// or a byte outside `[A-Za-z0-9._~-]`). A malformed `Last-Event-ID` is not an error: the
    /// stream starts with a `reset` instead.
    #[error("invalid event id: {reason}")]
    InvalidEventId {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// An event name was refused by [`EventName::new`](crate::EventName::new) (control
    /// characters, empty, too long, or reserved), and so by
    /// [`ChannelManager::publish_named`](crate::ChannelManager::publish_named) and a manager's
    /// [`event_name`](crate::ChannelManagerBuilder::event_name).
    #[error("invalid event name: {reason}")]
    InvalidEventName {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// An idempotency key was refused by [`IdempotencyKey::new`](crate::IdempotencyKey::new):
    /// empty, over 255 bytes, or a character outside visible ASCII.
    #[error("invalid idempotency key: {reason}")]
    InvalidIdempotencyKey {
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// A batch ([`Broker::publish_many`](crate::Broker::publish_many),
    /// [`ChannelManager::publish_many`](crate::ChannelManager::publish_many)) failed part-way:
    /// its first `published.len()` events are stored, with these ids; the rest may or may not
    /// be. Publishing the rest again with the same idempotency keys stores each at most once.
    #[error("{} event(s) of the batch published, then: {source}", published.len())]
    PartlyPublished {
        /// The ids of the leading events that were stored, in order.
        published: Vec<crate::EventId>,
        /// Why the next one failed.
        #[source]
        source: Box<Error>,
    },
    /// A payload is larger than the broker or channel accepts: a publish over the manager's
    /// [`max_event_bytes`](crate::ChannelManagerBuilder::max_event_bytes) or the broker's
    /// `max_payload` ([`Capabilities`](crate::Capabilities)), and an initial event over it
    /// (the HTTP adapter answers `500`).
    #[error("payload of {size} bytes is over the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Size of the refused payload in bytes.
        size: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The event could not be serialized to JSON, on publish or for an initial event (the HTTP
    /// adapter answers `500`).
    #[error("event could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A limit on concurrent sessions was reached on subscribe:
    /// [`max_sessions`](crate::ChannelManagerBuilder::max_sessions) or
    /// [`max_sessions_per_channel`](crate::ChannelManagerBuilder::max_sessions_per_channel).
    /// Temporary; the HTTP adapter answers with a retry hint.
    #[error("too many sessions: {0}")]
    TooManySessions(Cow<'static, str>),
    /// The node holds as many channels as it may
    /// ([`max_channels`](crate::ChannelManagerBuilder::max_channels)); a new one cannot open.
    #[error("too many channels on this node (at most {max})")]
    TooManyChannels {
        /// The limit in force.
        max: usize,
    },
    /// A subscribe after [`ChannelManager::shutdown`](crate::ChannelManager::shutdown).
    /// Temporary (another node may answer); the HTTP adapter answers with a retry hint.
    #[error("shut down")]
    Shutdown,
    /// The broker failed: every [`Broker`](crate::Broker) method, and so publishing,
    /// subscribing (also for every session that waited on the same channel's failed broker
    /// subscription: the backend, message and temporariness are kept), replays and presence.
    /// Temporary errors get a retry hint from the HTTP adapter, the others `500`.
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
            Error::PartlyPublished { source, .. } => source.is_temporary(),
            _ => false,
        }
    }

    /// The same error again, for a failure that several callers wait on (a channel's broker
    /// subscription that failed while several sessions joined it): the variant, its fields and
    /// whether it is temporary are kept; a source error, which cannot be cloned, is kept as
    /// text in the message.
    pub(crate) fn replicate(&self) -> Error {
        match self {
            Error::InvalidConfig { reason } => Error::InvalidConfig {
                reason: reason.clone(),
            },
            Error::InvalidResourceId { reason } => Error::InvalidResourceId {
                reason: reason.clone(),
            },
            Error::InvalidTopic { reason } => Error::InvalidTopic {
                reason: reason.clone(),
            },
            Error::InvalidEventId { reason } => Error::InvalidEventId {
                reason: reason.clone(),
            },
            Error::InvalidEventName { reason } => Error::InvalidEventName {
                reason: reason.clone(),
            },
            Error::InvalidIdempotencyKey { reason } => Error::InvalidIdempotencyKey {
                reason: reason.clone(),
            },
            Error::PartlyPublished { published, source } => Error::PartlyPublished {
                published: published.clone(),
                source: Box::new(source.replicate()),
            },
            Error::PayloadTooLarge { size, max } => Error::PayloadTooLarge {
                size: *size,
                max: *max,
            },
            Error::Serialize(e) => {
                Error::Serialize(<serde_json::Error as serde::ser::Error>::custom(e))
            }
            Error::TooManySessions(why) => Error::TooManySessions(why.clone()),
            Error::TooManyChannels { max } => Error::TooManyChannels { max: *max },
            Error::Shutdown => Error::Shutdown,
            Error::Broker {
                backend,
                message,
                temporary,
                source,
            } => Error::Broker {
                backend,
                message: match source {
                    Some(source) => format!("{message}: {source}"),
                    None => message.clone(),
                },
                temporary: *temporary,
                source: None,
            },
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
