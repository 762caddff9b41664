//! A minimal HTTP/1.1 client on one keep-alive loopback connection: one request at a time
//! (`Content-Length` bodies both ways), so a run measures the server, not a client library's
//! pool. It never reconnects: a server that closes the connection fails the next request.

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct KeepAlive {
    stream: TcpStream,
    host: String,
    /// What was read past the last response.
    buf: BytesMut,
    /// The request being written (reused).
    req: Vec<u8>,
    /// Requests answered on this connection.
    pub requests: u64,
}

/// A response: its status and its body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (`Content-Length` bytes).
    pub body: Bytes,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl KeepAlive {
    /// Connect to `addr` (`TCP_NODELAY`, as a client library would set).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            stream,
            host: addr.to_string(),
            buf: BytesMut::with_capacity(8 * 1024),
            req: Vec::with_capacity(16 * 1024),
            requests: 0,
        })
    }

    /// `POST path` with a JSON `body`, written in one `write`; the response, read in full.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> io::Result<Response> {
        use std::io::Write as _;
        self.req.clear();
        write!(
            self.req,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )?;
        self.req.extend_from_slice(body);
        self.stream.write_all(&self.req).await?;
        let res = self.read_response().await?;
        self.requests += 1;
        Ok(res)
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the server closed the keep-alive connection after {} requests",
                    self.requests
                ),
            ));
        }
        Ok(())
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut length = None;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad("bad content-length"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad(format!(
                    "transfer-encoding {value:?}: this client reads Content-Length bodies only"
                )));
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
        let length = length.ok_or_else(|| bad("a response without content-length"))?;
        self.buf.advance(end + 4);
        while self.buf.len() < length {
            self.fill().await?;
        }
        let body = self.buf.split_to(length).freeze();
        if close {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "the server answered {status} with `Connection: close` after {} requests: {}",
                    self.requests + 1,
                    String::from_utf8_lossy(&body)
                ),
            ));
        }
        Ok(Response { status, body })
    }
}
