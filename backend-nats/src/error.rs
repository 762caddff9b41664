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
    #[error("a replay lost messages on the way (delivery {got} came after {after})")]
    ReplayLost { after: u64, got: u64 },
    #[error("health probe did not come back in time")]
    ProbeTimeout,
}

impl NatsError {
    fn temporary(&self) -> bool {
        match self {
            NatsError::Config(_) | NatsError::WrongStream(_) | NatsError::StreamTooLarge { .. } => {
                false
            }
            NatsError::Stream(e)
            | NatsError::Publish(e)
            | NatsError::Subscribe(e)
            | NatsError::Read(e) => !refused_for_good(e.as_ref()),
            _ => true,
        }
    }
}

/// JetStream API errors that no retry fixes: a bad request (`code 400`), an invalid stream
/// configuration (10052), a stream that exists with another configuration (10058), subjects
/// that overlap another stream's (10065). A leader election, a timeout or no responders stay
/// temporary.
const PERMANENT_ERR_CODES: [u64; 4] = [10003, 10052, 10058, 10065];

/// Whether `e` (or an error it wraps) is a JetStream API error that retrying cannot fix.
/// async-nats keeps the API error in its error kinds, not as a source, but every kind
/// displays it as `… (code N, error code M)`: that text is what is read here.
fn refused_for_good(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some((code, err_code)) = api_codes(&e.to_string())
            && (code == 400 || PERMANENT_ERR_CODES.contains(&err_code))
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// `(code, error code)` from a JetStream API error's text.
fn api_codes(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind("(code ")? + "(code ".len()..];
    let (code, rest) = rest.split_once(", error code ")?;
    let err_code = rest.split_once(')')?.0;
    Some((code.trim().parse().ok()?, err_code.trim().parse().ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_are_permanent_and_outages_temporary() {
        let config = "jetstream error: duplicates window can not be larger then max age (code 500, error code 10052)";
        assert_eq!(api_codes(config), Some((500, 10052)));
        let e = NatsError::Stream(config.into());
        assert!(!e.temporary());
        let e = NatsError::Read("jetstream error: bad request (code 400, error code 10003)".into());
        assert!(!e.temporary());
        let leader = "jetstream error: JetStream cluster can not handle request (code 503, error code 10009)";
        assert!(NatsError::Stream(leader.into()).temporary());
        assert!(NatsError::Publish("timed out".into()).temporary());
        assert!(NatsError::Read("no responders".into()).temporary());
    }
}
