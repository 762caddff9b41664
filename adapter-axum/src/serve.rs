//! [`serve`]: axum's `serve` with the limits a server of long-lived connections needs — a
//! deadline on every request head (slowloris), a cap on connections per client address, a
//! warning when `accept` fails for lack of descriptors, write timeouts and TCP keepalive on
//! every socket, and graceful shutdown.
//!
//! ```no_run
//! use std::time::Duration;
//! # async fn run(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! ssehub_axum::serve(listener, app)
//!     .header_read_timeout(Some(Duration::from_secs(10)))
//!     .max_connections_per_ip(Some(256))
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::listener::{WriteTimeoutIo, WriteTimeoutListener};

mod head;
mod lean;

/// Default deadline for a request head: [`Serve::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `accept` waits after an error (such as running out of descriptors) before trying
/// again: the server recovers as connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At most one warning about failing `accept`s per this long.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(10);

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serve `app` on `listener` (a [`TcpListener`], or a [`WriteTimeoutListener`] around one
/// for its write timeout and TCP options) over HTTP/1.1 and HTTP/2, until the shutdown signal
/// (if any). Await the returned [`Serve`].
///
/// Unlike `axum::serve`, every request head must arrive within a deadline (10 s by default;
/// a keep-alive connection idle between requests gets the same deadline for its next head),
/// an optional cap limits connections per client address, and `accept` failures (for example
/// no descriptor left) are logged as warnings. Requests carry [`ConnectInfo<SocketAddr>`].
pub fn serve(listener: impl Into<WriteTimeoutListener<TcpListener>>, app: Router) -> Serve {
    Serve {
        listener: listener.into(),
        app,
        header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
        max_per_ip: None,
        nodelay: true,
        lean: false,
        signal: None,
    }
}

impl From<TcpListener> for WriteTimeoutListener<TcpListener> {
    /// The listener with a 30 s write timeout and the default TCP options.
    fn from(listener: TcpListener) -> Self {
        WriteTimeoutListener::new(listener, Duration::from_secs(30))
    }
}

/// A server being set up: see [`serve`]. Await it to run it.
#[must_use = "a server does nothing until awaited"]
pub struct Serve {
    listener: WriteTimeoutListener<TcpListener>,
    app: Router,
    header_read_timeout: Option<Duration>,
    max_per_ip: Option<usize>,
    nodelay: bool,
    lean: bool,
    signal: Option<Signal>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections_per_ip", &self.max_per_ip)
            .field("tcp_nodelay", &self.nodelay)
            .field("lean_streams", &self.lean)
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// The whole request head (request line and headers) must arrive within this long from
    /// the moment the server waits for it — after accepting the connection, or after the
    /// previous response on a keep-alive connection — else the connection is closed. A
    /// stream's response is not affected: the deadline runs only while a head is awaited.
    /// Default: [`DEFAULT_HEADER_READ_TIMEOUT`]; `None` disables it (not advised: a client
    /// that sends a header line every few seconds then holds its connection forever).
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.header_read_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Accept at most this many connections at a time from one client address; more are
    /// closed at once. Default: `None` (no cap). Clients behind one NAT or proxy share an
    /// address: set it well above what one of them opens.
    pub fn max_connections_per_ip(mut self, max: Option<usize>) -> Self {
        self.max_per_ip = max.filter(|m| *m > 0);
        self
    }

    /// Send every write at once (`TCP_NODELAY`) instead of holding small segments back until
    /// the previous one is acknowledged (Nagle's algorithm, which with delayed acknowledgements
    /// adds up to about 40 ms to an event written soon after another, or to a small response).
    /// Default: `true`, as an event stream writes one small frame per event.
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Serve event stream requests with a lean HTTP/1 driver instead of hyper's: an idle
    /// stream then holds no read buffer and no write buffer (hyper keeps both, tens of KB per
    /// connection). Default: `false`.
    ///
    /// The driver reads each new connection's first request head itself (parsed with
    /// `httparse`, within [`header_read_timeout`](Self::header_read_timeout) and 16 KiB) and
    /// serves it only when it is a plain `GET` over HTTP/1.0 or 1.1 with `Accept:
    /// text/event-stream`, an origin-form target, one `Host`, no body (`Content-Length` or
    /// `Transfer-Encoding`), no `Upgrade`, no `Expect`, and nothing sent after the head. The
    /// router (and its layers) runs on it as on any request; whatever it answers is written
    /// with `Connection: close` — chunked (close-delimited on HTTP/1.0), or with a
    /// `Content-Length` when the body's size is known — and the connection closes after it.
    /// While a response streams, bytes or end-of-file from the client close the connection
    /// (one request per lean connection; `on_disconnect` runs). Every other connection —
    /// other requests, HTTP/2 with prior knowledge, pipelined requests, oversized or malformed
    /// heads — goes to hyper with the bytes already read replayed, and is served exactly as
    /// without this option (a head split between the two may take up to twice the deadline).
    pub fn lean_streams(mut self, lean: bool) -> Self {
        self.lean = lean;
        self
    }

    /// Stop accepting when `signal` completes, then wait for the open connections to end
    /// (end the streams first, e.g. with `ChannelManager::shutdown`, or they hold the server).
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.get_ref().local_addr()
    }

    async fn run(self) -> io::Result<()> {
        let Serve {
            listener,
            app,
            header_read_timeout,
            max_per_ip,
            nodelay,
            lean,
            signal,
        } = self;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let (closing, _) = tokio::sync::watch::channel(());
        let counts = PerIp::new(max_per_ip);
        let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = listener.get_ref().accept() => accepted,
                () = &mut signal => break,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    accept_failed(&e, &mut warned);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Some(slot) = counts.take(peer.ip()) else {
                tracing::debug!(%peer, "closed a connection over the per-address cap");
                drop(stream);
                continue;
            };
            let io = match listener.prepare(stream, nodelay) {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "could not set TCP options");
                    continue;
                }
            };
            if lean {
                let conn = lean::Conn {
                    io,
                    peer,
                    app: app.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    closing: closing.subscribe(),
                    header_read_timeout,
                    slot,
                };
                tokio::spawn(conn.run());
            } else {
                let conn = serve_hyper(
                    builder.clone(),
                    app.clone(),
                    io,
                    peer,
                    graceful.watcher(),
                    slot,
                );
                tokio::spawn(conn);
            }
        }
        drop(listener);
        // Lean connections still waiting for their head close; every connection holds a
        // watcher, so this waits for lean ones too.
        closing.send_replace(());
        graceful.shutdown().await;
        Ok(())
    }
}

/// Serve one connection with hyper, as every connection is without the lean driver.
fn serve_hyper<I>(
    builder: Arc<Builder<TokioExecutor>>,
    app: Router,
    io: I,
    peer: SocketAddr,
    watcher: Watcher,
    slot: Slot,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            let res: Result<_, Infallible> = app.call(req).await;
            res
        }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let conn = watcher.watch(conn);
    async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        drop(slot);
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl WriteTimeoutListener<TcpListener> {
    /// An accepted stream with this listener's TCP options and write timeout.
    fn prepare(&self, stream: TcpStream, nodelay: bool) -> io::Result<WriteTimeoutIo<TcpStream>> {
        if nodelay {
            stream.set_nodelay(true)?;
        }
        self.tcp_options().apply(&stream)?;
        Ok(WriteTimeoutIo::new(stream, self.write_timeout()))
    }
}

/// Log a failed `accept`: the peer's own trouble at debug level; anything else (no descriptor
/// left, no memory) as a warning, at most once per [`ACCEPT_WARNING_EVERY`].
fn accept_failed(e: &io::Error, warned: &mut Option<tokio::time::Instant>) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) {
        tracing::debug!(error = %e, "accept failed for one connection");
        return;
    }
    let now = tokio::time::Instant::now();
    if warned.is_none_or(|at| now.duration_since(at) >= ACCEPT_WARNING_EVERY) {
        *warned = Some(now);
        tracing::warn!(
            error = %e,
            "accept failed: new connections wait (out of file descriptors? raise `ulimit -n`)"
        );
    }
}

/// Open connections per client address, when capped.
#[derive(Clone)]
struct PerIp {
    max: Option<usize>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`PerIp`], given back when dropped.
struct Slot {
    counts: Option<(PerIp, IpAddr)>,
}

impl PerIp {
    fn new(max: Option<usize>) -> Self {
        PerIp {
            max,
            open: Arc::default(),
        }
    }

    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let Some(max) = self.max else {
            return Some(Slot { counts: None });
        };
        let mut open = ssehub_core::backend::lock(&self.open);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: Some((self.clone(), ip)),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.counts.take() {
            let mut open = ssehub_core::backend::lock(&counts.open);
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn accepted_sockets_send_at_once_unless_told_not_to() {
        let listener = WriteTimeoutListener::from(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.get_ref().local_addr().unwrap();
        for nodelay in [true, false] {
            let _client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.get_ref().accept().await.unwrap();
            let io = listener.prepare(stream, nodelay).unwrap();
            assert_eq!(io.get_ref().nodelay().unwrap(), nodelay);
        }
    }
}
