//! A minimal subscriber on a raw loopback `TcpStream`: HTTP/1.1 head, chunked decoding, and just
//! enough SSE to find `data:` lines and the `n` / `t` fields in them. No allocation per event,
//! so the client is never the bottleneck.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::server::now_ns;

/// An open SSE response whose head has been read (the server has registered the session).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// What one subscriber received.
#[derive(Debug, Default)]
pub struct Received {
    /// Events received (each `n` counted once).
    pub events: u64,
    /// Events that came again or out of order.
    pub duplicates: u64,
    /// Events skipped (a later `n` arrived first).
    pub gaps: u64,
    /// The stream ended (terminating chunk or EOF).
    pub ended: bool,
    /// A read error, if any.
    pub error: Option<String>,
    /// When the last event arrived.
    pub last_at: Option<Instant>,
    /// Publish→receive latency of each event, in µs.
    pub latencies_us: Vec<u32>,
}

/// Open `GET path` on `addr` and read the response head. `rcvbuf` shrinks the socket's receive
/// buffer (a slow client).
pub async fn connect(addr: SocketAddr, path: &str, rcvbuf: Option<u32>) -> io::Result<Conn> {
    connect_from(addr, path, rcvbuf, None).await
}

/// [`connect`] from the local address `source` (its port chosen by the kernel), or from
/// whatever address the kernel picks when `None`. Connections spread over many loopback
/// sources ([`spread_source`]) never run out of ephemeral ports: Linux accepts any address of
/// 127.0.0.0/8 on `lo` as a source.
pub async fn connect_from(
    addr: SocketAddr,
    path: &str,
    rcvbuf: Option<u32>,
    source: Option<IpAddr>,
) -> io::Result<Conn> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    let mut stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(io::Error::other(format!("bad response: {head}")));
            }
            if !head.contains("transfer-encoding: chunked") {
                return Err(io::Error::other("response is not chunked"));
            }
            buf.advance(end + 4);
            return Ok(Conn { stream, buf });
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response head",
            ));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The number after `key` (e.g. `"n":`) in `line`.
fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(line, key)? + key.len();
    let mut v: u64 = 0;
    let mut any = false;
    for b in &line[at..] {
        if b.is_ascii_digit() {
            v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

enum Chunk {
    Size,
    Data(usize),
    Crlf,
    Done,
}

impl Conn {
    /// Read events until `expect` have arrived (`n` = 0..expect), the stream ends, or `deadline`.
    pub async fn read_events(self, expect: u64, deadline: Instant) -> Received {
        self.read_counting(expect, deadline, None).await
    }

    /// [`read_events`](Self::read_events), also adding each event to `progress` as it arrives.
    /// Events are numbered per `event:` name, so one connection may carry several channels (the
    /// multiplexed endpoint names each event after its channel): `expect` counts them all.
    pub async fn read_counting(
        mut self,
        expect: u64,
        deadline: Instant,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Received {
        self.read_open(expect, deadline, progress).await
    }

    /// [`read_counting`](Self::read_counting) without closing the connection: it stays open
    /// until the `Conn` is dropped (so a run can measure the server before every subscriber
    /// disconnects). Meant to be called once: whatever was read past the last event is dropped.
    pub async fn read_open(
        &mut self,
        expect: u64,
        deadline: Instant,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Received {
        let mut r = Received {
            latencies_us: Vec::with_capacity(usize::try_from(expect).unwrap_or(0)),
            ..Received::default()
        };
        let mut state = Chunk::Size;
        let mut sse = BytesMut::with_capacity(16 * 1024);
        // The next `n` of each event name (one entry for a plain stream), and their sum.
        let mut nexts: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut done: u64 = 0;
        let mut name: Vec<u8> = Vec::new();
        let mut pending: Option<(u64, u64)> = None;
        let mut raw = std::mem::take(&mut self.buf);
        loop {
            // De-chunk what is buffered into `sse`.
            loop {
                match state {
                    Chunk::Size => match find(&raw, b"\r\n") {
                        Some(end) => {
                            let line = std::str::from_utf8(&raw[..end]).unwrap_or("");
                            let size = line.split(';').next().unwrap_or("").trim();
                            let Ok(size) = usize::from_str_radix(size, 16) else {
                                r.error = Some(format!("bad chunk size {line:?}"));
                                return r;
                            };
                            raw.advance(end + 2);
                            state = if size == 0 {
                                Chunk::Done
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        None => break,
                    },
                    Chunk::Data(left) => {
                        if raw.is_empty() {
                            break;
                        }
                        let take = left.min(raw.len());
                        sse.extend_from_slice(&raw[..take]);
                        raw.advance(take);
                        state = if take == left {
                            Chunk::Crlf
                        } else {
                            Chunk::Data(left - take)
                        };
                    }
                    Chunk::Crlf => {
                        if raw.len() < 2 {
                            break;
                        }
                        raw.advance(2);
                        state = Chunk::Size;
                    }
                    Chunk::Done => break,
                }
            }
            // Parse complete SSE lines.
            let now = now_ns();
            let mut consumed = 0;
            while let Some(nl) = sse[consumed..].iter().position(|b| *b == b'\n') {
                let line = &sse[consumed..consumed + nl];
                consumed += nl + 1;
                if line.is_empty() {
                    if let Some((n, t)) = pending.take() {
                        let slot = match nexts.iter().position(|(k, _)| *k == name) {
                            Some(i) => i,
                            None => {
                                nexts.push((name.clone(), 0));
                                nexts.len() - 1
                            }
                        };
                        let next = &mut nexts[slot].1;
                        match n.cmp(next) {
                            std::cmp::Ordering::Equal => {
                                r.events += 1;
                                *next += 1;
                                done += 1;
                            }
                            std::cmp::Ordering::Greater => {
                                r.gaps += n - *next;
                                r.events += 1;
                                done += n + 1 - *next;
                                *next = n + 1;
                            }
                            std::cmp::Ordering::Less => r.duplicates += 1,
                        }
                        if let Some(p) = progress {
                            p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let us = now.saturating_sub(t) / 1000;
                        r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    name.clear();
                } else if let Some(event) = line.strip_prefix(b"event:") {
                    name.clear();
                    name.extend_from_slice(event.strip_prefix(b" ").unwrap_or(event));
                } else if line.starts_with(b"data:")
                    && let (Some(n), Some(t)) =
                        (number_after(line, b"\"n\":"), number_after(line, b"\"t\":"))
                {
                    pending = Some((n, t));
                }
            }
            sse.advance(consumed);
            if done >= expect && expect > 0 {
                r.last_at = Some(Instant::now());
                return r;
            }
            if matches!(state, Chunk::Done) {
                r.ended = true;
                return r;
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut raw)).await;
            match read {
                Err(_) => return r,
                Ok(Ok(0)) => {
                    r.ended = true;
                    return r;
                }
                Ok(Ok(_)) => {
                    if r.events > 0 {
                        r.last_at = Some(Instant::now());
                    }
                }
                Ok(Err(e)) => {
                    r.error = Some(e.to_string());
                    return r;
                }
            }
        }
    }
}

/// Open `count` connections to `paths` (round robin), `wave` at a time.
pub async fn open_many(
    addrs: &[SocketAddr],
    paths: &[String],
    count: usize,
    wave: usize,
) -> io::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(count);
    let mut i = 0;
    while i < count {
        let end = (i + wave).min(count);
        let batch = (i..end).map(|k| {
            let addr = addrs[k % addrs.len()];
            let path = paths[k % paths.len()].clone();
            async move { connect(addr, &path, None).await }
        });
        for c in futures_util::future::join_all(batch).await {
            conns.push(c?);
        }
        i = end;
    }
    Ok(conns)
}

/// The source address of connection `i` of a crowd: 127.X.Y.Z with Z = `i` % 250 + 1, Y =
/// (`i` / 250) % 250 and X = 1 + `i` / 62,500 (at most 254), so every one of the first 15.8
/// million connections has its own address, and none is 127.0.0.1.
#[must_use]
pub fn spread_source(i: usize) -> IpAddr {
    let octet = |v: usize| u8::try_from(v).unwrap_or(u8::MAX);
    IpAddr::V4(Ipv4Addr::new(
        127,
        octet((1 + i / 62_500).min(254)),
        octet((i / 250) % 250),
        octet(i % 250 + 1),
    ))
}

/// Open `count` connections to `path` on `addr`, connection `k` from
/// [`spread_source`]`(first + k)`, at most `concurrency` connecting at once (each one that
/// completes lets the next start, so the server's listen backlog never holds more than
/// `concurrency`). Each must have its response head within `each`. The first failure ends it
/// with an error naming how many were open (the others are closed).
pub async fn open_spread(
    addr: SocketAddr,
    path: &str,
    first: usize,
    count: usize,
    concurrency: usize,
    each: Duration,
) -> io::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(count);
    let mut pending = futures_util::stream::iter(first..first + count)
        .map(|i| async move {
            let source = spread_source(i);
            match tokio::time::timeout(each, connect_from(addr, path, None, Some(source))).await {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("from {source}: {e}"))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("from {source}: no response head within {each:?}"),
                )),
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(c) = pending.next().await {
        match c {
            Ok(c) => conns.push(c),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{} of these {count} connections open: {e}", conns.len()),
                ));
            }
        }
    }
    Ok(conns)
}

/// Wait up to `limit` for a connection that is at least `age` old to be usable.
pub fn deadline_after(limit: Duration) -> Instant {
    Instant::now() + limit
}
