//! The lean HTTP/1 driver ([`Serve::lean_streams`](super::Serve::lean_streams)): reads a
//! connection's request head itself and, when it asks for an event stream and nothing odd,
//! runs the router on it and writes the stream to the socket with a write buffer that exists
//! only while there is something to write and no read buffer at all. Every other connection
//! goes to hyper, with the bytes already read replayed in front ([`Rewind`]).

use std::convert::Infallible;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::{Buf as _, BufMut as _};
use http::{HeaderMap, StatusCode, Version, header};
use http_body::Body as _;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower_service::Service as _;

use super::Slot;
use super::head::{Decision, Limits, classify};
use crate::listener::WriteTimeoutIo;

/// The head buffer's first size; it doubles up to [`Limits::max_head`].
const FIRST_READ: usize = 2048;

/// Frames gathered before they are written: a burst is written in blocks of about this size.
const GATHER: usize = 16 * 1024;

/// One accepted connection, before anything is read.
pub(super) struct Conn {
    pub(super) io: WriteTimeoutIo<TcpStream>,
    pub(super) peer: SocketAddr,
    pub(super) app: Router,
    pub(super) builder: Arc<Builder<TokioExecutor>>,
    /// Held until the connection ends (hyper's or lean), so graceful shutdown waits for it.
    pub(super) watcher: Watcher,
    /// Changes when the server stops accepting: a connection still waiting for its head closes.
    pub(super) closing: watch::Receiver<()>,
    pub(super) header_read_timeout: Option<Duration>,
    pub(super) slot: Slot,
}

impl Conn {
    /// Serve the connection to its end, on the lean path or handed to hyper.
    pub(super) async fn run(self) {
        let Conn {
            mut io,
            peer,
            app,
            builder,
            watcher,
            mut closing,
            header_read_timeout,
            slot,
        } = self;
        let read = read_head(&mut io, Limits::default());
        let read = async {
            match header_read_timeout {
                Some(t) => tokio::time::timeout(t, read).await.ok().flatten(),
                None => read.await,
            }
        };
        let (buf, decision) = tokio::select! {
            biased;
            Ok(()) = closing.changed() => return,
            read = read => match read {
                Some(read) => read,
                None => return,
            },
        };
        drop(closing);
        match decision {
            Decision::Lean(req) => {
                drop(buf);
                if let Err(e) = serve_stream(io, peer, app, *req).await {
                    tracing::debug!(%peer, error = %e, "lean connection ended with an error");
                }
                drop((watcher, slot));
            }
            Decision::NeedMore | Decision::Hyper => {
                let io = Rewind {
                    prefix: buf,
                    at: 0,
                    inner: io,
                };
                // A task of its own: this one (and its size) ends here.
                tokio::spawn(super::serve_hyper(builder, app, io, peer, watcher, slot));
            }
        }
    }
}

/// Read until [`classify`] decides; `None` when the peer closed, failed, or sent nothing but
/// empty reads. Nothing is allocated until the connection is readable.
async fn read_head(
    io: &mut WriteTimeoutIo<TcpStream>,
    limits: Limits,
) -> Option<(Vec<u8>, Decision)> {
    io.get_ref().readable().await.ok()?;
    let mut buf = Vec::with_capacity(FIRST_READ.min(limits.max_head));
    loop {
        if buf.len() == buf.capacity() {
            let more = buf
                .capacity()
                .min(limits.max_head.saturating_sub(buf.len()));
            buf.reserve_exact(more.max(1));
        }
        let room = buf.capacity() - buf.len();
        let n = tokio::io::AsyncReadExt::read_buf(io, &mut (&mut buf).limit(room))
            .await
            .ok()?;
        if n == 0 {
            return None;
        }
        match classify(&buf, limits) {
            Decision::NeedMore => {}
            decision => return Some((buf, decision)),
        }
    }
}

/// Run the router on a lean request and write its response, then close.
async fn serve_stream(
    mut io: WriteTimeoutIo<TcpStream>,
    peer: SocketAddr,
    mut app: Router,
    req: http::Request<()>,
) -> io::Result<()> {
    let version = req.version();
    let mut req = req.map(|()| Body::empty());
    req.extensions_mut().insert(ConnectInfo(peer));
    // Boxed: the router's future is not kept in this task's size for the stream's lifetime.
    let res: Result<_, Infallible> = Box::pin(app.call(req)).await;
    let Ok(res) = res;
    let (parts, mut body) = res.into_parts();
    let framing = Framing::of(parts.status, version, body.size_hint().exact());
    let mut out = Vec::with_capacity(256);
    write_head(&mut out, version, parts.status, &parts.headers, framing);
    drop(parts);
    let end = Stream {
        io: &mut io,
        body: &mut body,
        out,
        written: 0,
        framing,
        done: false,
    }
    .await?;
    drop(body);
    if end == End::Finished {
        io.shutdown().await?;
    }
    Ok(())
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body allowed (`1xx`, `204`, `304`).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1).
    Chunked,
    /// Ended by closing the connection (HTTP/1.0).
    Close,
}

impl Framing {
    fn of(status: StatusCode, version: Version, exact: Option<u64>) -> Self {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::None
        } else if let Some(n) = exact {
            Framing::Length(n)
        } else if version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    }
}

/// The status line and headers: the response's own, but for the framing headers, which are
/// this driver's (`Connection: close` always: one request per lean connection). The version is
/// the request's, as hyper answers.
fn write_head(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
) {
    let reason = status.canonical_reason().unwrap_or("<none>");
    let minor = u8::from(version != Version::HTTP_10);
    let _ = write!(out, "HTTP/1.{minor} {} {reason}\r\n", status.as_u16());
    for (name, value) in headers {
        if matches!(
            *name,
            header::CONNECTION | header::TRANSFER_ENCODING | header::CONTENT_LENGTH
        ) || name == "keep-alive"
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
}

/// How a lean response ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body ended and everything was written.
    Finished,
    /// The client closed its side (or the connection failed): it is gone.
    Gone,
    /// The client sent bytes after its request: one request per lean connection, closed.
    Spoke,
}

/// Writing a response: the body's frames, gathered into `out` while the body has them ready,
/// then written; `out` is freed whenever it is empty and the body has nothing, so an idle
/// stream holds no buffer. The socket's read side is only watched for the peer closing.
struct Stream<'a> {
    io: &'a mut WriteTimeoutIo<TcpStream>,
    body: &'a mut Body,
    out: Vec<u8>,
    written: usize,
    framing: Framing,
    done: bool,
}

impl Stream<'_> {
    /// The client closed, failed, or sent bytes (`Pending`: nothing happened).
    fn poll_peer(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let mut scratch = [0u8; 64];
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *self.io).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => Poll::Ready(End::Spoke),
            Poll::Ready(_) => Poll::Ready(End::Gone),
        }
    }

    /// Append one data frame, framed.
    fn push(&mut self, data: &[u8]) {
        match self.framing {
            Framing::Chunked if !data.is_empty() => {
                let _ = write!(self.out, "{:x}\r\n", data.len());
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(b"\r\n");
            }
            Framing::Length(_) | Framing::Close => self.out.extend_from_slice(data),
            Framing::Chunked | Framing::None => {}
        }
    }

    /// Gather frames until the body has none ready (`true`) or `out` is full (`false`).
    fn fill(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        while !self.done && self.out.len() < GATHER {
            match Pin::new(&mut *self.body).poll_frame(cx) {
                Poll::Pending => return Ok(true),
                Poll::Ready(None) => {
                    self.done = true;
                    if self.framing == Framing::Chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            self.push(chunk);
                            data.advance(n);
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => return Err(io::Error::other(e)),
            }
        }
        Ok(self.done)
    }

    /// Write `out` out; `Pending` while the socket takes no more.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = match Pin::new(&mut *self.io).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.written += n;
        }
        if !self.out.is_empty() {
            std::task::ready!(Pin::new(&mut *self.io).poll_flush(cx))?;
            self.out.clear();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl Future for Stream<'_> {
    type Output = io::Result<End>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(end) = this.poll_peer(cx) {
            return Poll::Ready(Ok(end));
        }
        loop {
            let idle = this.fill(cx)?;
            std::task::ready!(this.poll_drain(cx))?;
            if this.done {
                return Poll::Ready(Ok(End::Finished));
            }
            if idle {
                // Nothing to write and nothing ready: hold no buffer while idle.
                this.out = Vec::new();
                return Poll::Pending;
            }
        }
    }
}

/// A connection whose first bytes, already read, are read again first (by hyper).
pub(super) struct Rewind<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
