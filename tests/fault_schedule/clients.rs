//! The clients: publishers that retry with an idempotency key until the demo answers `200`,
//! and subscribers (single-channel and multiplexed) that record every event they get and drop
//! their connection at planned moments to resume on a random node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use super::schedule::SubPlan;

/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a publisher retries the same key before it gives up on it.
pub(crate) const PUBLISH_GIVE_UP: Duration = Duration::from_secs(30);
/// How long a subscriber waits for a response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A stream silent this long is dropped and resumed elsewhere (the demo sends keep-alives
/// every 15 s only, so a silent network would otherwise go unnoticed for long).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// An acknowledged publish: what the `200` answered.
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    pub(crate) count: u64,
    pub(crate) timestamp: u64,
    /// When its first attempt started, and when the `200` came.
    pub(crate) started: Instant,
    pub(crate) at: Instant,
    pub(crate) attempts: u32,
}

/// What one publisher saw.
#[derive(Debug, Default)]
pub(crate) struct PubLog {
    /// In the order they were acknowledged (each publish starts after the previous one's
    /// `200`: this is the order the broker stored them in).
    pub(crate) acks: Vec<Ack>,
    /// Keys given up on after [`PUBLISH_GIVE_UP`] (their event may or may not exist).
    pub(crate) abandoned: usize,
    /// Failed attempts (an error, a timeout or a status other than 200).
    pub(crate) failed_attempts: usize,
}

/// The publisher of one discussion: POST, with a fresh key per logical publish, to a random
/// node; the same key again (to a random node) until a `200`.
pub(crate) async fn publish(
    discussion: String,
    addrs: Vec<SocketAddr>,
    seed: u64,
    mut stop: watch::Receiver<bool>,
    log: Arc<Mutex<PubLog>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(POST_TIMEOUT)
        .build()
        .expect("http client");
    let mut n = 0u64;
    while !*stop.borrow() {
        let key = format!("{discussion}-{n}");
        n += 1;
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let addr = addrs[rng.random_range(0..addrs.len())];
            let sent = client
                .post(format!("http://{addr}/api/comments/{discussion}"))
                .header("idempotency-key", &key)
                .send()
                .await;
            let body = match sent {
                Ok(res) if res.status() == 200 => res.json::<serde_json::Value>().await.ok(),
                Ok(res) if res.status() == 400 => {
                    panic!("400 for {key}: {}", res.text().await.unwrap_or_default())
                }
                _ => None,
            };
            if let Some(body) = body {
                let (Some(count), Some(timestamp)) =
                    (body["commentCount"].as_u64(), body["timestamp"].as_u64())
                else {
                    panic!("unexpected answer for {key}: {body}");
                };
                lock(&log).acks.push(Ack {
                    count,
                    timestamp,
                    started,
                    at: Instant::now(),
                    attempts,
                });
                break;
            }
            lock(&log).failed_attempts += 1;
            if started.elapsed() > PUBLISH_GIVE_UP {
                lock(&log).abandoned += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
        }
        let pause = Duration::from_millis(rng.random_range(20..60));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One line of a subscriber's history.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// A stream opened (`200`) on node `node`, resuming from an id or not.
    Connect {
        at: Instant,
        node: usize,
        resumed: bool,
    },
    /// A connection attempt that got no stream (0: no response).
    Refused { status: u16 },
    /// A stream ended: closed by the server, an error, silence, or our planned drop.
    Ended { why: &'static str },
    /// A channel's event. `has_id`: it came with an `id:` (a published event); without one it
    /// is an initial event (the state at connect or after a reset).
    Event {
        at: Instant,
        channel: usize,
        count: u64,
        timestamp: u64,
        has_id: bool,
        /// The frame's own id (`None` without an `id:` line).
        id: Option<String>,
    },
    /// A `reset`: for one channel, or (no channel named) all of the stream's.
    Reset {
        at: Instant,
        channel: Option<usize>,
        reason: String,
    },
    /// Something the harness does not understand (a violation of its own).
    Strange { what: String },
}

pub(crate) type History = Arc<Mutex<Vec<Entry>>>;

/// Lock, ignoring poisoning (a panicking task's data is still worth reading).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A subscriber: reads its stream, records every event, drops it at the planned moments (and
/// when it ends or goes silent) and resumes on a random node with its last id, until stopped.
pub(crate) async fn subscribe(
    plan: SubPlan,
    discussions: Vec<String>,
    addrs: Vec<SocketAddr>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
    history: History,
) {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let (path, names) = stream_path(&plan.channels, &discussions);
    let drops: Vec<Instant> = plan.disconnects.iter().map(|d| t0 + *d).collect();
    let mut next = 0;
    let mut last_id: Option<String> = None;
    let mut node = plan.first_node;
    'connect: loop {
        if *stop.borrow() {
            break;
        }
        let mut request = client
            .get(format!("http://{}{path}", addrs[node]))
            .header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, request.send()) => r,
            _ = stop.changed() => break,
        };
        let mut response = match response {
            Ok(Ok(r)) if r.status() == 200 => r,
            other => {
                let status = match other {
                    Ok(Ok(r)) => r.status().as_u16(),
                    _ => 0,
                };
                record(&history, Entry::Refused { status });
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
                node = rng.random_range(0..addrs.len());
                continue;
            }
        };
        record(
            &history,
            Entry::Connect {
                at: Instant::now(),
                node,
                resumed: last_id.is_some(),
            },
        );
        let mut frames = Frames::default();
        loop {
            // Planned drops wait until the stream has given an id to resume from.
            let next_drop = if last_id.is_some() {
                drops.get(next).copied()
            } else {
                None
            };
            let chunk = tokio::select! {
                _ = stop.changed() => break 'connect,
                _ = tokio::time::sleep_until(next_drop.unwrap_or(t0)), if next_drop.is_some() => {
                    next += 1;
                    record(&history, Entry::Ended { why: "planned" });
                    break;
                }
                c = tokio::time::timeout(IDLE_TIMEOUT, response.chunk()) => c,
            };
            let bytes = match chunk {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => {
                    record(&history, Entry::Ended { why: "closed" });
                    break;
                }
                Ok(Err(_)) => {
                    record(&history, Entry::Ended { why: "error" });
                    break;
                }
                Err(_) => {
                    record(&history, Entry::Ended { why: "silent" });
                    break;
                }
            };
            for frame in frames.feed(&bytes) {
                if let Some(id) = &frame.id {
                    last_id = (!id.is_empty()).then(|| id.clone());
                }
                if frame.data.is_empty() {
                    continue;
                }
                record(&history, entry(&frame, &plan.channels, &names));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        node = rng.random_range(0..addrs.len());
    }
}

/// The stream a subscriber of `channels` reads (single-channel, or multiplexed), and the
/// multiplexed event names of its channels.
fn stream_path(channels: &[usize], discussions: &[String]) -> (String, Vec<String>) {
    let names: Vec<String> = channels
        .iter()
        .map(|c| format!("comments/{}", discussions[*c]))
        .collect();
    let path = if channels.len() == 1 {
        format!("/api/sse/comments/{}", discussions[channels[0]])
    } else {
        let query: Vec<String> = names.iter().map(|n| format!("channel={n}")).collect();
        format!("/api/sse?{}", query.join("&"))
    };
    (path, names)
}

/// A diagnosis: resume the stream of `channels` from `last_id` on `addr` and return what it
/// replays within `limit` (channel and count of each event; resets as `None`). Tells an event
/// the broker still holds (a delivery that went missing) from one it lost.
pub(crate) async fn replay(
    addr: SocketAddr,
    channels: &[usize],
    discussions: &[String],
    last_id: &str,
    limit: Duration,
) -> Vec<Option<(usize, u64)>> {
    let (path, names) = stream_path(channels, discussions);
    let mut out = Vec::new();
    let Ok(client) = reqwest::Client::builder().no_proxy().http1_only().build() else {
        return out;
    };
    let request = client
        .get(format!("http://{addr}{path}"))
        .header("last-event-id", last_id)
        .send();
    let Ok(Ok(mut response)) = tokio::time::timeout(CONNECT_TIMEOUT, request).await else {
        return out;
    };
    let deadline = Instant::now() + limit;
    let mut frames = Frames::default();
    while let Ok(Ok(Some(bytes))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        for frame in frames.feed(&bytes) {
            match entry(&frame, channels, &names) {
                Entry::Event {
                    channel,
                    count,
                    has_id: true,
                    ..
                } => out.push(Some((channel, count))),
                Entry::Reset { .. } => out.push(None),
                _ => {}
            }
        }
    }
    out
}

fn record(history: &History, e: Entry) {
    lock(history).push(e);
}

/// The history line of one dispatched frame.
fn entry(frame: &Frame, channels: &[usize], names: &[String]) -> Entry {
    let at = Instant::now();
    let data: serde_json::Value = serde_json::from_str(&frame.data)
        .unwrap_or_else(|_| serde_json::Value::String(frame.data.clone()));
    if frame.event == "reset" {
        let reason = data["reason"]
            .as_str()
            .or(data.as_str())
            .unwrap_or("?")
            .to_owned();
        let channel = if channels.len() == 1 {
            Some(channels[0])
        } else {
            match data["channel"].as_str() {
                Some(name) => match names.iter().position(|n| n == name) {
                    Some(i) => Some(channels[i]),
                    None => {
                        return Entry::Strange {
                            what: format!("a reset for a channel not asked for: {}", frame.data),
                        };
                    }
                },
                None => None,
            }
        };
        return Entry::Reset {
            at,
            channel,
            reason,
        };
    }
    let channel = if channels.len() == 1 {
        Some(channels[0])
    } else {
        names
            .iter()
            .position(|n| *n == frame.event)
            .map(|i| channels[i])
    };
    match (
        channel,
        data["commentCount"].as_u64(),
        data["timestamp"].as_u64(),
    ) {
        (Some(channel), Some(count), Some(timestamp)) => Entry::Event {
            at,
            channel,
            count,
            timestamp,
            has_id: frame.id.as_ref().is_some_and(|id| !id.is_empty()),
            id: frame.id.clone(),
        },
        _ => Entry::Strange {
            what: format!("event {:?}: {}", frame.event, frame.data),
        },
    }
}

/// One dispatched SSE frame: its own fields (not the parser's carried-over last id: the `id`
/// is `Some` only when this frame had an `id:` line).
#[derive(Debug, Default)]
struct Frame {
    event: String,
    data: String,
    id: Option<String>,
}

/// A minimal SSE frame reader that tells which frames carried an `id:` line.
#[derive(Debug, Default)]
struct Frames {
    buf: Vec<u8>,
    current: Frame,
    has_data: bool,
}

impl Frames {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                let frame = std::mem::take(&mut self.current);
                if self.has_data || frame.id.is_some() {
                    out.push(frame);
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

#[test]
fn frames_tell_which_frame_had_an_id() {
    let mut f = Frames::default();
    let got =
        f.feed(b": hi\n\nretry: 10\ndata: {\"a\":1}\n\nid: x\r\nevent: e\r\ndata: 2\r\n\r\nda");
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].id.as_deref(), got[0].data.as_str()),
        (None, "{\"a\":1}")
    );
    assert_eq!(
        (
            got[1].id.as_deref(),
            got[1].event.as_str(),
            got[1].data.as_str()
        ),
        (Some("x"), "e", "2")
    );
    let got = f.feed(b"ta: 3\n\n");
    assert_eq!((got[0].id.as_deref(), got[0].data.as_str()), (None, "3"));
}
