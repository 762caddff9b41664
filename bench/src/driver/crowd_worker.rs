//! The client process of a crowd (scenario 13): `ssehub-load --crowd-worker SPEC` opens its
//! share of the connections and reads them, talking to the load generator over its stdin and
//! stdout (see [`worker`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::time::Instant;

use super::Error;
use crate::client;
use crate::server::now_ns;

/// What a client process is asked to do: open `count` connections to `addr` at `path`,
/// numbered from `first` (their source addresses: [`client::spread_source`]), the first `low`
/// of them before the rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The server.
    pub addr: SocketAddr,
    /// `/sse/{channel}`.
    pub path: String,
    /// The number of its first connection in the whole crowd.
    pub first: usize,
    /// Its connections.
    pub count: usize,
    /// How many it opens first (the memory is read between).
    pub low: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Give up on one connection after this long, ms.
    pub each_ms: u64,
    /// Events to read per connection.
    pub rounds: u64,
}

/// What a client process read, once every connection had every event or the time was up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Events received.
    pub events: u64,
    /// Events received twice or out of order.
    pub duplicates: u64,
    /// Connections that failed: a read error, a skipped event, or a stream that ended before
    /// it had every event.
    pub failed: u64,
    /// When the last event arrived, ns since the Unix epoch (0: none).
    pub last_at_ns: u64,
    /// The publish → receive latencies of every delivery, µs: (value, count) of a histogram.
    pub latencies_us: Vec<(u64, u64)>,
    /// Per round, the largest latency: when that round's event had reached all of them.
    pub rounds_max_us: Vec<u64>,
}

/// Write `line` and a newline to stdout, at once.
async fn say(out: &tokio::sync::Mutex<tokio::io::Stdout>, line: &str) -> std::io::Result<()> {
    let mut o = out.lock().await;
    o.write_all(line.replace('\n', " ").as_bytes()).await?;
    o.write_all(b"\n").await?;
    o.flush().await
}

/// The client process of [`crowd`](fn@crate::driver::crowd) (`ssehub-load --crowd-worker SPEC`). It opens `spec.low`
/// connections and says `opened MS`, waits for `more` on stdin, opens the rest and says
/// `opened MS`, waits for `read MS`, then reads `spec.rounds` events on every connection
/// within MS, saying `progress EVENTS SHORT` as they arrive (SHORT: connections whose stream
/// stopped before it had every event), and `done REPORT` (a [`WorkerReport`] in JSON) at the
/// end; `abort` ends the reading at once. The connections stay open until stdin closes. A
/// failure is `failed WHY`.
#[allow(clippy::cast_possible_truncation)]
pub async fn worker(spec: WorkerSpec) -> Result<(), Error> {
    crate::raise_fd_limit();
    let out = Arc::new(tokio::sync::Mutex::new(tokio::io::stdout()));
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let each = Duration::from_millis(spec.each_ms);
    let open = |first, count| {
        client::open_spread(spec.addr, &spec.path, first, count, spec.concurrency, each)
    };
    let mut conns = Vec::with_capacity(spec.count);
    for (i, (first, count)) in [
        (spec.first, spec.low),
        (spec.first + spec.low, spec.count - spec.low),
    ]
    .into_iter()
    .enumerate()
    {
        if i == 1 && input.next_line().await?.as_deref() != Some("more") {
            return Ok(());
        }
        let started = Instant::now();
        match open(first, count).await {
            Ok(c) => conns.extend(c),
            Err(e) => {
                say(&out, &format!("failed opening connections: {e}")).await?;
                return Ok(());
            }
        }
        say(&out, &format!("opened {}", started.elapsed().as_millis())).await?;
    }
    let Some(wait_ms) = input
        .next_line()
        .await?
        .as_deref()
        .and_then(|l| l.strip_prefix("read "))
        .and_then(|ms| ms.parse().ok())
    else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let rounds = spec.rounds;
    let progress = Arc::new(AtomicU64::new(0));
    let short = Arc::new(AtomicU64::new(0));
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
    // `abort`, or the load generator gone, ends the reading.
    let aborts: Vec<_> = tasks
        .iter()
        .map(tokio::task::JoinHandle::abort_handle)
        .collect();
    let watcher = tokio::spawn(async move {
        loop {
            match input.next_line().await {
                Ok(Some(l)) if l == "abort" => aborts.iter().for_each(|a| a.abort()),
                Ok(Some(_)) => {}
                _ => {
                    aborts.iter().for_each(|a| a.abort());
                    return;
                }
            }
        }
    });
    let reporter = {
        let (p, s, out) = (progress.clone(), short.clone(), out.clone());
        tokio::spawn(async move {
            let mut seen = (u64::MAX, u64::MAX);
            loop {
                let now = (p.load(Ordering::Relaxed), s.load(Ordering::Relaxed));
                if now != seen {
                    seen = now;
                    if say(&out, &format!("progress {} {}", now.0, now.1))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut report = WorkerReport {
        rounds_max_us: vec![0; usize::try_from(rounds).unwrap_or(0)],
        ..WorkerReport::default()
    };
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        let Ok((conn, got)) = t.await else { continue };
        report.events += got.events;
        report.duplicates += got.duplicates;
        report.failed +=
            u64::from(got.error.is_some() || got.gaps > 0 || (got.ended && got.events < rounds));
        for (max, us) in report.rounds_max_us.iter_mut().zip(&got.latencies_us) {
            *max = (*max).max(u64::from(*us));
        }
        for us in &got.latencies_us {
            all.saturating_record(u64::from(*us).max(1));
        }
        if let Some(at) = got.last_at {
            let ago = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
            report.last_at_ns = report.last_at_ns.max(now_ns().saturating_sub(ago));
        }
        held.push(conn);
    }
    reporter.abort();
    say(
        &out,
        &format!(
            "progress {} {}",
            progress.load(Ordering::Relaxed),
            short.load(Ordering::Relaxed)
        ),
    )
    .await?;
    report.latencies_us = all
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    say(&out, &format!("done {}", serde_json::to_string(&report)?)).await?;
    // The connections stay open until the load generator has read the servers.
    let _ = watcher.await;
    drop(held);
    Ok(())
}
