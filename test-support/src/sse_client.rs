//! A minimal SSE client over a raw loopback TCP connection: HTTP/1.1, chunked decoding, and
//! ssehub's spec-following parser. Light enough to open thousands at once, and it sends any
//! header (a forged `Last-Event-ID`, a bad `Origin`).
//!
//! # Example
//!
//! ```no_run
//! # async fn run(addr: std::net::SocketAddr) -> std::io::Result<()> {
//! use ssehub_test_support::sse_client::SseClient;
//! let mut c = SseClient::connect(addr, "/events/1", &[("last-event-id", "abc")]).await?;
//! assert_eq!(c.status(), 200);
//! let first = c.next_event().await;
//! # let _ = first; Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ssehub_core::sse_parser::{ParsedEvent, SseParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for one read before a call gives up.
pub const READ_LIMIT: Duration = Duration::from_secs(20);

/// One SSE (or plain HTTP) response being read.
#[derive(Debug)]
pub struct SseClient {
    stream: TcpStream,
    status: u16,
    head: String,
    chunked: bool,
    /// Undecoded body bytes.
    raw: Vec<u8>,
    /// Decoded body bytes not yet parsed (for non-SSE bodies).
    body: Vec<u8>,
    parser: SseParser,
    events: VecDeque<ParsedEvent>,
    /// Body bytes still expected when the response has a `content-length`.
    remaining: Option<usize>,
    ended: bool,
    stalled: bool,
}

impl SseClient {
    /// Send `GET path` with `headers` and read the response head.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Self> {
        Self::request(addr, "GET", path, headers).await
    }

    /// Send any request and read the response head.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut c = SseClient {
            stream,
            status: 0,
            head: String::new(),
            chunked: false,
            raw: Vec::new(),
            body: Vec::new(),
            parser: SseParser::new(),
            events: VecDeque::new(),
            remaining: None,
            ended: false,
            stalled: false,
        };
        loop {
            if let Some(i) = c.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                c.head = String::from_utf8_lossy(&c.raw[..i]).into_owned();
                c.raw.drain(..i + 4);
                break;
            }
            if !c.read_more().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "no response head",
                ));
            }
        }
        c.status = c
            .head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        c.chunked = c
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if !c.chunked {
            c.remaining = c.header("content-length").and_then(|v| v.parse().ok());
        }
        c.decode();
        Ok(c)
    }

    async fn read_more(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        let n = tokio::time::timeout(READ_LIMIT, self.stream.read(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??;
        self.raw.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    }

    /// Move complete chunks from `raw` into the parser.
    fn decode(&mut self) {
        if !self.chunked {
            let mut data = std::mem::take(&mut self.raw);
            if let Some(remaining) = &mut self.remaining {
                data.truncate(*remaining);
                *remaining -= data.len();
                if *remaining == 0 {
                    self.ended = true;
                }
            }
            self.feed(&data);
            return;
        }
        while let Some(i) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..i]).ok().and_then(|s| {
                usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok()
            });
            let Some(size) = size else {
                self.ended = true;
                return;
            };
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            if self.raw.len() < i + 2 + size + 2 {
                return;
            }
            let data = self.raw[i + 2..i + 2 + size].to_vec();
            self.raw.drain(..i + 2 + size + 2);
            self.feed(&data);
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.body.extend_from_slice(data);
        self.parser.feed(data);
        self.events.extend(self.parser.take_events());
    }

    /// The response status.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A response header (the first with that name, case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The next event, or `None` when the response ended (its last chunk, its `content-length`,
    /// or the connection closed) or stalled past [`READ_LIMIT`] (see [`SseClient::stalled`]).
    pub async fn next_event(&mut self) -> Option<ParsedEvent> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            match self.read_more().await {
                Ok(true) => self.decode(),
                Ok(false) => {
                    self.ended = true;
                    return None;
                }
                Err(e) => {
                    self.stalled = e.kind() == io::ErrorKind::TimedOut;
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// Read until the stream ends; the events left.
    pub async fn until_end(&mut self) -> Vec<ParsedEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event().await {
            out.push(e);
        }
        out
    }

    /// Whether the last read gave up after [`READ_LIMIT`] without a byte (the stream did not
    /// end: it went silent).
    #[must_use]
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// The body read so far, decoded from chunks.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The last `retry:` hint seen.
    #[must_use]
    pub fn retry(&self) -> Option<u64> {
        self.parser.retry()
    }

    /// The last event id seen (what a browser would send on reconnect).
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// Keep-alive comments seen.
    #[must_use]
    pub fn comments(&self) -> usize {
        self.parser.comments()
    }
}
