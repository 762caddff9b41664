//! Redis servers for tests: the URL to use, or an own `redis-server` to kill and restart.
//!
//! [`redis_url`] answers `SSEHUB_REDIS_URL` when set, else the URL of one `redis-server` shared
//! by every test of the process (started on first use on a free loopback port in a temp dir),
//! else skips. Fault tests start their own [`RedisServer`] and never touch a shared one.
//!
//! Every server started here is also watched by a small shell loop that kills it when the test
//! process is gone, so a crashed or aborted test run leaves no `redis-server` behind.
//!
//! # Example
//!
//! ```no_run
//! use ssehub_test_support::redis::{RedisOptions, RedisServer};
//!
//! let mut server = RedisServer::start(RedisOptions::new().persistent(true)).unwrap();
//! let url = server.url();
//! server.kill();
//! server.restart().unwrap();
//! assert_eq!(url, server.url());
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{TempDir, free_port, skip, which};

/// How long a started server may take to answer `PING`.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The Redis URL for ordinary tests: `SSEHUB_REDIS_URL`, else a process-wide shared server of
/// our own, else `None` after [`skip`] (which panics under `SSEHUB_REQUIRE_BROKERS=1`).
///
/// Tests using it must use unique topic names and must never kill, pause or flush it.
#[must_use]
pub fn redis_url() -> Option<String> {
    if let Ok(url) = std::env::var("SSEHUB_REDIS_URL")
        && !url.trim().is_empty()
    {
        return Some(url);
    }
    static SHARED: OnceLock<Result<RedisServer, String>> = OnceLock::new();
    match SHARED.get_or_init(|| RedisServer::start(RedisOptions::new())) {
        Ok(server) => Some(server.url()),
        Err(why) => {
            skip(why);
            None
        }
    }
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

/// A `redis-server` of this test alone on a free loopback port; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: crate::BrokerProcess,
    port: u16,
    dir: TempDir,
    options: RedisOptions,
}

impl RedisServer {
    /// Start a server and wait until it answers `PING`. `Err` says why it cannot (no binary on
    /// `PATH`, it did not start); callers usually pass it to [`skip`].
    pub fn start(options: RedisOptions) -> Result<Self, String> {
        let dir = TempDir::new("redis").map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let port = free_port();
        if port == 0 {
            return Err("no free loopback port".to_owned());
        }
        let mut server = RedisServer {
            child: crate::BrokerProcess::default(),
            port,
            dir,
            options,
        };
        server.spawn()?;
        Ok(server)
    }

    fn binary() -> Result<PathBuf, String> {
        which("redis-server").ok_or_else(|| "redis-server is not on PATH".to_owned())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = Self::binary()?;
        let dir = self.dir.path();
        let mut cmd = Command::new(binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--save", ""])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if self.options.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        watch(child.id(), dir);
        self.child.set(child);
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            if let Some(status) = self.child.exited() {
                return Err(format!("redis-server exited at start: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "redis-server did not answer within {START_LIMIT:?}"
        ))
    }

    /// `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (the same across restarts).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server wrote to its log file so far (empty when it cannot be read).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Freeze the process (SIGSTOP): its connections stay open but nothing answers.
    pub fn freeze(&self) -> bool {
        self.child.freeze()
    }

    /// Let a frozen process run again (SIGCONT).
    pub fn thaw(&self) -> bool {
        self.child.thaw()
    }

    /// Kill the server at once (SIGKILL, no shutdown save) and wait for it to exit.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Start the server again on the same port with the same dir and options (kills it first
    /// when it still runs). With persistence it reloads its append-only file.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `127.0.0.1:port` answers `PING` with `+PONG` (not `-LOADING`).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Kill `pid` if this test process goes away first (aborted runs, the shared server, which a
/// `static` never drops). The loop ends by itself once the server is gone.
fn watch(pid: u32, dir: &std::path::Path) {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill -0 {me} 2>/dev/null || {{ kill -9 {pid} 2>/dev/null; sleep 1; rm -rf \"$0\"; }}; true"
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
