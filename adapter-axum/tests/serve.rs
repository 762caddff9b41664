//! `ssehub_axum::serve`: a request head that dawdles is cut off (slowloris), a keep-alive
//! connection idle past the deadline is closed, a stream's response is not, and the
//! per-address cap closes connections over it while other addresses are served.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const DEADLINE: Duration = Duration::from_millis(500);

fn app() -> Router {
    Router::new()
        .route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/stream",
            get(|| async {
                let ticks = futures_util::stream::unfold(0u32, |n| async move {
                    if n == 8 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Some((Ok::<_, std::io::Error>(format!("data: {n}\n\n")), n + 1))
                });
                Body::from_stream(ticks)
            }),
        )
}

async fn start(configure: impl FnOnce(ssehub_axum::Serve) -> ssehub_axum::Serve) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = configure(ssehub_axum::serve(listener, app()));
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

/// Whether the server closed the connection: a read that ends (or fails) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Send a request line, then one header line every 200 ms, 20 of them (4 s in all, 8 times
/// the deadline); `true` when the server closed the connection before the client was done.
async fn dawdle(addr: SocketAddr) -> bool {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if conn
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            return true;
        }
        if closed_within(&mut conn, Duration::from_millis(1)).await {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn a_request_head_that_dawdles_is_cut_off() {
    let guarded = start(|s| s.header_read_timeout(Some(DEADLINE))).await;
    assert!(dawdle(guarded).await, "the slow head was still accepted");
    // Without the deadline (what axum::serve does) the same client holds its connection.
    let open = start(|s| s.header_read_timeout(None)).await;
    assert!(!dawdle(open).await, "closed without a deadline");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_stream_is_not() {
    let addr = start(|s| s.header_read_timeout(Some(DEADLINE))).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    assert!(
        closed_within(&mut conn, Duration::from_secs(10)).await,
        "an idle keep-alive connection stays open"
    );
    // A response that lasts 1.6 s (three deadlines) is read to its end.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("data: 7"), "the stream was cut: {text}");
}

/// A connection from `ip` (on 127.0.0.0/8) that completed one request: the server answers
/// with the address it saw.
async fn served_from(addr: SocketAddr, ip: [u8; 4]) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let seen = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    (n > 0 && text.contains(&seen)).then_some(conn)
}

#[tokio::test]
async fn the_per_address_cap_closes_connections_over_it() {
    let addr = start(|s| {
        s.header_read_timeout(Some(Duration::from_secs(30)))
            .max_connections_per_ip(Some(2))
    })
    .await;
    let a = served_from(addr, [127, 0, 0, 1]).await.unwrap();
    let _b = served_from(addr, [127, 0, 0, 1]).await.unwrap();
    assert!(
        served_from(addr, [127, 0, 0, 1]).await.is_none(),
        "a third connection from one address was served"
    );
    // Another address is not affected.
    let _c = served_from(addr, [127, 0, 0, 2]).await.unwrap();
    // A place freed is taken again.
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_from(addr, [127, 0, 0, 1]).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
