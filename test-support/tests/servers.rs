//! Both broker servers through the one API: start, answer, kill, restart on the same port,
//! freeze and thaw. Skips (or fails under `SSEHUB_REQUIRE_BROKERS=1`) without a broker.

use std::time::Duration;

use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::or_skip;
use ssehub_test_support::redis::{RedisOptions, RedisServer};
use ssehub_test_support::server::BrokerServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the server answers `request` with a reply containing `expect` within `limit`.
async fn answers(port: u16, request: &[u8], expect: &[u8], limit: Duration) -> bool {
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(request).await.ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(expect.len()).any(|w| w == expect) {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(limit, talk)
        .await
        .is_ok_and(|r| r.is_some())
}

async fn exercise(server: &mut impl BrokerServer, request: &[u8], expect: &[u8]) {
    let (url, port) = (server.url(), server.port());
    assert!(url.ends_with(&format!(":{port}")), "{url}");
    let limit = Duration::from_secs(5);
    assert!(
        answers(port, request, expect, limit).await,
        "answers at start"
    );
    assert!(server.freeze());
    assert!(
        !answers(port, request, expect, Duration::from_millis(500)).await,
        "a frozen server is silent"
    );
    assert!(server.thaw());
    assert!(
        answers(port, request, expect, limit).await,
        "answers after thaw"
    );
    server.kill();
    assert!(
        !answers(port, request, expect, Duration::from_millis(500)).await,
        "a killed server is gone"
    );
    server.restart().await.expect("restart");
    assert_eq!((server.url(), server.port()), (url, port), "same address");
    assert!(
        answers(port, request, expect, limit).await,
        "answers after restart"
    );
}

#[tokio::test]
async fn redis_server_kill_restart_freeze_thaw() {
    let Some(mut server) = or_skip(RedisServer::start(RedisOptions::new()).await) else {
        return;
    };
    exercise(&mut server, b"PING\r\n", b"+PONG").await;
    assert!(server.log().contains("Ready to accept connections"));
}

#[tokio::test]
async fn nats_server_kill_restart_freeze_thaw() {
    let Some(mut server) = or_skip(NatsServer::start(NatsOptions::default()).await) else {
        return;
    };
    exercise(&mut server, b"PING\r\n", b"PONG").await;
    assert!(server.log().contains("Server is ready"));
}
