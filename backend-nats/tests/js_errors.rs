//! JetStream API errors that say nothing about a message (a 503 while a leader is elected, a
//! cluster not available) are retried a few times and then reported as a temporary failure:
//! never as "no such message", which would send a spurious `reset`, and never by retrying
//! forever inside a live feed.
//!
//! A small NATS-protocol proxy between the broker and its own nats-server diverts the broker's
//! `STREAM.MSG.GET` requests, while armed, to a helper client that answers them with a JetStream
//! 503 error, as a server electing a stream leader does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use ssehub_core::conformance::unique_topic;
use ssehub_core::{Broker, Delivery, EventId, Message, Replay, Subscription, Topic};
use ssehub_nats::NatsBroker;
use ssehub_nats::async_nats;
use ssehub_test_support::nats::{NatsOptions, NatsServer};
use ssehub_test_support::server::BrokerServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const HISTORY: usize = 100;
const PREFIX: &str = "jserr";
const STREAM: &str = "JSERR";
const MSG_GET: &str = "$JS.API.STREAM.MSG.GET.JSERR";
const DIVERTED: &str = "jsfault.msgget";
const UNAVAILABLE: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":503,"err_code":10008,"description":"JetStream cluster not available"}}"#;

/// Which message gets the proxy diverts while armed.
#[derive(Clone, Copy, PartialEq)]
enum Gets {
    /// Every `STREAM.MSG.GET`.
    All,
    /// Only gets by sequence (not last-by-subject nor next-by-subject).
    BySequence,
}

#[derive(Default)]
struct FaultState {
    /// How many more gets to divert (`usize::MAX`: every one).
    remaining: AtomicUsize,
    only_by_sequence: AtomicBool,
    /// New connections are closed at once while set.
    refuse: AtomicBool,
    /// Gets diverted so far.
    diverted: AtomicUsize,
    conns: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// Forwards a NATS client connection to the server, parsing the client's operations so that
/// armed `STREAM.MSG.GET` requests go to [`DIVERTED`] instead (same reply subject).
struct FaultProxy {
    addr: SocketAddr,
    state: Arc<FaultState>,
    accept: JoinHandle<()>,
    responder: JoinHandle<()>,
}

impl FaultProxy {
    async fn start(server: &NatsServer) -> FaultProxy {
        let upstream = SocketAddr::from(([127, 0, 0, 1], server.port()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(FaultState::default());
        let s = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let task = tokio::spawn(pipe(client, server, s.clone()));
                s.conns.lock().expect("lock").push(task);
            }
        });
        // The helper answers every diverted get as a server without a stream leader would.
        let helper = async_nats::connect(server.url()).await.expect("helper");
        let mut sub = helper.subscribe(DIVERTED).await.expect("subscribe");
        helper.flush().await.expect("flush");
        let responder = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let _ = helper.publish(reply, Bytes::from_static(UNAVAILABLE)).await;
                }
            }
        });
        FaultProxy {
            addr,
            state,
            accept,
            responder,
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Divert the next `n` gets of that kind (`usize::MAX`: all until disarmed).
    fn arm(&self, gets: Gets, n: usize) {
        self.state
            .only_by_sequence
            .store(gets == Gets::BySequence, Ordering::SeqCst);
        self.state.remaining.store(n, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.state.remaining.store(0, Ordering::SeqCst);
    }

    fn diverted(&self) -> usize {
        self.state.diverted.load(Ordering::SeqCst)
    }

    /// Cut the client off: close its connections and refuse new ones until [`FaultProxy::restore`].
    fn cut(&self) {
        self.state.refuse.store(true, Ordering::SeqCst);
        self.drop_all();
    }

    fn restore(&self) {
        self.state.refuse.store(false, Ordering::SeqCst);
    }

    /// Close every proxied connection (the client reconnects through the proxy).
    fn drop_all(&self) {
        for t in self.state.conns.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.responder.abort();
        self.drop_all();
    }
}

fn divert(state: &FaultState, subject: &str, payload: &[u8]) -> bool {
    if subject != MSG_GET {
        return false;
    }
    let text = String::from_utf8_lossy(payload);
    if state.only_by_sequence.load(Ordering::SeqCst) && text.contains("_by_subj") {
        return false;
    }
    let taken = state
        .remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            usize::MAX => Some(usize::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    if taken {
        state.diverted.fetch_add(1, Ordering::SeqCst);
    }
    taken
}

async fn pipe(client: TcpStream, server: TcpStream, state: Arc<FaultState>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match cr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Forward every complete operation in the buffer.
        while let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..eol]).into_owned();
            let words: Vec<&str> = line.split_whitespace().collect();
            let op = words.first().map(|w| w.to_ascii_uppercase());
            let payload_len = match op.as_deref() {
                Some("PUB" | "HPUB") => words.last().and_then(|w| w.parse::<usize>().ok()),
                _ => None,
            };
            let Some(len) = payload_len else {
                let op: Vec<u8> = buf.drain(..eol + 2).collect();
                if sw.write_all(&op).await.is_err() {
                    break 'read;
                }
                continue;
            };
            let end = eol + 2 + len + 2;
            if buf.len() < end {
                break; // the payload is not all here yet
            }
            let op: Vec<u8> = buf.drain(..end).collect();
            let payload = &op[eol + 2..eol + 2 + len];
            let out = if divert(&state, words[1], payload) {
                let mut rewritten = line.replacen(MSG_GET, DIVERTED, 1).into_bytes();
                rewritten.extend_from_slice(&op[eol..]);
                rewritten
            } else {
                op
            };
            if sw.write_all(&out).await.is_err() {
                break 'read;
            }
        }
    }
    let _ = sw.shutdown().await;
    down.abort();
}

async fn broker(url: &str) -> NatsBroker {
    NatsBroker::builder(url)
        .prefix(PREFIX)
        .stream(STREAM)
        .history(HISTORY)
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

async fn next(sub: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("nothing delivered within {WAIT:?}"),
    }
}

fn data(d: &Delivery) -> String {
    match d {
        Delivery::Event(env) => String::from_utf8_lossy(&env.data).into_owned(),
        Delivery::Gap => "<gap>".to_string(),
    }
}

/// While every message get fails with a 503, a replay is a temporary error, not a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_during_unavailable_message_gets_is_temporary_not_a_gap() {
    let Some(server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let proxy = FaultProxy::start(&server).await;
    let b = broker(&proxy.url()).await;
    let topic = unique_topic("replay-503");
    let first = publish(&b, &topic, "one").await;
    publish(&b, &topic, "two").await;
    proxy.arm(Gets::All, usize::MAX);
    let res = b.replay(&topic, &first, usize::MAX).await;
    assert!(proxy.diverted() > 0, "no message get was diverted");
    match res {
        Err(e) => assert!(e.is_temporary(), "must be temporary: {e}"),
        Ok(r) => panic!("a replay that could not read the stream answered {r:?}"),
    }
    proxy.disarm();
    match b.replay(&topic, &first, usize::MAX).await.expect("replay") {
        Replay::Events(ev) => assert_eq!(ev.len(), 1),
        Replay::Gap(_) => panic!("gap after the server answered again"),
    }
}

/// A couple of 503s during a replay are retried: the replay answers the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_retries_a_few_unavailable_message_gets() {
    let Some(server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let proxy = FaultProxy::start(&server).await;
    let b = broker(&proxy.url()).await;
    let topic = unique_topic("replay-retry");
    let first = publish(&b, &topic, "one").await;
    publish(&b, &topic, "two").await;
    publish(&b, &topic, "three").await;
    proxy.arm(Gets::All, 2);
    let res = b.replay(&topic, &first, usize::MAX).await;
    match res.expect("replay after two 503s") {
        Replay::Events(ev) => {
            let got: Vec<_> = ev.iter().map(|e| e.data.clone()).collect();
            assert_eq!(got, ["two", "three"]);
        }
        Replay::Gap(_) => panic!("two 503s made the replay answer a gap"),
    }
    assert_eq!(proxy.diverted(), 2);
}

/// Node A, behind the proxy, is cut off while B publishes `during` to a topic whose history is
/// full (so A's reconnect scan must check that A's last event is still stored, with a get by
/// sequence), with every get by sequence answering 503 from the moment A is cut off.
async fn outage_with_unavailable_gets(
    proxy: &FaultProxy,
    a: &NatsBroker,
    b: &NatsBroker,
    topic: &Topic,
    during: &str,
) {
    proxy.arm(Gets::BySequence, usize::MAX);
    proxy.cut();
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.client().connection_state() == async_nats::connection::State::Connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never disconnected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publish(b, topic, during).await;
    proxy.restore();
}

/// A topic with a full history (`HISTORY` events), then a subscription on A that has read "one".
async fn full_topic(a: &NatsBroker, b: &NatsBroker, name: &str) -> (Topic, Subscription) {
    let topic = unique_topic(name);
    let old = (0..HISTORY)
        .map(|i| Message::new(format!("old-{i}")))
        .collect();
    b.publish_many(&topic, old)
        .await
        .expect("publish the history");
    let mut sub = a.subscribe(&topic).await.expect("subscribe");
    publish(b, &topic, "one").await;
    assert_eq!(data(&next(&mut sub).await), "one");
    (topic, sub)
}

/// A live feed that cannot tell whether history was trimmed while it was away (every get by
/// sequence answers 503) sends no gap, keeps asking, and delivers everything once it can tell
/// again: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_waits_out_unavailable_message_gets_without_a_gap() {
    let Some(server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let proxy = FaultProxy::start(&server).await;
    let a = broker(&proxy.url()).await;
    let b = broker(&server.url()).await;
    let (topic, mut sub) = full_topic(&a, &b, "feed-503").await;
    outage_with_unavailable_gets(&proxy, &a, &b, &topic, "two").await;
    // Let the reconnected feed meet the 503s for a while.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.diverted() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed stopped checking the history"
        );
        if let Ok(d) = tokio::time::timeout(Duration::from_millis(20), sub.next()).await {
            got.push(data(&d.expect("subscription ended")));
        }
    }
    proxy.disarm();
    if got.is_empty() {
        got.push(data(&next(&mut sub).await));
    }
    publish(&b, &topic, "three").await;
    got.push(data(&next(&mut sub).await));
    assert_eq!(got, ["two", "three"]);
}

/// While gets by sequence keep failing, the feed still reacts to what it can see: the stream was
/// deleted and created again, so it sends a gap and goes on with the new stream's events (what
/// was published before it noticed is covered by the gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_blocked_by_unavailable_message_gets_still_sees_a_recreated_stream() {
    let Some(server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let proxy = FaultProxy::start(&server).await;
    let a = broker(&proxy.url()).await;
    let b = broker(&server.url()).await;
    let (topic, mut sub) = full_topic(&a, &b, "feed-recreated").await;
    outage_with_unavailable_gets(&proxy, &a, &b, &topic, "two").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.diverted() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed never checked the history"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let js = async_nats::jetstream::new(b.client().clone());
    js.delete_stream(STREAM).await.expect("delete the stream");
    b.health().await.expect("B creates the stream again");
    assert_eq!(next(&mut sub).await, Delivery::Gap);
    publish(&b, &topic, "fresh").await;
    assert_eq!(data(&next(&mut sub).await), "fresh");
}
