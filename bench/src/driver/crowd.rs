//! A crowd on one channel (scenario 13): as many connections as one machine holds (100,000 at
//! full size) all subscribed to one channel, their source addresses spread over 127.0.0.0/8.
//! Idle memory per connection, then rounds of one event each: every delivery checked and timed,
//! the time for each event to reach every subscriber, and server CPU per delivery.
//!
//! A process holds at most `RLIMIT_NOFILE` descriptors, and where the hard limit cannot be
//! raised (no `CAP_SYS_RESOURCE`) that caps one process below 100,000 connections. So the crowd
//! is held by as many server processes as the limit needs ([`processes_needed`]), each with its
//! share of the connections, and opened by as many client processes (the load generator
//! started again with `--crowd-worker`: `crowd_worker::worker`), one per server. Servers on a shared broker
//! (Redis) form one fleet and get each round's event once; servers with nothing in common
//! (the memory backend, the baseline) get it each, at the same moment. Memory and CPU are the
//! sums over the server processes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::crowd_worker::{WorkerReport, WorkerSpec};
use super::process::{publish, stats};
use super::{Error, Run, ServerProc};
use crate::client;
use crate::server::{PublishParams, now_ns};

/// Descriptors kept free beyond one per connection, in each client and server process
/// (listeners, the runtime, control requests, a broker connection).
pub const FD_HEADROOM: u64 = 1000;

/// What one crowd run does.
#[derive(Clone, Debug)]
pub struct Crowd {
    /// Connections, all on one channel, connection `i` from [`client::spread_source`]`(i)`.
    pub connections: usize,
    /// Rounds; each publishes one event to the channel and waits until every connection has it.
    pub rounds: u64,
    /// Bytes of padding per event.
    pub pad: usize,
    /// Connections being opened at once, per client process (each one opened lets the next
    /// start).
    pub concurrency: usize,
    /// Give up opening the connections after this long in all (each one: after a tenth of it,
    /// at least 5 s).
    pub open_timeout: Duration,
    /// How long the connections sit idle before the memory is read.
    pub settle: Duration,
    /// Give up waiting for one round (or a control request) after this long: the run stops
    /// there and fails.
    pub round_timeout: Duration,
}

/// The descriptors `connections` need in one process.
#[must_use]
pub fn fds_needed(connections: usize) -> u64 {
    connections as u64 + FD_HEADROOM
}

/// How many processes hold `connections` when each may open `fd_limit` descriptors: the
/// fewest whose equal shares each fit in the limit (at least 1).
#[must_use]
pub fn processes_needed(connections: usize, fd_limit: u64) -> usize {
    let per = usize::try_from(fd_limit.saturating_sub(FD_HEADROOM))
        .unwrap_or(usize::MAX)
        .max(1);
    connections.div_ceil(per).max(1)
}

/// The descriptors this machine has left for all processes (`/proc/sys/fs/file-max` less
/// those open now, from `file-nr`), if it can be read.
#[must_use]
pub fn system_fds_left() -> Option<u64> {
    let nr = std::fs::read_to_string("/proc/sys/fs/file-nr").ok()?;
    let mut f = nr.split_whitespace().map(str::parse::<u64>);
    let (open, _, max) = (f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?);
    Some(max.saturating_sub(open))
}

/// `what`, or an error once `limit` has passed.
async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| Error::from(format!("{what} took more than {limit:?}")))?
}

/// The descriptor limits of this process and of `servers` (if started yet), or an error naming
/// how to raise them when a soft limit is below what a share of `connections` over `processes`
/// server processes (and as many client processes) needs ([`fds_needed`]), or when the machine
/// has too few descriptors left for all of them.
pub fn check_fd_limits(
    connections: usize,
    processes: usize,
    servers: &[ServerProc],
) -> Result<String, Error> {
    let share = connections.div_ceil(processes.max(1));
    let need = fds_needed(share);
    let own = crate::fd_limits();
    let before = crate::fd_limits_before()
        .map(|(s, h)| format!(" (was {s}/{h})"))
        .unwrap_or_default();
    let mut seen = format!(
        "fd limit soft/hard: load generator {}/{}{before}",
        own.0, own.1
    );
    let mut low = own.0 < need;
    if let Some(s) = servers.first() {
        let (soft, hard) = s.fd_limits();
        seen.push_str(&format!(", servers {soft}/{hard}"));
        low |= servers.iter().any(|s| s.fd_limits().0 < need);
    }
    if low {
        return Err(format!(
            "{share} connections per process need {need} descriptors in each client and server \
             process; {seen}. The load generator raises soft and hard to /proc/sys/fs/nr_open \
             (at most {}) only where it may (CAP_SYS_RESOURCE: root, unless a container dropped \
             it); else raise them for it, as someone who may, in the shell that starts it \
             (`ulimit -Hn {need} && ulimit -n {need}`, or `prlimit --pid <shell pid> \
             --nofile={need}:{need}`), or spread the crowd over more processes \
             (SSEHUB_CROWD_PROCESSES)",
            crate::FD_LIMIT_WANTED
        )
        .into());
    }
    let total = 2 * connections as u64 + 2 * FD_HEADROOM * processes as u64;
    if let Some(left) = system_fds_left()
        && left < total
    {
        return Err(format!(
            "{connections} connections need about {total} descriptors on this machine (both \
             ends); it has {left} left (/proc/sys/fs/file-nr)"
        )
        .into());
    }
    Ok(seen)
}

/// One line of a client process to the load generator.
#[derive(Debug)]
enum FromWorker {
    /// Connections opened (the first `low`, then the rest), and how long it took, ms.
    Opened(u64),
    /// The result.
    Done(Box<WorkerReport>),
    /// It failed.
    Failed(String),
}

/// A client process of [`crowd`]: `exe --crowd-worker SPEC`.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<FromWorker>,
    /// Events received so far.
    progress: Arc<AtomicU64>,
    /// Connections that stopped before they had every event.
    short: Arc<AtomicU64>,
    pid: u32,
}

impl Worker {
    fn start(exe: &Path, spec: &WorkerSpec) -> Result<Self, Error> {
        let mut child = Command::new(exe)
            .arg("--crowd-worker")
            .arg(serde_json::to_string(spec)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("a client process ended at once")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        let progress = Arc::new(AtomicU64::new(0));
        let short = Arc::new(AtomicU64::new(0));
        let (p, s) = (progress.clone(), short.clone());
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                let (word, rest) = line.split_once(' ').unwrap_or((&line, ""));
                let msg = match word {
                    "progress" => {
                        let mut n = rest.split(' ').map(|v| v.parse::<u64>().unwrap_or(0));
                        p.store(n.next().unwrap_or(0), Ordering::Relaxed);
                        s.store(n.next().unwrap_or(0), Ordering::Relaxed);
                        continue;
                    }
                    "opened" => FromWorker::Opened(rest.parse().unwrap_or(0)),
                    "done" => match serde_json::from_str(rest) {
                        Ok(r) => FromWorker::Done(Box::new(r)),
                        Err(e) => FromWorker::Failed(format!("its report: {e}")),
                    },
                    "failed" => FromWorker::Failed(rest.to_owned()),
                    _ => FromWorker::Failed(format!("unexpected line {line:?}")),
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
            let _ = tx.send(FromWorker::Failed("it ended".into()));
        });
        Ok(Worker {
            child,
            stdin,
            lines,
            progress,
            short,
            pid,
        })
    }

    async fn say(&mut self, line: &str) -> Result<(), Error> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    async fn opened(&mut self) -> Result<u64, Error> {
        match self.lines.recv().await {
            Some(FromWorker::Opened(ms)) => Ok(ms),
            Some(FromWorker::Failed(e)) => Err(format!("client process {}: {e}", self.pid).into()),
            other => Err(format!("client process {}: {other:?}", self.pid).into()),
        }
    }

    async fn done(&mut self) -> Result<WorkerReport, Error> {
        match self.lines.recv().await {
            Some(FromWorker::Done(r)) => Ok(*r),
            Some(FromWorker::Failed(e)) => Err(format!("client process {}: {e}", self.pid).into()),
            other => Err(format!("client process {}: {other:?}", self.pid).into()),
        }
    }
}

/// The sum of `f` over `items` (servers, or client processes).
fn sum<T, V: std::iter::Sum<V>>(items: &[T], f: impl Fn(&T) -> V) -> V {
    items.iter().map(f).sum()
}

/// One run on `servers` (fresh; started with `exe`, which is also the client processes'
/// executable): check the descriptor limits, open `c.connections` connections to
/// `/sse/{channel}`, an equal share on each server, each share from a client process of its
/// own, and measure the idle RSS per connection (all servers' RSS before any connection against
/// all of them idle; the slope from a tenth of them is in the note), then publish `c.rounds`
/// events, one per round (to the first server only when `shared` — they share a broker — else
/// to each), and check that every connection got each once and in order. `max_us` is the
/// largest publish → receive latency, `rounds_max_us` that of each round: when its event had
/// reached every connection.
#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
pub async fn crowd(
    exe: &Path,
    servers: &[ServerProc],
    shared: bool,
    c: &Crowd,
    channel: &str,
) -> Result<Run, Error> {
    let fds = check_fd_limits(c.connections, servers.len(), servers)?;
    let n = c.connections.max(1);
    let k = servers.len().max(1);
    let path = format!("/sse/{channel}");
    let each = (c.open_timeout / 10).max(Duration::from_secs(5));
    let me = std::process::id();
    let server_rss = || sum(servers, ServerProc::rss_kib);

    // Equal shares, the first ones one larger.
    let mut workers = Vec::with_capacity(k);
    let mut first = 0;
    let mut low = 0;
    for (i, s) in servers.iter().enumerate() {
        let count = n / k + usize::from(i < n % k);
        let spec = WorkerSpec {
            addr: s.addr(),
            path: path.clone(),
            first,
            count,
            low: (count / 10).max(1).min(count),
            concurrency: c.concurrency,
            each_ms: u64::try_from(each.as_millis()).unwrap_or(u64::MAX),
            rounds: c.rounds.max(1),
        };
        first += count;
        low += spec.low;
        workers.push(Worker::start(exe, &spec)?);
    }

    // Memory: before any connection, at a tenth of them, at all of them (idle).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = server_rss();
    let (rss_low, took) = within(c.open_timeout, "opening the connections", async {
        let mut took = 0;
        for w in &mut workers {
            took = took.max(w.opened().await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_low = server_rss();
        for w in &mut workers {
            w.say("more").await?;
        }
        let mut rest = 0;
        for w in &mut workers {
            rest = rest.max(w.opened().await?);
        }
        Ok::<(u64, u64), Error>((rss_low, took + rest))
    })
    .await
    .map_err(|e| format!("opening {n} connections: {e}"))?;
    let open_secs = took as f64 / 1e3;
    tokio::time::sleep(c.settle).await;
    let rss_idle = server_rss();
    let mut sessions = 0;
    for s in servers {
        sessions += within(c.round_timeout, "GET /stats", stats(s.addr()))
            .await?
            .sessions;
    }
    let clients_rss_idle = sum(&workers, |w| crate::proc::status_kib(w.pid, "VmRSS"));
    let per_conn = rss_idle.saturating_sub(rss0) as f64 / n as f64;
    let slope = rss_idle.saturating_sub(rss_low) as f64 / (n - low).max(1) as f64;

    // Delivery: one event per round, the next once every connection has this one.
    let rounds = c.rounds.max(1);
    let cpu = |f: fn(&ServerProc) -> f64| sum(servers, f);
    let (cpu0, sys0) = (cpu(ServerProc::cpu), cpu(ServerProc::sys_cpu));
    let w0 = sum(servers, ServerProc::write_syscalls);
    let clients_cpu = |ws: &[Worker]| sum(ws, |w| crate::proc::cpu_seconds(w.pid));
    let clients_cpu0 = clients_cpu(&workers);
    let own_cpu0 = crate::proc::cpu_seconds(me);
    let wait_ms = c.round_timeout.as_millis() * u128::from(rounds);
    let t0_ns = now_ns();
    for w in &mut workers {
        w.say(&format!("read {wait_ms}")).await?;
    }
    let progress = |ws: &[Worker]| sum(ws, |w| w.progress.load(Ordering::Relaxed));
    let short = |ws: &[Worker]| sum(ws, |w| w.short.load(Ordering::Relaxed));
    let mut publish_errors = 0;
    let mut publishing = Duration::ZERO;
    let mut stalled = None;
    let mut round_secs = Vec::new();
    let targets: Vec<SocketAddr> = if shared {
        servers.iter().take(1).map(ServerProc::addr).collect()
    } else {
        servers.iter().map(ServerProc::addr).collect()
    };
    for round in 0..rounds {
        let start = Instant::now();
        let q = PublishParams {
            channel: channel.to_owned(),
            count: 1,
            pad: c.pad,
            first: round,
            ..PublishParams::default()
        };
        let answers = within(
            c.round_timeout,
            "POST /publish",
            futures_util::future::try_join_all(targets.iter().map(|a| publish(*a, &q))),
        )
        .await?;
        let failed: u64 = answers.iter().map(|a| a.errors).sum();
        publishing += start.elapsed();
        if failed > 0 {
            publish_errors += failed;
            stalled = Some(format!("round {round}: the publish failed"));
            break;
        }
        let want = n as u64 * (round + 1);
        let round_deadline = start + c.round_timeout;
        // A reader that stopped short can never complete the round: no use waiting for it.
        while progress(&workers) < want && short(&workers) == 0 && Instant::now() < round_deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        round_secs.push(start.elapsed().as_secs_f64());
        if progress(&workers) < want {
            let gone = short(&workers);
            stalled = Some(if gone > 0 {
                format!("round {round}: {gone} streams ended before they had every event")
            } else {
                format!(
                    "round {round} reached {} of {n} connections within {:?}",
                    progress(&workers) - n as u64 * round,
                    c.round_timeout
                )
            });
            break;
        }
    }
    let (cpu1, sys1) = (cpu(ServerProc::cpu), cpu(ServerProc::sys_cpu));
    let w1 = sum(servers, ServerProc::write_syscalls);
    let clients_cpu = clients_cpu(&workers) - clients_cpu0;
    let own_cpu = crate::proc::cpu_seconds(me) - own_cpu0;
    if stalled.is_some() {
        for w in &mut workers {
            w.say("abort").await?;
        }
    }

    let mut run = Run {
        subscribers: n,
        channels: 1,
        events: rounds,
        expected: n as u64 * rounds,
        errors: publish_errors,
        publish_secs: publishing.as_secs_f64(),
        kib_per_conn: per_conn,
        ..Run::default()
    };
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    run.rounds_max_us = vec![0; usize::try_from(rounds).unwrap_or(0)];
    let mut last_ns = 0;
    for w in &mut workers {
        let r = w.done().await?;
        run.delivered += r.events;
        run.duplicates += r.duplicates;
        run.errors += r.failed;
        for &(us, count) in &r.latencies_us {
            all.saturating_record_n(us.max(1), count);
        }
        for (max, us) in run.rounds_max_us.iter_mut().zip(&r.rounds_max_us) {
            *max = (*max).max(*us);
        }
        last_ns = last_ns.max(r.last_at_ns);
    }
    if stalled.is_some() {
        run.delivered = progress(&workers);
    }
    let clients_rss_peak = sum(&workers, |w| crate::proc::status_kib(w.pid, "VmHWM"));
    // Every connection stays open until the servers' CPU was read; now they go.
    for mut w in workers {
        drop(w.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(30), w.child.wait()).await;
        let _ = w.child.start_kill();
    }
    run.lost = run.expected.saturating_sub(run.delivered);
    // From the first publish to the last delivery (one clock: the events' timestamps).
    run.secs = last_ns.saturating_sub(t0_ns) as f64 / 1e9;
    run.publishes_per_s = rounds as f64 / run.publish_secs.max(1e-9);
    run.deliveries_per_s = run.delivered as f64 / run.secs.max(1e-9);
    run.cpu_s = cpu1 - cpu0;
    run.deliveries_per_cpu_s = run.delivered as f64 / run.cpu_s.max(0.01);
    run.sys_share = (sys1 - sys0) / run.cpu_s.max(0.01);
    run.writes_per_delivery = (w1 - w0) as f64 / run.delivered.max(1) as f64;
    run.percentiles(&all);
    run.max_us = all.max();
    run.peak_rss_kib = sum(servers, ServerProc::peak_rss_kib);
    if sessions != n {
        run.errors += 1;
    }
    let ms = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{:.0}", s * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let reach: Vec<f64> = run
        .rounds_max_us
        .iter()
        .map(|us| *us as f64 / 1e6)
        .collect();
    let held_by = if k == 1 {
        "one server process and one client process".to_owned()
    } else {
        format!(
            "{k} server processes ({}) and {k} client processes, {} connections each at most \
             (a process may hold {} descriptors here)",
            if shared {
                "one fleet on the broker: each event published once"
            } else {
                "each on its own: each event published to every one at once"
            },
            n.div_ceil(k),
            crate::fd_limits().0
        )
    };
    run.note = format!(
        "{n} connections on one channel from {} .. {} (one source address each), held by \
         {held_by}, opened in {open_secs:.1} s ({:.0}/s, {} at once per client process), server \
         sessions {sessions}; {fds}; server RSS (all processes) {rss0} KiB before, {rss_low} KiB \
         at {low}, {rss_idle} KiB at {n} idle: {per_conn:.2} KiB per connection ({slope:.2} KiB \
         from {low} to {n}); {rounds} rounds of 1 event ({} bytes of padding): reached every \
         connection after [{}] ms by the events' timestamps, [{}] ms from each publish request \
         to the last reader's count; server CPU {:.2} s ({:.2} us per delivery), {} server \
         write/writev calls; client processes: RSS {clients_rss_idle} KiB with the connections \
         idle, peak {clients_rss_peak} KiB, CPU {clients_cpu:.2} s over the rounds (the load \
         generator itself {own_cpu:.2} s)",
        client::spread_source(0),
        client::spread_source(n - 1),
        n as f64 / open_secs.max(1e-9),
        c.concurrency,
        c.pad,
        ms(&reach),
        ms(&round_secs),
        run.cpu_s,
        run.cpu_s * 1e6 / run.delivered.max(1) as f64,
        w1 - w0,
    );
    if let Some(why) = stalled {
        run.errors += 1;
        run.note.push_str(&format!("; {why}"));
    }
    Ok(run)
}
