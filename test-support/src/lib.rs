//! Finds or starts real brokers for ssehub's integration tests, and the tools those tests share.
//!
//! Broker discovery, per ARCHITECTURE (see [`server::decide`]): an explicit URL from the
//! environment (`SSEHUB_REDIS_URL`, `SSEHUB_NATS_URL`); else a server binary on `PATH` started on
//! a free loopback port in a temp directory (killed when its guard drops); else a container
//! (testcontainers) when a Docker engine answers; else the test skips with a message naming
//! everything tried — unless `SSEHUB_REQUIRE_BROKERS=1`, where a skip is a failure.
//!
//! # Example
//!
//! ```
//! let port = ssehub_test_support::free_port();
//! assert!(port > 0);
//! ```

pub mod chromium;
pub mod faults;
pub mod nats;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod server;
pub mod sse_client;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

/// Whether `SSEHUB_REQUIRE_BROKERS=1` is set (CI): a broker test must not skip.
#[must_use]
pub fn brokers_required() -> bool {
    std::env::var("SSEHUB_REQUIRE_BROKERS").is_ok_and(|v| v == "1" || v == "true")
}

/// Say why a broker test cannot run: a skip message, or a panic under `SSEHUB_REQUIRE_BROKERS=1`.
pub fn skip(why: &str) {
    assert!(
        !brokers_required(),
        "SSEHUB_REQUIRE_BROKERS=1 but the test cannot run: {why}"
    );
    eprintln!("skipped: {why}");
}

/// `Some` of an `Ok`; for an `Err`, [`skip`] with its message and `None`:
/// `let Some(server) = or_skip(RedisServer::start(options).await) else { return };`
pub fn or_skip<T>(result: Result<T, String>) -> Option<T> {
    result.map_err(|why| skip(&why)).ok()
}

/// A free TCP port on 127.0.0.1 (bound then released).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The full path of `binary` when it is on `PATH` (or in the usual sbin folders).
#[must_use]
pub fn which(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// A fresh temporary directory named after `tag`, removed when dropped.
pub fn temp_dir(tag: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("ssehub-{tag}-"))
        .tempdir()
}

/// Wait until something accepts TCP connections on `127.0.0.1:port` (at most `limit`).
pub async fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// How long [`wait_until`] waits.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Poll `cond` every 10 ms until it holds; panics naming `what` if it does not within
/// [`WAIT_LIMIT`]. `cond` is an async closure, so it may lock or ask a broker:
/// `wait_until("empty", async || m.channel_count() == 0).await`.
pub async fn wait_until(what: &str, cond: impl AsyncFnMut() -> bool) {
    wait_until_within(what, WAIT_LIMIT, cond).await;
}

/// [`wait_until`] with another limit.
pub async fn wait_until_within(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `Vm*` line of `/proc/<pid>/status` in KiB (`VmHWM` = peak RSS, `VmRSS` = current RSS); 0
/// when it cannot be read.
#[must_use]
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The URL of a server shared by the whole test process: started by `start` on first use and
/// never dropped (its watcher ends it with the process), or `None` after [`skip`] when it could
/// not start. What `redis_url`, `nats_url` and `redis_cluster_url` share.
pub(crate) async fn shared_url<S, F>(
    cell: &'static tokio::sync::OnceCell<Result<String, String>>,
    start: F,
    url: fn(&S) -> String,
) -> Option<String>
where
    F: AsyncFnOnce() -> Result<S, String>,
{
    let shared = cell
        .get_or_init(async || {
            let server = start().await?;
            let found = url(&server);
            std::mem::forget(server);
            Ok(found)
        })
        .await;
    match shared {
        Ok(url) => Some(url.clone()),
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// A broker process a test owns: frozen, thawed and killed on demand, killed when dropped.
#[derive(Debug, Default)]
pub struct BrokerProcess(Option<std::process::Child>);

impl BrokerProcess {
    /// Own `child` (killing the process held before, if any).
    pub fn set(&mut self, child: std::process::Child) {
        self.kill();
        self.0 = Some(child);
    }

    /// Freeze the process (SIGSTOP): its connections stay open but nothing answers. Returns
    /// once the kernel reports it stopped (a signal is delivered asynchronously: without the
    /// wait, the process could still answer a request sent right after).
    pub fn freeze(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|c| signal(c.id(), "STOP") && wait_state(c.id(), |s| s == 'T' || s == 't'))
    }

    /// Let a frozen process run again (SIGCONT); returns once it is no longer stopped.
    pub fn thaw(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|c| signal(c.id(), "CONT") && wait_state(c.id(), |s| s != 'T' && s != 't'))
    }

    /// Kill the process (SIGKILL, no clean shutdown) and wait for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the process cleanly (SIGTERM: it flushes what it must and exits), waiting up to
    /// 10 s; then SIGKILL if it is still there.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            signal(child.id(), "TERM");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait (at most 5 s) until the state letter of `/proc/<pid>/stat` satisfies `ok`; `true` when
/// it did, or when the state cannot be read (not Linux).
fn wait_state(pid: u32, ok: impl Fn(char) -> bool) -> bool {
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) S ...`: the state follows the last `)`.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match state() {
            None => return true,
            Some(s) if ok(s) => return true,
            Some(_) if std::time::Instant::now() >= deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Send a signal (`"STOP"`, `"CONT"`, ...) to a process with the system's `kill` command.
/// Freezing a broker with `STOP` makes a half-open peer: connected, silent.
pub fn signal(pid: u32, name: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}
