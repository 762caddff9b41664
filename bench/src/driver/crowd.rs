//! A crowd on one channel (scenario 13): as many connections as one machine holds (100,000 at
//! full size) all subscribed to one channel, their source addresses spread over 127.0.0.0/8.
//! Idle memory per connection, then rounds of one event each: every delivery checked and timed,
//! the time for each event to reach every subscriber, and server CPU per delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::process::{publish, stats};
use super::{Error, Run, ServerProc};
use crate::client::{self, Conn};
use crate::server::PublishParams;

/// Descriptors kept free beyond one per connection, in the load generator and in the server
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
    /// Connections being opened at once (each one opened lets the next start).
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

/// The descriptors a crowd of `connections` needs in each process.
#[must_use]
pub fn fds_needed(connections: usize) -> u64 {
    connections as u64 + FD_HEADROOM
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

/// The descriptor limits of this process and of `server` (if any), or an error naming how to
/// raise them when either soft limit is below what `connections` need ([`fds_needed`]).
pub fn check_fd_limits(connections: usize, server: Option<&ServerProc>) -> Result<String, Error> {
    let need = fds_needed(connections);
    let own = crate::fd_limits();
    let theirs = server.map(ServerProc::fd_limits);
    let before = crate::fd_limits_before()
        .map(|(s, h)| format!(" (was {s}/{h})"))
        .unwrap_or_default();
    let mut seen = format!(
        "fd limit soft/hard: load generator {}/{}{before}",
        own.0, own.1
    );
    if let Some((s, h)) = theirs {
        seen.push_str(&format!(", server {s}/{h}"));
    }
    if own.0 < need || theirs.is_some_and(|(s, _)| s < need) {
        return Err(format!(
            "{connections} connections need {need} descriptors in the load generator and in the \
             server; {seen}. The load generator raises soft and hard to /proc/sys/fs/nr_open \
             (at most {}) only where it may (CAP_SYS_RESOURCE: root, unless a container dropped \
             it); else raise them for it, as someone who may, in the shell that starts it \
             (`ulimit -Hn {need} && ulimit -n {need}`, or `prlimit --pid <shell pid> \
             --nofile={need}:{need}`), or ask for fewer connections (SSEHUB_CROWD_CONNECTIONS)",
            crate::FD_LIMIT_WANTED
        )
        .into());
    }
    Ok(seen)
}

/// One run on `server` (fresh): check the descriptor limits, open `c.connections` connections
/// to `/sse/{channel}` and measure the idle RSS per connection (before any connection against
/// all of them idle; the slope from a tenth of them is in the note), then publish `c.rounds`
/// events, one per round, and check that every connection got each once and in order.
/// `max_us` is the largest publish → receive latency, `rounds_max_us` that of each round: when
/// its event had reached every connection.
#[allow(clippy::cast_precision_loss)]
pub async fn crowd(server: &ServerProc, c: &Crowd, channel: &str) -> Result<Run, Error> {
    let fds = check_fd_limits(c.connections, Some(server))?;
    let n = c.connections.max(1);
    let path = format!("/sse/{channel}");
    let addr = server.addr();
    let each = (c.open_timeout / 10).max(Duration::from_secs(5));
    let me = std::process::id();

    // Memory: before any connection, at a tenth of them, at all of them (idle).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = server.rss_kib();
    let low = (n / 10).max(1);
    let (conns, rss_low, took) = within(c.open_timeout, "opening the connections", async {
        let open =
            |first, count| client::open_spread(addr, &path, first, count, c.concurrency, each);
        let opening = Instant::now();
        let mut conns = open(0, low)
            .await
            .map_err(|e| format!("opening {n} connections: {e}"))?;
        let mut took = opening.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_low = server.rss_kib();
        let opening = Instant::now();
        conns.extend(
            open(low, n - low)
                .await
                .map_err(|e| format!("opening {n} connections: {e}"))?,
        );
        took += opening.elapsed();
        Ok::<(Vec<Conn>, u64, Duration), Error>((conns, rss_low, took))
    })
    .await?;
    let open_secs = took.as_secs_f64();
    tokio::time::sleep(c.settle).await;
    let rss_idle = server.rss_kib();
    let sessions = within(c.round_timeout, "GET /stats", stats(addr))
        .await?
        .sessions;
    let own_rss_idle = crate::proc::status_kib(me, "VmRSS");
    let per_conn = rss_idle.saturating_sub(rss0) as f64 / n as f64;
    let slope = if n > low {
        rss_idle.saturating_sub(rss_low) as f64 / (n - low) as f64
    } else {
        per_conn
    };

    // Delivery: one event per round, the next once every connection has this one.
    let rounds = c.rounds.max(1);
    let progress = Arc::new(AtomicU64::new(0));
    let (cpu0, sys0, w0) = (server.cpu(), server.sys_cpu(), server.write_syscalls());
    let own_cpu0 = crate::proc::cpu_seconds(me);
    let t0 = Instant::now();
    let deadline = t0 + c.round_timeout * u32::try_from(rounds).unwrap_or(u32::MAX);
    // Readers that stopped before they had every event (the stream ended, or an error).
    let short = Arc::new(AtomicU64::new(0));
    // Each reader keeps its connection open and hands it back with what it read.
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (p, short) = (progress.clone(), short.clone());
            tokio::spawn(async move {
                let got = conn.read_open(rounds, deadline, Some(&p)).await;
                if got.events < rounds && (got.ended || got.error.is_some()) {
                    short.fetch_add(1, Ordering::Relaxed);
                }
                (conn, got)
            })
        })
        .collect();
    let mut publish_errors = 0;
    let mut publishing = Duration::ZERO;
    let mut stalled = None;
    let mut round_secs = Vec::new();
    for round in 0..rounds {
        let start = Instant::now();
        let q = PublishParams {
            channel: channel.to_owned(),
            count: 1,
            pad: c.pad,
            first: round,
            ..PublishParams::default()
        };
        let failed = within(c.round_timeout, "POST /publish", publish(addr, &q))
            .await?
            .errors;
        publishing += start.elapsed();
        if failed > 0 {
            publish_errors += failed;
            stalled = Some(format!("round {round}: the publish failed"));
            break;
        }
        let want = n as u64 * (round + 1);
        let round_deadline = start + c.round_timeout;
        // A reader that stopped short can never complete the round: no use waiting for it.
        while progress.load(Ordering::Relaxed) < want
            && short.load(Ordering::Relaxed) == 0
            && Instant::now() < round_deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        round_secs.push(start.elapsed().as_secs_f64());
        if progress.load(Ordering::Relaxed) < want {
            let gone = short.load(Ordering::Relaxed);
            stalled = Some(if gone > 0 {
                format!("round {round}: {gone} streams ended before they had every event")
            } else {
                format!(
                    "round {round} reached {} of {n} connections within {:?}",
                    progress.load(Ordering::Relaxed) - n as u64 * round,
                    c.round_timeout
                )
            });
            break;
        }
    }
    let (cpu1, sys1, w1) = (server.cpu(), server.sys_cpu(), server.write_syscalls());
    let own_cpu = crate::proc::cpu_seconds(me) - own_cpu0;
    if stalled.is_some() {
        for t in &tasks {
            t.abort();
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
    let hist = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
    let mut all = hist()?;
    let mut per_round = (0..rounds).map(|_| hist()).collect::<Result<Vec<_>, _>>()?;
    let mut last = t0;
    let mut held = Vec::with_capacity(n);
    for t in tasks {
        let Ok((conn, got)) = t.await else { continue };
        run.absorb(&got, &mut all, usize::MAX);
        // A connection that got every event in order has round r's latency at r.
        for (h, us) in per_round.iter_mut().zip(&got.latencies_us) {
            h.saturating_record(u64::from(*us).max(1));
        }
        if let Some(at) = got.last_at {
            last = last.max(at);
        }
        if got.gaps > 0 || (got.ended && got.events < rounds) {
            run.errors += 1;
        }
        held.push(conn);
    }
    if stalled.is_some() {
        run.delivered = progress.load(Ordering::Relaxed);
    }
    let own_rss_peak = crate::proc::status_kib(me, "VmHWM");
    // Every connection stays open until the server's CPU was read; now they go.
    drop(held);
    run.lost = run.expected.saturating_sub(run.delivered);
    run.secs = (last - t0).as_secs_f64();
    run.publishes_per_s = rounds as f64 / run.publish_secs.max(1e-9);
    run.deliveries_per_s = run.delivered as f64 / run.secs.max(1e-9);
    run.cpu_s = cpu1 - cpu0;
    run.deliveries_per_cpu_s = run.delivered as f64 / run.cpu_s.max(0.01);
    run.sys_share = (sys1 - sys0) / run.cpu_s.max(0.01);
    run.writes_per_delivery = (w1 - w0) as f64 / run.delivered.max(1) as f64;
    run.percentiles(&all);
    run.max_us = all.max();
    run.rounds_max_us = per_round.iter().map(Histogram::max).collect();
    run.peak_rss_kib = server.peak_rss_kib();
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
    run.note = format!(
        "{n} connections on one channel from {} .. {} (one source address each), opened in \
         {open_secs:.1} s ({:.0}/s, {} at once), server sessions {sessions}; {fds}; \
         server RSS {rss0} KiB before, {rss_low} KiB at {low}, {rss_idle} KiB at {n} idle: \
         {per_conn:.2} KiB per connection ({slope:.2} KiB from {low} to {n}); \
         {rounds} rounds of 1 event ({} bytes of padding): reached every connection after \
         [{}] ms by the events' timestamps, [{}] ms from each publish request to the last \
         reader's count; server CPU {:.2} s ({:.2} us per delivery), {} server write/writev \
         calls; \
         load generator: RSS {own_rss_idle} KiB with the connections idle, peak {own_rss_peak} \
         KiB, CPU {own_cpu:.2} s over the rounds",
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
