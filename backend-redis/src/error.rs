//! The private error of this backend, mapped into [`ssehub_core::Error::Broker`].

use std::time::Duration;

use ssehub_core::Error;

pub(crate) const BACKEND: &str = "redis";

#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("{what}: {source}")]
    Redis {
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("unexpected reply from redis: {0}")]
    Protocol(&'static str),
    #[error("subscriber connection is down, reconnecting")]
    Disconnected,
    #[error(
        "no replica acknowledged the publish in time (it may be stored on the master only; a retry with its idempotency key stores it once)"
    )]
    NotReplicated,
}

impl RedisError {
    pub(crate) fn redis(what: &'static str) -> impl FnOnce(redis::RedisError) -> RedisError {
        move |source| RedisError::Redis { what, source }
    }

    pub(crate) fn is_temporary(&self) -> bool {
        match self {
            RedisError::Redis { source, .. } => is_outage(source),
            RedisError::Timeout(_) | RedisError::Disconnected | RedisError::NotReplicated => true,
            RedisError::Protocol(_) => false,
        }
    }
}

/// Whether `e` says Redis is away or moving (not that the request is wrong): the connection
/// dropped or timed out, the server is loading, or a cluster is moving slots or failing over
/// (still answering MOVED/ASK after the client's own retries, a replica read-only until
/// promoted). A transaction (an atomic pipeline) that a cluster refused because its slot moved
/// (`EXECABORT` whose every error is one of those: redis-rs does not follow `MOVED` for a
/// transaction) is one too: after a failover, the next attempt goes to the new master.
pub(crate) fn is_outage(e: &redis::RedisError) -> bool {
    fn moving(kind: redis::ServerErrorKind) -> bool {
        matches!(
            kind,
            redis::ServerErrorKind::BusyLoading
                | redis::ServerErrorKind::TryAgain
                | redis::ServerErrorKind::MasterDown
                | redis::ServerErrorKind::ClusterDown
                | redis::ServerErrorKind::Moved
                | redis::ServerErrorKind::Ask
                | redis::ServerErrorKind::ReadOnly
        )
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    match e.kind() {
        redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort) => {
            e.clone().into_server_errors().is_some_and(|errors| {
                !errors.is_empty() && errors.iter().all(|(_, e)| e.kind().is_some_and(moving))
            })
        }
        redis::ErrorKind::Server(kind) => moving(kind),
        _ => false,
    }
}

impl From<RedisError> for Error {
    fn from(err: RedisError) -> Self {
        let temporary = err.is_temporary();
        let message = match &err {
            RedisError::Redis { what, .. } => format!("{what} failed"),
            other => other.to_string(),
        };
        Error::broker(BACKEND, temporary, message, Some(Box::new(err)))
    }
}

pub(crate) type RResult<T> = std::result::Result<T, RedisError>;

/// Run a Redis command future with a deadline.
pub(crate) async fn timed<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> RResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(res) => res.map_err(RedisError::redis(what)),
        Err(_) => Err(RedisError::Timeout(what)),
    }
}

/// A configuration error, said without echoing what the user passed (a URL may hold a password).
pub(crate) fn config_error(message: &'static str) -> Error {
    Error::broker(BACKEND, false, message, None)
}
