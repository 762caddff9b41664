//! The private error type of the NATS backend, mapped into [`ssehub_core::Error`].

use ssehub_core::Error;

/// Everything that can go wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NatsError {
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("could not connect to nats")]
    Connect(#[source] async_nats::ConnectError),
    #[error("not connected to nats (reconnecting)")]
    NotConnected,
    #[error("jetstream stream setup failed")]
    Stream(#[source] async_nats::Error),
    #[error("publish failed")]
    Publish(#[source] async_nats::Error),
    #[error("publish was not confirmed in time")]
    Unconfirmed(#[source] Option<async_nats::Error>),
    #[error("the publish ack came from stream {0:?}, not this broker's stream")]
    WrongStream(String),
    #[error("subscribe failed")]
    Subscribe(#[source] async_nats::Error),
    #[error("reading the stream failed")]
    Read(#[source] async_nats::Error),
    #[error("reading the stream timed out ({0})")]
    ReadTimeout(&'static str),
    #[error(
        "the server has not the JetStream storage for the stream's max_bytes of {max_bytes} (set NatsBrokerBuilder::max_bytes lower, or give the server more)"
    )]
    StreamTooLarge {
        max_bytes: i64,
        #[source]
        source: async_nats::Error,
    },
    #[error("replay timed out")]
    ReplayTimeout,
    #[error("health probe did not come back in time")]
    ProbeTimeout,
}

impl NatsError {
    fn temporary(&self) -> bool {
        !matches!(
            self,
            NatsError::Config(_) | NatsError::WrongStream(_) | NatsError::StreamTooLarge { .. }
        )
    }
}

impl From<NatsError> for Error {
    fn from(e: NatsError) -> Self {
        let temporary = e.temporary();
        let message = e.to_string();
        Error::broker("nats", temporary, message, Some(Box::new(e)))
    }
}

/// Box any async-nats error.
pub(crate) fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> async_nats::Error {
    Box::new(e)
}
