//! NATS servers for tests: the URL to use, or an own `nats-server -js` to kill and restart.
//!
//! [`nats_url`] answers `SSEHUB_NATS_URL` when set, else the URL of one server shared by every
//! test of the process (started on first use), else skips. Fault tests start their own
//! [`NatsServer`]. A server is a `nats-server` on a free loopback port with its store in a temp
//! dir, or a `nats:2.10` container (`-js`) when the binary is missing and a Docker engine answers
//! (see [`crate::server`]). Same API as [`crate::redis`].
//!
//! # Example
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! if let Some(url) = ssehub_test_support::nats::nats_url().await {
//!     println!("testing against {url}");
//! }
//! # }
//! ```

use std::path::Path;

use tokio::sync::OnceCell;

use crate::server::{Server, Source, Spec, decide, docker_engine, exchange};
use crate::which;

/// The variable naming a NATS server someone else runs.
pub const ENV_URL: &str = "SSEHUB_NATS_URL";

/// The NATS URL for ordinary tests: `SSEHUB_NATS_URL`, else one own server with JetStream shared
/// by the whole test process, else `None` after [`skip`](crate::skip). Never a server a test may kill.
pub async fn nats_url() -> Option<String> {
    static SHARED: OnceCell<Result<String, String>> = OnceCell::const_new();
    let env = std::env::var(ENV_URL).ok();
    let source = match decide(
        Some((ENV_URL, env.as_deref())),
        ("nats-server", which("nats-server")),
        docker_engine,
    ) {
        Source::Url(url) => return Some(url),
        source => source,
    };
    crate::shared_url(
        &SHARED,
        async || Server::start_from(spec(&NatsOptions::default()), source).await,
        Server::url,
    )
    .await
}

/// Options for [`NatsServer::start`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Enable JetStream (`-js`, file storage in the server's own dir). Default: true.
    pub jetstream: bool,
    /// Extra server configuration (nats-server config syntax, such as `write_deadline: "1s"`),
    /// written to a file passed with `-c`. Default: none.
    pub config: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            jetstream: true,
            config: None,
        }
    }
}

impl NatsOptions {
    /// These options with extra server configuration (see [`NatsOptions::config`]).
    #[must_use]
    pub fn with_config(mut self, config: impl Into<String>) -> Self {
        self.config = Some(config.into());
        self
    }
}

const CONFIG_FILE: &str = "nats.conf";

fn spec(options: &NatsOptions) -> Spec {
    let jetstream = options.jetstream;
    let config = options.config.is_some();
    let mut container_args = vec!["-p".to_owned(), "4222".to_owned()];
    if jetstream {
        container_args.extend(["-js", "-sd", "/data"].map(String::from));
    }
    if config {
        container_args.extend(["-c".to_owned(), format!("/etc/ssehub/{CONFIG_FILE}")]);
    }
    Spec {
        binary: "nats-server",
        scheme: "nats",
        args: Box::new(move |port: u16, dir: &Path| {
            let mut args = vec![
                "-a".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                port.to_string(),
            ];
            if jetstream {
                args.extend([
                    "-js".to_owned(),
                    "-sd".to_owned(),
                    dir.display().to_string(),
                ]);
            }
            if config {
                args.extend(["-c".to_owned(), dir.join(CONFIG_FILE).display().to_string()]);
            }
            args.extend(["-l".to_owned(), dir.join("nats.log").display().to_string()]);
            args
        }),
        files: options
            .config
            .iter()
            .map(|c| (CONFIG_FILE.to_owned(), c.clone()))
            .collect(),
        log_file: "nats.log",
        image: ("nats", "2.10"),
        container_port: 4222,
        container_args,
        ready: if jetstream { jetstream_ready } else { pong },
    }
}

/// An own NATS server on a fixed port, with its store in its own dir. It can be killed and
/// restarted on the same port and store (fault tests); it is killed when dropped.
#[derive(Debug)]
pub struct NatsServer(Server);

impl NatsServer {
    /// Start a server and wait until it is ready (with JetStream: until the JetStream API
    /// answers). `Err` names everything tried or why it did not start; callers usually pass it
    /// to [`skip`](crate::skip).
    pub async fn start(options: NatsOptions) -> Result<Self, String> {
        Server::start(spec(&options)).await.map(NatsServer)
    }
}

crate::server::broker_server_for!(
    NatsServer,
    url = "`nats://<host>:<port>`.",
    restart = "On the same port and store: JetStream streams survive."
);

/// Whether the server at `host:port` answers `PING`.
fn pong(host: &str, port: u16) -> bool {
    let request = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n";
    exchange(host, port, request, |got| contains(got, b"PONG\r\n")).is_some()
}

/// Whether the JetStream API of the server at `host:port` answers (`$JS.API.INFO`), which it
/// does only once JetStream is up.
fn jetstream_ready(host: &str, port: u16) -> bool {
    const SUB: &[u8] = b"MSG _ssehub_ready ";
    let request = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n\
        SUB _ssehub_ready 1\r\nPUB $JS.API.INFO _ssehub_ready 0\r\n\r\n";
    // Done at the reply's payload line (`HMSG` is the no-responders status) or at an error.
    let done = |got: &[u8]| {
        contains(got, b"-ERR")
            || got
                .windows(SUB.len())
                .position(|w| w == SUB)
                .is_some_and(|i| got[i..].windows(2).filter(|w| w == b"\r\n").count() >= 2)
    };
    exchange(host, port, request, done).is_some_and(|got| {
        contains(&got, b"\r\nMSG _ssehub_ready ") && !contains(&got, b"\"error\"")
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
