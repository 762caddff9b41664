//! A server under test as a child process, and the control requests it answers (`POST
//! /publish`, `GET /stats`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Error;
use crate::proc;
use crate::server::{Kind, PublishAnswer, PublishParams, Stats};

/// One server under test, a child process of the load generator.
#[derive(Debug)]
pub struct ServerProc {
    /// Which server.
    pub kind: Kind,
    child: Child,
    port: u16,
}

impl ServerProc {
    /// Re-exec `exe --serve KIND --port P --backend B` and wait until it listens.
    pub async fn start(
        exe: &PathBuf,
        kind: Kind,
        backend: &str,
        metrics: bool,
    ) -> Result<Self, Error> {
        Self::start_with_env(exe, kind, backend, metrics, &[]).await
    }

    /// [`start`](Self::start) with `env` added to the child's environment (this process's
    /// stays as it is): e.g. `SSEHUB_BENCH_LEAN=1` for ssehub's lean HTTP/1 driver.
    pub async fn start_with_env(
        exe: &PathBuf,
        kind: Kind,
        backend: &str,
        metrics: bool,
        env: &[(&str, &str)],
    ) -> Result<Self, Error> {
        let port = ssehub_test_support::free_port();
        let mut cmd = Command::new(exe);
        cmd.envs(env.iter().copied());
        cmd.args([
            "--serve",
            kind.as_str(),
            "--port",
            &port.to_string(),
            "--backend",
            backend,
        ]);
        if metrics {
            cmd.arg("--metrics");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let server = ServerProc { kind, child, port };
        if !ssehub_test_support::wait_for_port(port, Duration::from_secs(20)).await {
            return Err(format!("{} server did not listen on {port}", kind.as_str()).into());
        }
        Ok(server)
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds used so far.
    #[must_use]
    pub fn cpu(&self) -> f64 {
        proc::cpu_seconds(self.child.id())
    }

    /// System (kernel) CPU seconds so far.
    #[must_use]
    pub fn sys_cpu(&self) -> f64 {
        proc::cpu_split(self.child.id()).1
    }

    /// Write system calls so far.
    #[must_use]
    pub fn write_syscalls(&self) -> u64 {
        proc::io_counter(self.child.id(), "syscw")
    }

    /// Peak RSS so far, KiB.
    #[must_use]
    pub fn peak_rss_kib(&self) -> u64 {
        proc::status_kib(self.child.id(), "VmHWM")
    }

    /// Current RSS, KiB.
    #[must_use]
    pub fn rss_kib(&self) -> u64 {
        proc::status_kib(self.child.id(), "VmRSS")
    }

    /// Its `RLIMIT_NOFILE`, (soft, hard), from `/proc/<pid>/limits` (`u64::MAX`: unlimited);
    /// (0, 0) if it cannot be read.
    #[must_use]
    pub fn fd_limits(&self) -> (u64, u64) {
        proc::nofile_limits(self.child.id())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request with `Connection: close`; the body of the answer.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<String, Error> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("{method} {path}: {}", text.lines().next().unwrap_or("")).into());
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// Ask the server to publish `p`; its answer.
pub(super) async fn publish(addr: SocketAddr, p: &PublishParams) -> Result<PublishAnswer, Error> {
    let q = format!(
        "/publish?channel={}&channels={}&count={}&rate={}&pad={}&batch={}&shuffle={}&first={}&retry={}",
        p.channel, p.channels, p.count, p.rate, p.pad, p.batch, p.shuffle, p.first, p.retry
    );
    Ok(serde_json::from_str(&request(addr, "POST", &q).await?)?)
}

/// The server's counters.
pub(super) async fn stats(addr: SocketAddr) -> Result<Stats, Error> {
    Ok(serde_json::from_str(
        &request(addr, "GET", "/stats").await?,
    )?)
}
