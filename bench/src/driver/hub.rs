//! The hub over HTTP (scenario 11): the `ssehub` binary of the `ssehub-server` crate as a server
//! under test, and one channel's subscribers fed in rounds, published either in-process (the
//! bench server's `POST /publish` loop) or through the hub's HTTP API on keep-alive connections.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::time::Instant;

use super::process::publish;
use super::{Error, Run, ServerProc};
use crate::client;
use crate::http::KeepAlive;
use crate::proc;
use crate::server::{PublishParams, now_ns};

/// The channel of the hub's runs (`/v1/publish/bench/c`, `/v1/sse?channel=bench/c`).
pub const HUB_CHANNEL: &str = "bench/c";

/// The hub, a child process of the load generator: `ssehub --addr 127.0.0.1:0 --backend B`, in
/// development mode (loopback, no credentials).
#[derive(Debug)]
pub struct HubProc {
    child: Child,
    addr: SocketAddr,
}

impl HubProc {
    /// The hub binary: `$SSEHUB_HUB_BIN`, or `ssehub` beside `exe` (the load generator: cargo
    /// puts both binaries of one profile in the same directory). A clear error when it is not
    /// there.
    pub fn binary(exe: &Path) -> Result<PathBuf, Error> {
        if let Some(bin) = std::env::var_os("SSEHUB_HUB_BIN") {
            let bin = PathBuf::from(bin);
            if bin.is_file() {
                return Ok(bin);
            }
            return Err(format!(
                "SSEHUB_HUB_BIN={} is not a file (it should name the `ssehub` binary of ssehub-server)",
                bin.display()
            )
            .into());
        }
        let dir = exe
            .parent()
            .ok_or_else(|| format!("{} has no directory", exe.display()))?;
        let bin = dir.join("ssehub");
        if bin.is_file() {
            return Ok(bin);
        }
        let profile = if dir.file_name().is_some_and(|n| n == "release") {
            "--release "
        } else {
            ""
        };
        Err(format!(
            "scenario 11 needs the hub binary, {} is missing: build it with \
             `cargo build {profile}-p ssehub-server` (the same profile as ssehub-load), \
             or point SSEHUB_HUB_BIN at an `ssehub` binary",
            bin.display()
        )
        .into())
    }

    /// Start `bin` on a free loopback port with `backend`; its address from its `ssehub
    /// listening on http://ADDR` line. Its later stderr lines are passed on, indented.
    pub async fn start(bin: &Path, backend: &str) -> Result<Self, Error> {
        let mut cmd = Command::new(bin);
        cmd.args(["--addr", "127.0.0.1:0", "--backend", backend]);
        // Development mode: no key or secret from this environment, no config file.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SSEHUB_") {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().ok_or("the hub's stderr")?;
        let mut hub = HubProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<SocketAddr, String>>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut log = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match (tx.take(), line.strip_prefix("ssehub listening on http://")) {
                    (Some(t), Some(addr)) => {
                        let _ = t.send(addr.trim().parse().map_err(|e| format!("{addr:?}: {e}")));
                    }
                    (Some(t), None) => {
                        log.push_str(&line);
                        log.push('\n');
                        tx = Some(t);
                    }
                    (None, _) => eprintln!("    hub: {line}"),
                }
            }
            if let Some(t) = tx {
                let _ = t.send(Err(format!("the hub exited before listening: {log}")));
            }
        });
        hub.addr = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Ok(addr))) => addr,
            Ok(Ok(Err(e))) => return Err(e.into()),
            Ok(Err(_)) => return Err("the hub's stderr reader ended".into()),
            Err(_) => return Err("the hub did not listen within 30 s".into()),
        };
        Ok(hub)
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a round's events are published.
#[derive(Clone, Debug)]
pub enum Publish {
    /// The bench server's `POST /publish` loop: one publisher awaiting each
    /// `ChannelManager::publish`, in the server's process.
    InProcess,
    /// `POST /v1/publish/{channel}`, one event per request, on `connections` keep-alive
    /// connections at once, each awaiting its answer before its next request. With several,
    /// connection `i` names its events `p{i}` (the stream's `event:` is then `bench/c:p{i}`) and
    /// numbers them on its own: the subscribers check each publisher's order, the only order
    /// concurrent publishers to one channel have.
    Single {
        /// Keep-alive connections publishing at once.
        connections: usize,
    },
    /// `POST /v1/publish` with `size` events per request, on one keep-alive connection.
    Batch {
        /// Events per request.
        size: usize,
    },
}

/// The server a [`rounds`] run feeds.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// The bench's ssehub server (subscribers on its multiplexed endpoint, `/mux`).
    Bench(&'a ServerProc),
    /// The hub (subscribers on `GET /v1/sse`).
    Hub(&'a HubProc),
}

/// What a [`rounds`] run does.
#[derive(Clone, Debug)]
pub struct Rounds {
    /// Subscribers of the one channel.
    pub subscribers: usize,
    /// Rounds; each publishes `burst` events, then waits until every subscriber has them.
    pub rounds: u64,
    /// Events per round: at most the session queue (1,024 events), or a reader the scheduler
    /// left behind for a whole burst is cut off.
    pub burst: u64,
    /// Bytes of padding per event.
    pub pad: usize,
    /// How the events are published.
    pub publish: Publish,
    /// Give up waiting for one round (publishing it and every subscriber receiving it) after
    /// this long: the run stops there and fails.
    pub timeout: Duration,
}

/// `{"id": …}`
#[derive(Deserialize)]
struct IdAnswer {
    id: String,
}

/// `{"ids": […]}`
#[derive(Deserialize)]
struct IdsAnswer {
    ids: Vec<String>,
}

/// One event's JSON, as the bench server publishes it: `{"n":…,"t":…,"pad":"…"}`.
fn event_json(out: &mut Vec<u8>, n: u64, pad: &str) {
    use std::io::Write as _;
    let _ = write!(out, r#"{{"n":{n},"t":{},"pad":"{pad}"}}"#, now_ns());
}

/// What publishing went through: failed requests, and the first failure.
#[derive(Default)]
struct Outcome {
    errors: u64,
    first: Option<String>,
    /// The connection is unusable: stop.
    broken: bool,
}

impl Outcome {
    fn fail(&mut self, what: String) {
        self.errors += 1;
        self.first.get_or_insert(what);
    }

    fn add(&mut self, other: Outcome) {
        self.errors += other.errors;
        self.broken |= other.broken;
        if let Some(f) = other.first {
            self.first.get_or_insert(f);
        }
    }
}

/// Publish `count` events numbered from `*next` on `conn`, one request each (named `name`).
async fn publish_single(
    conn: &mut KeepAlive,
    next: &mut u64,
    count: u64,
    name: Option<String>,
    pad: &str,
) -> Outcome {
    let path = format!("/v1/publish/{HUB_CHANNEL}");
    let mut out = Outcome::default();
    let mut body = Vec::with_capacity(pad.len() + 128);
    for _ in 0..count {
        body.clear();
        body.extend_from_slice(br#"{"data":"#);
        event_json(&mut body, *next, pad);
        if let Some(name) = &name {
            body.extend_from_slice(format!(r#","event":"{name}""#).as_bytes());
        }
        body.push(b'}');
        *next += 1;
        let answered = post(conn, &path, &body, &mut out, |body| {
            (!serde_json::from_slice::<IdAnswer>(body).is_ok_and(|a| !a.id.is_empty()))
                .then(|| format!("200 without an id: {body:?}"))
        });
        if !answered.await {
            return out;
        }
    }
    out
}

/// Publish `count` events numbered from `*next` on `conn`, `size` per request.
async fn publish_batches(
    conn: &mut KeepAlive,
    next: &mut u64,
    count: u64,
    size: usize,
    pad: &str,
) -> Outcome {
    let mut out = Outcome::default();
    let mut body = Vec::with_capacity(size * (pad.len() + 128));
    let mut left = count;
    while left > 0 {
        let take = left.min(size as u64);
        body.clear();
        body.extend_from_slice(br#"{"events":["#);
        for i in 0..take {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(format!(r#"{{"channel":"{HUB_CHANNEL}","data":"#).as_bytes());
            event_json(&mut body, *next + i, pad);
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        *next += take;
        left -= take;
        let answered = post(conn, "/v1/publish", &body, &mut out, |body| {
            let ids = serde_json::from_slice::<IdsAnswer>(body).map_or(0, |a| a.ids.len());
            (ids as u64 != take).then(|| format!("200 with {ids} ids for {take} events"))
        });
        if !answered.await {
            return out;
        }
    }
    out
}

/// POST `body` to `path`: a `200` is checked by `check` (which names what is wrong), any other
/// answer is a failure. `false` when the connection broke (the publisher stops).
async fn post(
    conn: &mut KeepAlive,
    path: &str,
    body: &[u8],
    out: &mut Outcome,
    check: impl FnOnce(&[u8]) -> Option<String>,
) -> bool {
    match conn.post_json(path, body).await {
        Ok(res) if res.status == 200 => {
            if let Some(wrong) = check(&res.body) {
                out.fail(wrong);
            }
            true
        }
        Ok(res) => {
            out.fail(format!(
                "{}: {}",
                res.status,
                String::from_utf8_lossy(&res.body)
            ));
            true
        }
        Err(e) => {
            out.fail(e.to_string());
            out.broken = true;
            false
        }
    }
}

/// CPU (user + system), system CPU and write system calls of `pid` so far.
fn counters(pid: u32) -> (f64, f64, u64) {
    let (user, system) = proc::cpu_split(pid);
    (user + system, system, proc::io_counter(pid, "syscw"))
}

/// Subscribe `r.subscribers` to one channel of `target`, then publish `r.rounds` rounds of
/// `r.burst` events as `r.publish` says, each round once every subscriber has the previous one.
/// Every delivery is checked (each publisher's `n` once and in order); publishes/s counts the
/// time spent publishing only, deliveries/s the whole run (first publish to last delivery).
#[allow(clippy::cast_precision_loss)]
pub async fn rounds(target: Target<'_>, r: &Rounds) -> Result<Run, Error> {
    let (addr, pid, path) = match target {
        Target::Bench(s) => (s.addr(), s.pid(), "/mux?channel=bench/c".to_owned()),
        Target::Hub(h) => (h.addr(), h.pid(), format!("/v1/sse?channel={HUB_CHANNEL}")),
    };
    let publishers = match (&r.publish, target) {
        (Publish::InProcess, Target::Bench(_)) => 0,
        (Publish::Single { connections }, Target::Hub(_)) => (*connections).max(1),
        (Publish::Batch { .. }, Target::Hub(_)) => 1,
        _ => return Err("in-process runs go to the bench server, HTTP runs to the hub".into()),
    };
    let conns = client::open_many(&[addr], &[path], r.subscribers, 250).await?;
    let mut http = Vec::with_capacity(publishers);
    for _ in 0..publishers {
        http.push(KeepAlive::connect(addr).await?);
    }
    let mut next = vec![0_u64; publishers];
    let pad = "x".repeat(r.pad);
    let total = r.rounds * r.burst;
    let progress = Arc::new(AtomicU64::new(0));
    let (cpu0, sys0, w0) = counters(pid);
    let t0 = Instant::now();
    // The readers' own deadline: every round at its limit. A stalled round stops them first.
    let deadline = t0 + r.timeout * u32::try_from(r.rounds.max(1)).unwrap_or(u32::MAX);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let p = progress.clone();
            tokio::spawn(async move { c.read_counting(total, deadline, Some(&p)).await })
        })
        .collect();
    let mut publishing = Duration::ZERO;
    let mut out = Outcome::default();
    let mut stalled = None;
    for round in 0..r.rounds {
        let start = Instant::now();
        match &r.publish {
            Publish::InProcess => {
                let q = PublishParams {
                    channel: "c".into(),
                    count: r.burst,
                    pad: r.pad,
                    first: round * r.burst,
                    ..PublishParams::default()
                };
                let answer = publish(addr, &q).await?;
                if answer.errors > 0 {
                    out.fail(format!("{} in-process publishes failed", answer.errors));
                }
            }
            Publish::Single { .. } => {
                let k = publishers as u64;
                let named = publishers > 1;
                let pad = &pad;
                let each =
                    http.iter_mut()
                        .zip(next.iter_mut())
                        .enumerate()
                        .map(|(i, (conn, next))| {
                            let count = r.burst / k + u64::from((i as u64) < r.burst % k);
                            let name = named.then(|| format!("p{i}"));
                            publish_single(conn, next, count, name, pad)
                        });
                for o in futures_util::future::join_all(each).await {
                    out.add(o);
                }
            }
            Publish::Batch { size } => {
                out.add(publish_batches(&mut http[0], &mut next[0], r.burst, *size, &pad).await);
            }
        }
        publishing += start.elapsed();
        let round_deadline = start + r.timeout;
        if out.broken {
            stalled = Some(format!("publishing stopped in round {round}"));
            break;
        }
        // The next round once every subscriber has this one.
        let want = r.subscribers as u64 * (round + 1) * r.burst;
        let mut ended = false;
        while progress.load(Ordering::Relaxed) < want && Instant::now() < round_deadline {
            // Every reader returned (their streams ended, e.g. cut off at the queue bound).
            ended = tasks.iter().all(tokio::task::JoinHandle::is_finished);
            if ended {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if progress.load(Ordering::Relaxed) < want {
            stalled = Some(if ended {
                format!("round {round}: every subscriber's stream ended before it had every event")
            } else {
                format!(
                    "round {round} did not reach every subscriber within {:?}",
                    r.timeout
                )
            });
            break;
        }
    }
    let published = Instant::now();
    let mut run = Run {
        subscribers: r.subscribers,
        channels: 1,
        events: total,
        expected: r.subscribers as u64 * total,
        errors: out.errors,
        publish_secs: publishing.as_secs_f64(),
        ..Run::default()
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    // Without subscribers the run ends with its last publish.
    let mut last = published;
    if stalled.is_some() {
        // Their counts are lost with them; `progress` below says how far they got.
        for t in &tasks {
            t.abort();
        }
    }
    for t in tasks {
        let Ok(got) = t.await else { continue };
        run.absorb(&got, &mut hist, usize::MAX);
        if let Some(at) = got.last_at {
            last = last.max(at);
        }
    }
    if stalled.is_some() {
        run.delivered = progress.load(Ordering::Relaxed);
    }
    let (cpu1, sys1, w1) = counters(pid);
    run.lost = run.expected.saturating_sub(run.delivered);
    run.secs = (last - t0).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    {
        run.publishes_per_s = total as f64 / run.publish_secs.max(1e-9);
        run.deliveries_per_s = run.delivered as f64 / run.secs.max(1e-9);
        run.cpu_s = cpu1 - cpu0;
        run.deliveries_per_cpu_s = run.delivered as f64 / run.cpu_s.max(0.01);
        run.sys_share = (sys1 - sys0) / run.cpu_s.max(0.01);
        run.writes_per_delivery = if run.delivered == 0 {
            0.0
        } else {
            (w1 - w0) as f64 / run.delivered as f64
        };
    }
    run.percentiles(&hist);
    run.peak_rss_kib = proc::status_kib(pid, "VmHWM");
    let requests: u64 = http.iter().map(|c| c.requests).sum();
    run.note = format!(
        "{} rounds of {} events; publishing took {:.3} s of the {:.3} s run ({:.1} us per event); \
         {} server writes ({:.1} per event); {}",
        r.rounds,
        r.burst,
        run.publish_secs,
        run.secs,
        run.publish_secs * 1e6 / total.max(1) as f64,
        w1 - w0,
        (w1 - w0) as f64 / total.max(1) as f64,
        if publishers == 0 {
            "in-process, one publisher awaiting each publish".to_owned()
        } else {
            format!("{requests} requests on {publishers} keep-alive connection(s)")
        }
    );
    if let Some(first) = out.first {
        run.note.push_str(&format!("; first failure: {first}"));
    }
    if let Some(why) = stalled {
        run.errors += 1;
        run.note.push_str(&format!("; {why}"));
    }
    Ok(run)
}
