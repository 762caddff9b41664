//! A loopback TCP proxy that injects faults between two peers: drop every connection, refuse
//! new ones, add latency. It records the first bytes each client sent (request heads).
//!
//! # Example
//!
//! ```no_run
//! # async fn run(upstream: std::net::SocketAddr) -> std::io::Result<()> {
//! let proxy = ssehub_test_support::proxy::TcpProxy::start(upstream).await?;
//! // point a client at proxy.addr(), then:
//! proxy.drop_all();
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Shared {
    refuse: AtomicBool,
    latency_ms: AtomicU64,
    conns: Mutex<Vec<JoinHandle<()>>>,
    heads: Mutex<Vec<String>>,
}

/// A running proxy; stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TcpProxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.refuse.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let s2 = s.clone();
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, s2).await;
                    }
                });
                let mut conns = s.conns.lock().unwrap_or_else(|e| e.into_inner());
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        Ok(TcpProxy {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every open connection at once (both sides see it closed).
    pub fn drop_all(&self) {
        for t in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    /// While set, new connections are accepted and closed at once.
    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::Release);
    }

    /// Delay every chunk forwarded in either direction.
    pub fn latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(ms, Ordering::Release);
    }

    /// The first chunk each client sent (for HTTP: the request head), in connection order.
    #[must_use]
    pub fn heads(&self) -> Vec<String> {
        self.shared
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_all();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let s_up = shared.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut first = true;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if first {
                first = false;
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                s_up.heads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(head);
            }
            delay(&s_up).await;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            delay(&shared).await;
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

async fn delay(shared: &Shared) {
    let ms = shared.latency_ms.load(Ordering::Acquire);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
