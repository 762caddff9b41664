//! [`WriteTimeoutListener`]: a listener whose connections fail a write that makes no progress
//! for too long, and whose TCP sockets detect a vanished peer (the bounds are documented on the
//! type).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use ssehub_axum::WriteTimeoutListener;
//!
//! # async fn run(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let listener = WriteTimeoutListener::new(listener, Duration::from_secs(30))
//!     // The defaults, spelled out:
//!     .tcp_user_timeout(Some(Duration::from_secs(30)))
//!     .tcp_keepalive(Some(Duration::from_secs(30)))
//!     .tcp_keepalive_interval(Duration::from_secs(10))
//!     .tcp_keepalive_retries(3);
//! // Routes turned into services once, not per connection (see the README).
//! axum::serve(listener, app.with_state::<()>(()).into_make_service()).await
//! # }
//! ```

use std::any::Any;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Longest `TCP_KEEPIDLE` and `TCP_KEEPINTVL` Linux accepts, in seconds.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Largest `TCP_KEEPCNT` Linux accepts.
const MAX_KEEPALIVE_RETRIES: u32 = 127;
/// Longest `TCP_USER_TIMEOUT` (a C `int` of milliseconds).
const MAX_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// What is set on every accepted TCP socket.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "set on Linux and Android only")
)]
pub(crate) struct TcpOptions {
    user_timeout: Option<Duration>,
    keepalive: Option<Duration>,
    keepalive_interval: Duration,
    keepalive_retries: u32,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            user_timeout: Some(Duration::from_secs(30)),
            keepalive: Some(Duration::from_secs(30)),
            keepalive_interval: Duration::from_secs(10),
            keepalive_retries: 3,
        }
    }
}

impl TcpOptions {
    /// Set the options on `io` when it is a TCP socket; other connections are left alone.
    pub(crate) fn apply(&self, io: &dyn Any) -> io::Result<()> {
        let Some(tcp) = io.downcast_ref::<tokio::net::TcpStream>() else {
            return Ok(());
        };
        let socket = socket2::SockRef::from(tcp);
        if let Some(idle) = self.keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let keepalive = keepalive
                .with_interval(self.keepalive_interval)
                .with_retries(self.keepalive_retries);
            socket.set_tcp_keepalive(&keepalive)?;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(timeout) = self.user_timeout {
            socket.set_tcp_user_timeout(Some(timeout))?;
        }
        Ok(())
    }
}

/// Clamp a keepalive time to what the kernel accepts (whole seconds, 1 to 32,767).
fn keepalive_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().clamp(1, MAX_KEEPALIVE_SECS))
}

/// A listener whose connections fail a write that makes no progress for too long, and whose
/// TCP sockets detect a vanished peer, so a client that stops reading, or that is gone without a
/// word (power loss, network gone, NAT state dropped), is disconnected and its stream freed.
///
/// A slow SSE client is first cut off by its session queue bound; but its TCP connection stays
/// open as long as the server has bytes it cannot write, and hyper has no write timeout. Wrap
/// the listener given to `axum::serve` to close such connections.
///
/// A vanished client on an idle channel is another matter: keep-alive comments of a few bytes
/// never fill a send buffer, so no write ever blocks; without help the kernel retransmits them
/// for about 15 minutes (Linux `tcp_retries2`) before it gives up. So every accepted TCP socket
/// also gets `TCP_USER_TIMEOUT` (data unacknowledged that long closes the connection) and TCP
/// keepalive probes (for a connection that sends nothing at all). With the defaults, a vanished
/// client is detected within:
///
/// - **keep-alive interval + user timeout** on a stream that writes (15 s + 30 s = 45 s with
///   the endpoint's default keep-alive comments): the next write is never acknowledged;
/// - **keepalive idle + probe interval, or the user timeout rounded up to a probe if longer**
///   on a connection that writes nothing (30 s + 10 s = 40 s): the first probe goes unanswered,
///   and on Linux the user timeout, when set, decides when unanswered probes close the
///   connection (otherwise idle + interval × retries);
///
/// plus the time the kernel takes to notice (its timers tick at most a few hundred milliseconds
/// late). `TCP_USER_TIMEOUT` and the probe interval and count are set on Linux and Android only;
/// elsewhere the keepalive idle time alone is set and the system's defaults apply. The options
/// are set when the listener's connections are `tokio::net::TcpStream`s (as from
/// `tokio::net::TcpListener`, possibly inside axum's `tap_io`); other connections (a Unix
/// socket, a TLS stream) are left as they are: set the options on the TCP socket before it is
/// wrapped.
///
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use ssehub_axum::WriteTimeoutListener;
///
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// // A 30 s write timeout; keepalive and TCP_USER_TIMEOUT at their defaults.
/// let app = app.with_state::<()>(()).into_make_service();
/// axum::serve(WriteTimeoutListener::new(listener, Duration::from_secs(30)), app).await
/// # }
/// ```
#[derive(Debug)]
pub struct WriteTimeoutListener<L> {
    inner: L,
    timeout: Duration,
    tcp: TcpOptions,
}

impl<L> WriteTimeoutListener<L> {
    /// The listener inside.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    pub(crate) fn tcp_options(&self) -> TcpOptions {
        self.tcp
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        self.timeout
    }

    /// Fail any write on an accepted connection that stays blocked for `timeout`
    /// (`Duration::MAX`: never), and set the TCP options below at their defaults.
    pub fn new(inner: L, timeout: Duration) -> Self {
        WriteTimeoutListener {
            inner,
            timeout,
            tcp: TcpOptions::default(),
        }
    }

    /// `TCP_USER_TIMEOUT` of accepted sockets: how long sent data may stay unacknowledged
    /// before the kernel closes the connection (Linux and Android). Default: 30 seconds. `None`
    /// (or zero) leaves the system default (about 15 minutes of retransmissions). At most
    /// `i32::MAX` milliseconds (about 24.8 days; longer is clamped).
    #[must_use]
    pub fn tcp_user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.tcp.user_timeout = timeout
            .filter(|t| !t.is_zero())
            .map(|t| t.min(MAX_USER_TIMEOUT));
        self
    }

    /// Turn TCP keepalive on for accepted sockets, probing after this long without traffic.
    /// Default: 30 seconds. `None` leaves the sockets' keepalive as it is (off, usually). Whole
    /// seconds from 1 to 32,767 (clamped).
    #[must_use]
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp.keepalive = idle.map(keepalive_secs);
        self
    }

    /// Time between two keepalive probes (Linux and Android). Default: 10 seconds. Whole
    /// seconds from 1 to 32,767 (clamped).
    #[must_use]
    pub fn tcp_keepalive_interval(mut self, interval: Duration) -> Self {
        self.tcp.keepalive_interval = keepalive_secs(interval);
        self
    }

    /// Unanswered keepalive probes before the connection is closed (Linux and Android; when
    /// [`tcp_user_timeout`](Self::tcp_user_timeout) is set, Linux lets it decide instead).
    /// Default: 3. From 1 to 127 (clamped).
    #[must_use]
    pub fn tcp_keepalive_retries(mut self, retries: u32) -> Self {
        self.tcp.keepalive_retries = retries.clamp(1, MAX_KEEPALIVE_RETRIES);
        self
    }
}

impl<L: Listener> Listener for WriteTimeoutListener<L> {
    type Io = WriteTimeoutIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        if let Err(e) = self.tcp.apply(&io) {
            // The connection still works, only without early detection of a vanished peer.
            tracing::debug!(error = %e, "could not set TCP options on an accepted socket");
        }
        (
            WriteTimeoutIo {
                inner: io,
                timeout: self.timeout,
                stalled: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection from [`WriteTimeoutListener`].
#[derive(Debug)]
pub struct WriteTimeoutIo<I> {
    inner: I,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteTimeoutIo<I> {
    /// `inner`, whose writes fail once blocked for `timeout`.
    pub(crate) fn new(inner: I, timeout: Duration) -> Self {
        WriteTimeoutIo {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// The connection inside (for example the `TcpStream`, to read its address or options).
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// Map a write poll: remember when it started to block, fail once blocked for too long.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => {
                let timeout = self.timeout;
                // `sleep` saturates: a timeout too long to add to now never fires.
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write made no progress: client not reading",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeoutIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeoutIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
