//! Bounds of the HTTP adapter: socket options that find vanished clients, ACLs that see the
//! decoded request, settings that cannot overflow, and an initial event that cannot be encoded.
//!
//! Nothing here asserts on wall-clock time: socket options are read back from the accepted
//! socket, everything else is a status or a body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::Listener;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::ser::Error as _;
use ssehub_axum::{PathParams, SseEndpoint, Unavailable, WriteTimeoutListener};
use ssehub_core::ChannelManager;
use ssehub_memory::MemoryBroker;
use tower::ServiceExt;

fn manager<E: Serialize + Send + Sync + 'static>() -> ChannelManager<E> {
    ChannelManager::builder(MemoryBroker::new())
        .key_prefix("t")
        .linger(Duration::ZERO)
        .build()
        .expect("manager")
}

async fn get<E: Serialize + Send + Sync + 'static>(
    endpoint: &SseEndpoint<E>,
    uri: &str,
) -> http::Response<ssehub_axum::SseBody> {
    endpoint
        .clone()
        .oneshot(Request::get(uri).body(String::new()).expect("request"))
        .await
        .expect("infallible")
}

/// The next chunk of a response body (bounded wait).
async fn chunk(body: &mut ssehub_axum::SseBody) -> Option<Bytes> {
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("a chunk within 10 s")?;
    frame.expect("infallible").into_data().ok()
}

async fn accept_one<L: Listener<Addr = std::net::SocketAddr>>(
    mut listener: L,
) -> (L::Io, tokio::net::TcpStream) {
    let addr = listener.local_addr().expect("addr");
    let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
    let (io, _) = listener.accept().await;
    let client = client.await.expect("join").expect("connect");
    (io, client)
}

// --- C: vanished clients on idle channels ---------------------------------------------------

#[tokio::test]
async fn accepted_sockets_get_keepalive_and_user_timeout_by_default() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = WriteTimeoutListener::new(tcp, Duration::from_secs(30));
    let (io, _client) = accept_one(listener).await;
    let sock = socket2::SockRef::from(io.get_ref());
    assert!(sock.keepalive().expect("SO_KEEPALIVE"), "keepalive is on");
    #[cfg(target_os = "linux")]
    {
        assert_eq!(
            sock.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(30)
        );
        assert_eq!(
            sock.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            Duration::from_secs(10)
        );
        assert_eq!(sock.tcp_keepalive_retries().expect("TCP_KEEPCNT"), 3);
        assert_eq!(
            sock.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(Duration::from_secs(30))
        );
    }
}

#[tokio::test]
async fn socket_options_are_configurable_and_can_be_left_alone() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = WriteTimeoutListener::new(tcp, Duration::from_secs(30))
        .tcp_keepalive(Some(Duration::from_secs(7)))
        .tcp_keepalive_interval(Duration::from_secs(2))
        .tcp_keepalive_retries(5)
        .tcp_user_timeout(Some(Duration::from_secs(12)));
    let (io, _client) = accept_one(listener).await;
    let sock = socket2::SockRef::from(io.get_ref());
    assert!(sock.keepalive().expect("SO_KEEPALIVE"));
    #[cfg(target_os = "linux")]
    {
        assert_eq!(
            sock.tcp_keepalive_time().expect("idle"),
            Duration::from_secs(7)
        );
        assert_eq!(
            sock.tcp_keepalive_interval().expect("interval"),
            Duration::from_secs(2)
        );
        assert_eq!(sock.tcp_keepalive_retries().expect("retries"), 5);
        assert_eq!(
            sock.tcp_user_timeout().expect("user timeout"),
            Some(Duration::from_secs(12))
        );
    }

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = WriteTimeoutListener::new(tcp, Duration::from_secs(30))
        .tcp_keepalive(None)
        .tcp_user_timeout(None);
    let (io, _client) = accept_one(listener).await;
    let sock = socket2::SockRef::from(io.get_ref());
    assert!(!sock.keepalive().expect("SO_KEEPALIVE"), "left alone");
    #[cfg(target_os = "linux")]
    assert_eq!(sock.tcp_user_timeout().expect("user timeout"), None);
}

/// A listener whose connections are not TCP sockets is served as before (nothing to set).
#[cfg(unix)]
#[tokio::test]
async fn non_tcp_listeners_are_left_alone() {
    let dir = std::env::temp_dir().join(format!("ssehub-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let unix = tokio::net::UnixListener::bind(&path).expect("bind");
    let mut listener = WriteTimeoutListener::new(unix, Duration::from_secs(30));
    let client = tokio::spawn(tokio::net::UnixStream::connect(path.clone()));
    let (io, _) = listener.accept().await;
    let _client = client.await.expect("join").expect("connect");
    assert!(io.get_ref().peer_addr().is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A write timeout of `Duration::MAX` means "never", not an overflow.
#[tokio::test]
async fn a_huge_write_timeout_never_fires() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = WriteTimeoutListener::new(tcp, Duration::MAX);
    let (mut io, _client) = accept_one(listener).await;
    // Fill the send buffer until a write blocks: the guard must arm without overflowing.
    let chunk = vec![0u8; 64 * 1024];
    let blocked = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            tokio::io::AsyncWriteExt::write_all(&mut io, &chunk)
                .await
                .expect("write");
        }
    })
    .await;
    assert!(blocked.is_err(), "the write blocked and kept waiting");
}

// --- D: ACLs and percent-encoding -------------------------------------------------------------

/// An ACL written against the decoded params refuses every `%xx` spelling of a refused id, and
/// the hook can see what the client actually sent.
#[tokio::test]
async fn authorize_sees_decoded_params_and_raw_captures() {
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let log = seen.clone();
    let endpoint = SseEndpoint::new(manager::<u64>(), "/sse/{room}")
        .expect("endpoint")
        .authorize(move |parts: &http::request::Parts, p: &PathParams| {
            let room = p.get("room").unwrap_or_default().to_owned();
            log.lock().expect("lock").push((
                parts.uri.path().to_owned(),
                p.raw("room").unwrap_or_default().to_owned(),
                room.clone(),
            ));
            async move {
                if room == "admin" {
                    Err(StatusCode::FORBIDDEN)
                } else {
                    Ok(())
                }
            }
        });
    for uri in [
        "/sse/admin",
        "/sse/%61dmin",
        "/sse/%61%64%6D%69%6e",
        "/sse/adm%69n",
    ] {
        assert_eq!(get(&endpoint, uri).await.status(), 403, "{uri}");
    }
    assert_eq!(get(&endpoint, "/sse/lobby").await.status(), 200);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen[1],
        (
            "/sse/%61dmin".to_owned(),
            "%61dmin".to_owned(),
            "admin".to_owned()
        )
    );
    assert!(seen.iter().take(4).all(|(_, _, room)| room == "admin"));
}

// --- E: settings that would overflow ----------------------------------------------------------

/// `Duration::MAX` retry, jitter and keep-alive are clamped (documented), never an overflow:
/// not on a refused stream, not at shutdown, not in a running stream.
#[tokio::test]
async fn huge_retry_jitter_and_keep_alive_are_clamped() {
    let m = manager::<u64>();
    let endpoint = SseEndpoint::new(m.clone(), "/sse/{id}")
        .expect("endpoint")
        .retry(Duration::MAX)
        .retry_jitter(Duration::MAX)
        .keep_alive(Some(Duration::MAX));
    let max_ms = ssehub_axum::MAX_DURATION.as_millis();

    let res = get(&endpoint, "/sse/a").await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = chunk(&mut body).await.expect("retry hint");
    assert_eq!(first, Bytes::from(format!("retry: {max_ms}\n\n")));
    m.publish("a", &7).await.expect("publish");
    let event = chunk(&mut body).await.expect("event");
    assert!(event.ends_with(b"data: 7\n\n"), "{event:?}");

    // Shutdown ends the open stream with a jittered hint of at most twice the clamp.
    endpoint.shutdown();
    let last = chunk(&mut body).await.expect("final hint");
    let text = std::str::from_utf8(&last).expect("utf-8");
    let ms: u128 = text
        .trim()
        .strip_prefix("retry: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!((max_ms..=2 * max_ms).contains(&ms), "{ms}");
    drop(body);

    // A refused stream (shutting down) gets the same bounded hint, as a 200 or a 503.
    let res = get(&endpoint, "/sse/b").await;
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let ms: u128 = std::str::from_utf8(&body)
        .expect("utf-8")
        .trim()
        .strip_prefix("retry: ")
        .and_then(|v| v.parse().ok())
        .expect("retry hint");
    assert!((max_ms..=2 * max_ms).contains(&ms), "{ms}");
    let res = get(
        &endpoint
            .clone()
            .unavailable(Unavailable::ServiceUnavailable),
        "/sse/c",
    )
    .await;
    assert_eq!(res.status(), 503);
    let after: u128 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(after <= 2 * max_ms / 1000, "{after}");
}

// --- F: an initial event that cannot be encoded -------------------------------------------------

#[derive(Clone)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("this event cannot be encoded"))
    }
}

/// A `tracing` writer that keeps what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server error, not `200` + `retry:` (which would make every browser retry forever), and an
/// error in the log.
#[tokio::test]
async fn an_initial_event_that_fails_to_encode_is_a_500_and_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let m = manager::<Unencodable>();
    let endpoint = SseEndpoint::new(m.clone(), "/sse/{id}")
        .expect("endpoint")
        .initial_event(|_p: PathParams| async { Some(Unencodable) });
    let res = get(&endpoint, "/sse/a").await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(m.total_sessions(), 0);
    let logged = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logged.contains("ERROR") && logged.contains("initial event"),
        "{logged}"
    );
}
