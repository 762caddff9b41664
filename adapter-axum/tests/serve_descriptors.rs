//! `ssehub_axum::serve` when the process runs out of file descriptors: `accept` fails, the
//! server says so in a warning (axum's own loop is silent), and it serves again once
//! descriptors are free. Its own test binary: it lowers the process's descriptor limit.

#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// The process's soft and hard descriptor limits (`/proc/self/limits`).
fn limits() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// Set this process's soft descriptor limit with util-linux's `prlimit` (no `unsafe` here);
/// the old soft limit.
fn set_soft_limit(n: u64) -> u64 {
    let (soft, hard) = limits();
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={}:{hard}", n.min(hard)))
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
    assert_eq!(limits().0, n.min(hard));
    soft
}

async fn get_ok(addr: std::net::SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect(addr).await else {
        return false;
    };
    if conn
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await,
        Ok(Ok(_))
    ) && out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn running_out_of_descriptors_is_logged_and_survived() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(async move { ssehub_axum::serve(listener, app).await.unwrap() });
    assert!(get_ok(addr).await);

    // Leave room for a few connections only: the kernel completes handshakes in the backlog,
    // and the server's accept then fails with EMFILE.
    let old = set_soft_limit(open_descriptors() + 6);
    let mut clients = Vec::new();
    for _ in 0..40 {
        match TcpStream::connect(addr).await {
            Ok(c) => clients.push(c),
            Err(_) => break, // the client side ran out too
        }
        if String::from_utf8_lossy(&log.0.lock().unwrap()).contains("accept failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        if text.contains("WARN") && text.contains("accept failed") {
            assert!(text.contains("Too many open files"), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no warning about the failed accepts: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Descriptors come back: the server serves again.
    drop(clients);
    set_soft_limit(old);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !get_ok(addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
