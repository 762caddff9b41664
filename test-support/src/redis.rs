//! Redis servers for tests: the URL to use, or an own `redis-server` to kill and restart.
//!
//! [`redis_url`] answers `SSEHUB_REDIS_URL` when set, else the URL of one server shared by every
//! test of the process (started on first use), else skips. Fault tests start their own
//! [`RedisServer`] and never touch a shared one. A server is a `redis-server` on a free loopback
//! port in a temp dir, or a `redis:7` container when the binary is missing and a Docker engine
//! answers (see [`crate::server`]).
//!
//! Every server started here is also watched by a small shell loop that kills it when the test
//! process is gone, so a crashed or aborted test run leaves no `redis-server` behind.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use ssehub_test_support::redis::{RedisOptions, RedisServer};
//! use ssehub_test_support::server::BrokerServer;
//!
//! let mut server = RedisServer::start(RedisOptions::new().persistent(true)).await?;
//! let url = server.url();
//! server.kill();
//! server.restart().await?;
//! assert_eq!(url, server.url());
//! # Ok(()) }
//! ```

use std::path::Path;

use tokio::sync::OnceCell;

use crate::server::{Server, Source, Spec, decide, docker_engine, exchange};
use crate::which;

/// The variable naming a Redis someone else runs.
pub const ENV_URL: &str = "SSEHUB_REDIS_URL";

/// The Redis URL for ordinary tests: `SSEHUB_REDIS_URL`, else a process-wide shared server of
/// our own, else `None` after [`skip`](crate::skip) (which panics under `SSEHUB_REQUIRE_BROKERS=1`).
///
/// Tests using it must use unique topic names and must never kill, pause or flush it.
pub async fn redis_url() -> Option<String> {
    static SHARED: OnceCell<Result<String, String>> = OnceCell::const_new();
    let env = std::env::var(ENV_URL).ok();
    let source = match decide(
        Some((ENV_URL, env.as_deref())),
        ("redis-server", which("redis-server")),
        docker_engine,
    ) {
        Source::Url(url) => return Some(url),
        source => source,
    };
    crate::shared_url(
        &SHARED,
        async || Server::start_from(spec(&RedisOptions::new()), source).await,
        Server::url,
    )
    .await
}

/// How to start a [`RedisServer`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RedisOptions {
    persistent: bool,
}

impl RedisOptions {
    /// No persistence (a restart loses everything). Default.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `true`, run with `--appendonly yes --appendfsync always` in the server's own dir, so
    /// a restart keeps every acknowledged write. Default: `false`.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }
}

fn persistence(options: &RedisOptions) -> Vec<String> {
    if options.persistent {
        ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec()
    } else {
        ["--appendonly", "no"].map(String::from).to_vec()
    }
}

pub(crate) fn spec(options: &RedisOptions) -> Spec {
    let mut container_args: Vec<String> = [
        "redis-server",
        "--port",
        "6379",
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
    ]
    .map(String::from)
    .to_vec();
    container_args.extend(persistence(options));
    let persistence = persistence(options);
    Spec {
        binary: "redis-server",
        scheme: "redis",
        args: Box::new(move |port: u16, dir: &Path| {
            let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
                .into_iter()
                .chain(["--daemonize", "no", "--save", ""])
                .map(String::from)
                .collect();
            args.extend(["--dir".to_owned(), dir.display().to_string()]);
            let log = dir.join("redis.log").display().to_string();
            args.extend(["--logfile".to_owned(), log]);
            args.extend(persistence.iter().cloned());
            args
        }),
        files: Vec::new(),
        log_file: "redis.log",
        image: ("redis", "7"),
        container_port: 6379,
        container_args,
        ready: ping,
    }
}

/// A Redis server of this test alone on a fixed port; killed when dropped.
#[derive(Debug)]
pub struct RedisServer(Server);

impl RedisServer {
    /// Start a server and wait until it answers `PING`. `Err` names everything tried (no binary
    /// on `PATH`, no Docker engine) or why it did not start; callers usually pass it to
    /// [`skip`](crate::skip).
    pub async fn start(options: RedisOptions) -> Result<Self, String> {
        Server::start(spec(&options)).await.map(RedisServer)
    }
}

crate::server::broker_server_for!(
    RedisServer,
    url = "`redis://<host>:<port>`.",
    restart = "With persistence the server reloads its append-only file."
);

/// Whether `host:port` answers `PING` with `+PONG` (not `-LOADING`).
pub(crate) fn ping(host: &str, port: u16) -> bool {
    exchange(host, port, b"PING\r\n", |got| got.ends_with(b"\r\n"))
        .is_some_and(|reply| reply.starts_with(b"+PONG"))
}
