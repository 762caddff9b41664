//! An SSE test client: HTTP/1.1 through `reqwest`, the body fed to ssehub's own spec-following
//! parser. It sends any header (a forged `Last-Event-ID`, a bad `Origin`), keeps the body bytes,
//! and tells a stream that ended from one that went silent ([`SseClient::stalled`]). Each client
//! has its own connection, so thousands can be open at once.
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

/// Longest wait for one read before a call gives up.
pub const READ_LIMIT: Duration = Duration::from_secs(20);

/// One SSE (or plain HTTP) response being read.
#[derive(Debug)]
pub struct SseClient {
    response: reqwest::Response,
    /// Body bytes read so far.
    body: Vec<u8>,
    parser: SseParser,
    events: VecDeque<ParsedEvent>,
    ended: bool,
    stalled: bool,
}

impl SseClient {
    /// Send `GET path` with `headers` (and `Accept: text/event-stream` unless `headers` has an
    /// `Accept`) and read the response head.
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
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(io::Error::other)?;
        // A client per response: its own connection, no pool shared across test runtimes.
        let client = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(io::Error::other)?;
        let get = method == reqwest::Method::GET;
        let mut request = client.request(method, format!("http://{addr}{path}"));
        // As `EventSource` does (and what a server's lean driver looks for), unless the caller
        // sets its own.
        if get
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
        {
            request = request.header("accept", "text/event-stream");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(READ_LIMIT, request.send())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response head in time"))?
            .map_err(io::Error::other)?;
        Ok(SseClient {
            response,
            body: Vec::new(),
            parser: SseParser::new(),
            events: VecDeque::new(),
            ended: false,
            stalled: false,
        })
    }

    /// The response status.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    /// A response header (the first with that name, case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
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
            match tokio::time::timeout(READ_LIMIT, self.response.chunk()).await {
                Ok(Ok(Some(data))) => {
                    self.body.extend_from_slice(&data);
                    self.parser.feed(&data);
                    self.events.extend(self.parser.take_events());
                }
                Ok(Ok(None) | Err(_)) => self.ended = true,
                Err(_) => {
                    self.stalled = true;
                    self.ended = true;
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
