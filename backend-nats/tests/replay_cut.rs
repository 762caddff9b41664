//! JetStream: a replay whose connection is cut while the server is sending it the missed events
//! never answers with a hole. Its events are read with a pull consumer without acks; the server
//! counts the messages it sent as delivered, and after the reconnect the same consumer goes on
//! with later events. Before the fix the replay answered those later events alone: a resuming
//! subscriber never got the lost ones and got no `reset` (the fault schedule's seed 2824329961).
//!
//! A small NATS-protocol proxy between the replaying broker and its own nats-server reads what
//! the server sends; once armed, it closes the connection at the first message delivered to a
//! replay consumer (reply subject `$JS.ACK.<stream>.ssehub_replay_…`), so that message and the
//! rest of the batch are lost on the way, as in a cut link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, EventId, Message, Replay, Topic};
use ssehub_nats::NatsBroker;
use ssehub_nats::async_nats::connection::State;
use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::server::BrokerServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "replaycut";
const STREAM: &str = "REPLAYCUT";

#[derive(Default)]
struct CutState {
    /// Cut the connection at the next message delivered to a replay consumer.
    armed: AtomicBool,
    /// Signalled once such a message was dropped and its connection closed.
    cut: Notify,
    conns: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// Forwards NATS client connections to the server, parsing the server's operations.
struct CutProxy {
    addr: SocketAddr,
    state: Arc<CutState>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    async fn start(server: &NatsServer) -> CutProxy {
        let upstream = SocketAddr::from(([127, 0, 0, 1], server.port()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(CutState::default());
        let s = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let task = tokio::spawn(pipe(client, server, s.clone()));
                s.conns.lock().expect("lock").push(task);
            }
        });
        CutProxy {
            addr,
            state,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.state.conns.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

/// Whether a server operation (its head line's words) is a message delivered to a replay
/// consumer of the stream: its reply subject names the consumer.
fn to_replay_consumer(words: &[&str]) -> bool {
    let reply = match words {
        [op, _, _, reply, _] if op.eq_ignore_ascii_case("MSG") => *reply,
        [op, _, _, reply, _, _] if op.eq_ignore_ascii_case("HMSG") => *reply,
        _ => return false,
    };
    reply.starts_with(&format!("$JS.ACK.{STREAM}.ssehub_replay_"))
}

async fn pipe(client: TcpStream, server: TcpStream, state: Arc<CutState>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match sr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Forward every complete operation in the buffer.
        while let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..eol]).into_owned();
            let words: Vec<&str> = line.split_whitespace().collect();
            let op = words.first().map(|w| w.to_ascii_uppercase());
            let end = match op.as_deref() {
                Some("MSG" | "HMSG") => {
                    let Some(len) = words.last().and_then(|w| w.parse::<usize>().ok()) else {
                        break 'read;
                    };
                    eol + 2 + len + 2
                }
                _ => eol + 2,
            };
            if buf.len() < end {
                break; // the payload is not all here yet
            }
            if to_replay_consumer(&words) && state.armed.swap(false, Ordering::SeqCst) {
                // The link goes down with this message (and what follows) still on the way.
                up.abort();
                state.cut.notify_one();
                return;
            }
            let op: Vec<u8> = buf.drain(..end).collect();
            if cw.write_all(&op).await.is_err() {
                break 'read;
            }
        }
    }
    let _ = cw.shutdown().await;
    up.abort();
}

async fn broker(url: &str) -> NatsBroker {
    NatsBroker::builder(url)
        .prefix(PREFIX)
        .stream(STREAM)
        .history(100)
        .connect_timeout(Duration::from_secs(10))
        .response_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(100))
        .build()
        .await
        .expect("connect")
}

async fn publish(b: &NatsBroker, topic: &Topic, data: &str) -> EventId {
    b.publish(topic, Message::new(data.to_string()))
        .await
        .expect("publish")
}

fn data(replay: &Replay) -> Vec<String> {
    match replay {
        Replay::Events(events) => events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect(),
        Replay::Gap(cause) => panic!("a replay of stored events answered a gap ({cause:?})"),
    }
}

/// A subscriber resumes after "one" on node A while A's link to NATS is cut with "two" and
/// "three" on the way to A's replay; "four" is published after A is back. The replay answers
/// every missed event in order, or fails with a temporary error (the client comes back with the
/// same id): never "four" alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cut_off_mid_read_answers_no_hole() {
    let Some(server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let proxy = CutProxy::start(&server).await;
    let a = broker(&proxy.url()).await;
    let b = broker(&server.url()).await;
    let topic = unique_topic("replay-cut");
    let one = publish(&b, &topic, "one").await;
    publish(&b, &topic, "two").await;
    publish(&b, &topic, "three").await;

    proxy.state.armed.store(true, Ordering::SeqCst);
    let cut = proxy.state.cut.notified();
    let replay = tokio::spawn({
        let (a, topic, one) = (a.clone(), topic.clone(), one.clone());
        async move { a.replay(&topic, &one, usize::MAX).await }
    });
    tokio::time::timeout(WAIT, cut)
        .await
        .expect("the replay's events never came through the proxy");
    // A is back (its subscriptions registered again: a round trip after the reconnect), then
    // the next event is stored.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.client().connection_state() != State::Connected || a.health().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "A never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publish(&b, &topic, "four").await;

    let answer = tokio::time::timeout(WAIT, replay)
        .await
        .expect("the replay never answered")
        .expect("replay task");
    match answer {
        Ok(replay) => {
            let got = data(&replay);
            assert!(
                got.starts_with(&["two".to_string(), "three".to_string()]),
                "the replay skipped the events lost in the cut, with no gap: got {got:?}, \
                 the stream holds two, three, four"
            );
        }
        Err(e) => {
            assert!(e.is_temporary(), "must be temporary: {e}");
            eprintln!("replay cut off mid-read: {e}");
        }
    }
    // The client comes back with the same id: everything, in order.
    let again = a.replay(&topic, &one, usize::MAX).await.expect("replay");
    assert_eq!(data(&again), ["two", "three", "four"]);
}
