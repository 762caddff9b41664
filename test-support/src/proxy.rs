//! A loopback TCP proxy that injects faults between two peers: drop every connection, refuse
//! new ones, add latency, throttle bandwidth, blackhole (keep the sockets open but forward
//! nothing, like a network gone silent), or lose the server's replies. It records the first bytes each client sent.
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
    blackhole: AtomicBool,
    /// Read and discard what the server sends.
    drop_replies: AtomicBool,
    latency_ms: AtomicU64,
    /// Bytes per second in each direction; 0 = unlimited.
    bandwidth: AtomicU64,
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

    /// While set, nothing is forwarded in either direction and nothing is read, but every socket
    /// stays open: the peers see a silent network (their writes eventually block).
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Release);
    }

    /// While set, what clients send reaches the server, but what the server sends back is read
    /// and thrown away: a request is carried out and its reply is lost (the case idempotency
    /// keys are for). The connections then hold a reply stream with a hole: drop them
    /// ([`drop_all`](Self::drop_all)) before relying on them again.
    pub fn drop_replies(&self, on: bool) {
        self.shared.drop_replies.store(on, Ordering::Release);
    }

    /// Limit each direction of each connection to `bytes_per_second` (0: unlimited).
    pub fn bandwidth(&self, bytes_per_second: u64) {
        self.shared
            .bandwidth
            .store(bytes_per_second, Ordering::Release);
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
            hold(&s_up).await;
            let n = match cr.read(&mut buf[..chunk(&s_up)]).await {
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
            delay(&s_up, n).await;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            hold(&shared).await;
            let n = match sr.read(&mut buf[..chunk(&shared)]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            delay(&shared, n).await;
            if shared.drop_replies.load(Ordering::Acquire) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Wait while the proxy is a blackhole (polling; bounded by the test that set it).
async fn hold(shared: &Shared) {
    while shared.blackhole.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How much to read at once: small chunks when throttled, so the rate is smooth.
fn chunk(shared: &Shared) -> usize {
    match shared.bandwidth.load(Ordering::Acquire) {
        0 => 16 * 1024,
        bps => usize::try_from((bps / 20).clamp(1, 16 * 1024)).unwrap_or(16 * 1024),
    }
}

/// Latency, plus the time `n` bytes take at the throttled bandwidth.
async fn delay(shared: &Shared, n: usize) {
    let ms = shared.latency_ms.load(Ordering::Acquire);
    let bps = shared.bandwidth.load(Ordering::Acquire);
    let mut wait = Duration::from_millis(ms);
    if bps > 0 {
        wait += Duration::from_secs_f64(n as f64 / bps as f64);
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}
