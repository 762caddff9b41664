//! One way to run the brokers tests need, Redis and NATS alike: where a broker comes from
//! ([`decide`]), the [`BrokerServer`] trait fault tests drive, and the machinery behind
//! [`RedisServer`](crate::redis::RedisServer) and [`NatsServer`](crate::nats::NatsServer).
//!
//! Discovery order: an explicit URL from the environment (shared brokers only: a test that kills
//! its broker needs one of its own); else the server binary on `PATH`, started on a free loopback
//! port in a temp dir; else a container through testcontainers when a Docker engine answers;
//! else skip, with a message naming everything tried.
//!
//! # Example
//!
//! ```
//! use ssehub_test_support::server::{Source, decide};
//!
//! let source = decide(
//!     Some(("SSEHUB_REDIS_URL", None)),
//!     ("redis-server", None),
//!     || Err("no Docker engine at unix:///var/run/docker.sock".to_owned()),
//! );
//! let Source::Skip(why) = source else { panic!("nothing to run") };
//! assert!(why.contains("SSEHUB_REDIS_URL unset; redis-server not on PATH; no Docker engine"));
//! ```

use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{BrokerProcess, free_port, temp_dir, which};

/// How long a started server may take to answer its readiness probe.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// A broker server a test owns: it can take it away and bring it back on the same port.
pub trait BrokerServer: Send {
    /// The client URL (`redis://…`, `nats://…`); the same across restarts.
    fn url(&self) -> String;
    /// The port clients connect to; the same across restarts.
    fn port(&self) -> u16;
    /// What the server logged so far (empty when it cannot be read).
    fn log(&self) -> String;
    /// Freeze the server (SIGSTOP, or a paused container): its connections stay open but
    /// nothing answers. `false` when that failed.
    fn freeze(&self) -> bool;
    /// Let a frozen server run again. `false` when that failed.
    fn thaw(&self) -> bool;
    /// Kill the server at once (no clean shutdown) and wait until it is gone.
    fn kill(&mut self);
    /// Stop the server cleanly (SIGTERM, or `docker stop`), as an operator's restart does.
    fn stop(&mut self);
    /// Start the server again on the same port with the same data (kills it first when it still
    /// runs) and wait until it is ready.
    fn restart(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Where a broker for a test comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The URL of a broker someone else runs (from the environment).
    Url(String),
    /// Start this server binary.
    Binary(PathBuf),
    /// Start a container on the Docker engine at this address.
    Container(String),
    /// Nothing to run: why, naming everything tried.
    Skip(String),
}

/// Decide where a broker comes from, in order: `env` (the variable's name and value; `None` for
/// a test that needs a broker of its own), the server `binary` (its name and where `which` found
/// it), then a Docker engine (`engine` says where one answers, or why none does; asked only when
/// needed). A pure function, so the order and the messages are unit-tested.
pub fn decide(
    env: Option<(&str, Option<&str>)>,
    binary: (&str, Option<PathBuf>),
    engine: impl FnOnce() -> Result<String, String>,
) -> Source {
    let mut tried = Vec::new();
    if let Some((name, value)) = env {
        match value.map(str::trim) {
            Some(url) if !url.is_empty() => return Source::Url(url.to_owned()),
            _ => tried.push(format!("{name} unset")),
        }
    }
    let (name, path) = binary;
    if let Some(path) = path {
        return Source::Binary(path);
    }
    tried.push(format!("{name} not on PATH"));
    match engine() {
        Ok(at) => Source::Container(at),
        Err(why) => {
            tried.push(why);
            Source::Skip(tried.join("; "))
        }
    }
}

/// Where the Docker engine should be: `DOCKER_HOST` when set, else the default socket.
#[must_use]
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// Whether a Docker engine answers `GET /_ping` at `host` (`unix:///path` or `tcp://host:port`):
/// `Ok(host)`, or `Err` saying what was tried and why it failed.
pub fn docker_engine_at(host: &str) -> Result<String, String> {
    const LIMIT: Duration = Duration::from_secs(2);
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut reply = Vec::new();
    let exchange = |s: &mut dyn ReadWrite, reply: &mut Vec<u8>| -> std::io::Result<()> {
        s.write_all(request)?;
        s.read_to_end(reply).map(|_| ())
    };
    let result = if let Some(path) = host.strip_prefix("unix://") {
        std::os::unix::net::UnixStream::connect(path).and_then(|mut s| {
            s.set_read_timeout(Some(LIMIT))?;
            exchange(&mut s, &mut reply)
        })
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(LIMIT))?;
            exchange(&mut s, &mut reply)
        })
    } else {
        Err(std::io::Error::other(
            "only unix:// and tcp:// are supported",
        ))
    };
    match result {
        Ok(()) if String::from_utf8_lossy(&reply).split_whitespace().nth(1) == Some("200") => {
            Ok(host.to_owned())
        }
        Ok(()) => Err(format!(
            "no Docker engine at {host} (it did not answer the ping)"
        )),
        Err(e) => Err(format!("no Docker engine at {host} ({e})")),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Whether any Docker engine answers (see [`docker_host`], [`docker_engine_at`]).
pub fn docker_engine() -> Result<String, String> {
    docker_engine_at(&docker_host())
}

/// Arguments for a server binary, given its port and its own dir.
pub(crate) type Args = Box<dyn Fn(u16, &Path) -> Vec<String> + Send + Sync>;

/// How to run one kind of broker: as a process, and as a container.
pub(crate) struct Spec {
    /// The server binary (`redis-server`).
    pub(crate) binary: &'static str,
    /// The URL scheme (`redis`).
    pub(crate) scheme: &'static str,
    /// Arguments for the binary, given the port and the server's own dir.
    pub(crate) args: Args,
    /// Files written into the server's dir before it starts (name, content).
    pub(crate) files: Vec<(String, String)>,
    /// The log file in the server's dir (the process writes there).
    pub(crate) log_file: &'static str,
    /// The container image and tag.
    pub(crate) image: (&'static str, &'static str),
    /// The port the server listens on inside the container.
    pub(crate) container_port: u16,
    /// The container's command; `files` are copied to `/etc/ssehub/<name>`.
    pub(crate) container_args: Vec<String>,
    /// Whether the server at host:port is ready for clients.
    pub(crate) ready: fn(&str, u16) -> bool,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("binary", &self.binary)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// The running server: a process or a container.
enum Runner {
    Process {
        binary: PathBuf,
        child: BrokerProcess,
    },
    Container(crate::server::docker::Container),
}

/// `impl BrokerServer` for a newtype over [`Server`] (`RedisServer`, `NatsServer`): every
/// method is the server's own.
macro_rules! broker_server_for {
    ($ty:ty, url = $url:literal, restart = $restart:literal) => {
        impl $crate::server::BrokerServer for $ty {
            #[doc = $url]
            fn url(&self) -> String {
                self.0.url()
            }

            fn port(&self) -> u16 {
                self.0.port()
            }

            fn log(&self) -> String {
                self.0.log()
            }

            fn freeze(&self) -> bool {
                self.0.freeze()
            }

            fn thaw(&self) -> bool {
                self.0.thaw()
            }

            fn kill(&mut self) {
                self.0.kill();
            }

            fn stop(&mut self) {
                self.0.stop();
            }

            #[doc = $restart]
            async fn restart(&mut self) -> Result<(), String> {
                self.0.restart().await
            }
        }
    };
}
pub(crate) use broker_server_for;

/// A broker server of one test on a fixed port (the machinery behind the public server types).
pub(crate) struct Server {
    // Dropped first: the server is gone before its dir is removed.
    runner: Runner,
    spec: Spec,
    host: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("binary", &self.spec.binary)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("container", &matches!(self.runner, Runner::Container(_)))
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Start a server of its own for a test (binary, else container) and wait until it is
    /// ready; `Err` names everything tried.
    pub(crate) async fn start(spec: Spec) -> Result<Self, String> {
        let source = decide(None, (spec.binary, which(spec.binary)), docker_engine);
        Self::start_from(spec, source).await
    }

    /// Start a server from `source` ([`Source::Url`] is not a server to start).
    pub(crate) async fn start_from(spec: Spec, source: Source) -> Result<Self, String> {
        let dir = temp_dir(spec.binary).map_err(|e| format!("cannot create a temp dir: {e}"))?;
        for (name, content) in &spec.files {
            let file = dir.path().join(name);
            std::fs::write(&file, content).map_err(|e| format!("cannot write {file:?}: {e}"))?;
        }
        let port = free_port();
        if port == 0 {
            return Err("no free loopback port".to_owned());
        }
        let (host, runner) = match source {
            Source::Binary(binary) => (
                "127.0.0.1".to_owned(),
                Runner::Process {
                    binary,
                    child: BrokerProcess::default(),
                },
            ),
            Source::Container(_) => {
                let container = docker::Container::create(&spec, port, dir.path())?;
                // Removed when dropped; also after an aborted run or when shared (never dropped).
                watch(&format!("docker rm -f {}", container.id()), 0);
                (container.host().to_owned(), Runner::Container(container))
            }
            Source::Url(url) => return Err(format!("{url} is not a server this test owns")),
            Source::Skip(why) => return Err(why),
        };
        let mut server = Server {
            runner,
            spec,
            host,
            port,
            dir,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// Start the process (a container is started already) and wait until it is ready.
    async fn spawn(&mut self) -> Result<(), String> {
        if let Runner::Process { binary, child } = &mut self.runner {
            let args = (self.spec.args)(self.port, self.dir.path());
            let process = Command::new(&*binary)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.spec.binary))?;
            // An aborted run (or a shared server, never dropped) leaves neither process nor dir.
            let cleanup = format!(
                "kill -9 {}; sleep 1; rm -rf '{}'",
                process.id(),
                self.dir.path().display()
            );
            watch(&cleanup, process.id());
            child.set(process);
        }
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            let (ready, host, port) = (self.spec.ready, self.host.clone(), self.port);
            if tokio::task::spawn_blocking(move || ready(&host, port))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if let Runner::Process { child, .. } = &mut self.runner
                && let Some(status) = child.exited()
            {
                return Err(format!("{} exited at start: {status}", self.spec.binary));
            }
            if tokio::time::Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "{} did not get ready within {START_LIMIT:?}",
                    self.spec.binary
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}://{}:{}", self.spec.scheme, self.host, self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn log(&self) -> String {
        match &self.runner {
            Runner::Process { .. } => {
                std::fs::read_to_string(self.dir.path().join(self.spec.log_file))
                    .unwrap_or_default()
            }
            Runner::Container(c) => c.log(),
        }
    }

    pub(crate) fn freeze(&self) -> bool {
        match &self.runner {
            Runner::Process { child, .. } => child.freeze(),
            Runner::Container(c) => c.pause(true),
        }
    }

    pub(crate) fn thaw(&self) -> bool {
        match &self.runner {
            Runner::Process { child, .. } => child.thaw(),
            Runner::Container(c) => c.pause(false),
        }
    }

    pub(crate) fn kill(&mut self) {
        match &mut self.runner {
            Runner::Process { child, .. } => child.kill(),
            Runner::Container(c) => c.kill(),
        }
    }

    pub(crate) fn stop(&mut self) {
        match &mut self.runner {
            Runner::Process { child, .. } => child.stop(),
            Runner::Container(c) => c.kill(),
        }
    }

    pub(crate) async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        if let Runner::Container(c) = &self.runner {
            c.resume()?;
        }
        self.spawn().await
    }
}

/// Run `cleanup` (a shell command) once this test process is gone, so an aborted run or a
/// process-wide server in a `static` (never dropped) leaves nothing behind. With `pid` > 0 the
/// watcher also ends by itself once that process is gone.
fn watch(cleanup: &str, pid: u32) {
    let me = std::process::id();
    let alive = if pid > 0 {
        format!("kill -0 {pid} 2>/dev/null")
    } else {
        "true".to_owned()
    };
    // The braces matter: `cleanup` is a list (`kill …; sleep 1; rm -rf …`), and without them
    // only its first command would depend on the test process being gone; the rest ran
    // whenever the server process ended, so a restarted server lost its data dir a second
    // after it came back.
    let script = format!(
        "while kill -0 {me} 2>/dev/null && {alive}; do sleep 1; done; \
         kill -0 {me} 2>/dev/null || {{ {cleanup}; }} >/dev/null 2>&1; true"
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Send `request` to `host:port` and read until `done` holds for what came back (each read
/// waits 1 s at most); what came back, or `None` when it never got there.
pub(crate) fn exchange(
    host: &str,
    port: u16,
    request: &[u8],
    done: fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let mut s = std::net::TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(request).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(got)
}

mod docker;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_url_wins() {
        let source = decide(
            Some(("SSEHUB_REDIS_URL", Some("redis://elsewhere:6379"))),
            ("redis-server", Some(PathBuf::from("/usr/bin/redis-server"))),
            || panic!("the engine is not asked when a URL is set"),
        );
        assert_eq!(source, Source::Url("redis://elsewhere:6379".to_owned()));
    }

    #[test]
    fn an_own_binary_comes_before_docker() {
        for env in [
            Some(("SSEHUB_NATS_URL", None)),
            Some(("SSEHUB_NATS_URL", Some(" "))),
            None,
        ] {
            let source = decide(
                env,
                ("nats-server", Some(PathBuf::from("/usr/sbin/nats-server"))),
                || panic!("the engine is not asked when the binary is there"),
            );
            assert_eq!(
                source,
                Source::Binary(PathBuf::from("/usr/sbin/nats-server"))
            );
        }
    }

    #[test]
    fn docker_when_nothing_else() {
        let source = decide(
            Some(("SSEHUB_NATS_URL", None)),
            ("nats-server", None),
            || Ok("unix:///var/run/docker.sock".to_owned()),
        );
        assert_eq!(
            source,
            Source::Container("unix:///var/run/docker.sock".to_owned())
        );
    }

    #[test]
    fn no_engine_skips_naming_everything_tried() {
        let missing = "unix:///nonexistent/ssehub-test/docker.sock";
        let engine = docker_engine_at(missing);
        let why = engine.clone().expect_err("no engine answers there");
        assert!(
            why.starts_with(&format!("no Docker engine at {missing} (")),
            "{why}"
        );
        let source = decide(
            Some(("SSEHUB_REDIS_URL", None)),
            ("redis-server", None),
            || engine,
        );
        assert_eq!(
            source,
            Source::Skip(format!(
                "SSEHUB_REDIS_URL unset; redis-server not on PATH; {why}"
            ))
        );
        // A test that needs a broker of its own never looks at the URL.
        let source = decide(None, ("nats-server", None), || Err(why.clone()));
        assert_eq!(
            source,
            Source::Skip(format!("nats-server not on PATH; {why}"))
        );
    }

    #[test]
    fn an_unsupported_docker_host_is_named() {
        let why = docker_engine_at("ssh://somewhere").expect_err("unsupported");
        assert!(why.contains("ssh://somewhere"), "{why}");
    }

    #[test]
    fn something_that_is_not_docker_is_no_engine() {
        // A listener that answers, but not as Docker does.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"-ERR unknown command\r\n");
            }
        });
        let why = docker_engine_at(&format!("tcp://{addr}")).expect_err("not docker");
        assert!(why.contains("did not answer the ping"), "{why}");
        server.join().expect("server thread");
    }
}
