//! Multiplexed versus single streams (scenario 12): the same subscriptions, `channels` per
//! client, served either as one multiplexed connection per client (`/mux?channel=bench/0&..`)
//! or as one single-channel connection per subscription (`/sse/0`, `/sse/1`, ..). Idle memory
//! per client, then rounds published round robin to the channels, every delivery checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::process::{publish, stats};
use super::{Error, Run, ServerProc};
use crate::client;
use crate::server::PublishParams;

/// How a client holds its subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streams {
    /// One connection to the multiplexed endpoint carrying every channel of the client.
    Multiplexed,
    /// One single-channel connection per channel.
    Single,
}

/// What one multiplexed-versus-single run does.
#[derive(Clone, Debug)]
pub struct MuxVsSingle {
    /// Clients; each subscribes to every one of the `channels` channels.
    pub clients: usize,
    /// Channels per client (the same channels `0..channels` for every client).
    pub channels: usize,
    /// Rounds; each publishes `burst` events to every channel (round robin over the channels,
    /// one publisher awaiting each publish), then waits until every subscriber has them.
    pub rounds: u64,
    /// Events per channel per round.
    pub burst: u64,
    /// Bytes of padding per event.
    pub pad: usize,
    /// Give up waiting for one round after this long: the run stops there and fails.
    pub timeout: Duration,
}

impl MuxVsSingle {
    /// The paths a client opens, and so the connections it holds.
    #[must_use]
    pub fn paths(&self, streams: Streams) -> Vec<String> {
        match streams {
            Streams::Multiplexed => {
                let list: Vec<String> = (0..self.channels)
                    .map(|c| format!("channel=bench/{c}"))
                    .collect();
                vec![format!("/mux?{}", list.join("&"))]
            }
            Streams::Single => (0..self.channels).map(|c| format!("/sse/{c}")).collect(),
        }
    }
}

/// Open `clients` clients' connections (each client's `paths`, in order), `wave` at a time.
async fn open_clients(
    server: &ServerProc,
    paths: &[String],
    clients: usize,
) -> Result<Vec<client::Conn>, Error> {
    Ok(client::open_many(&[server.addr()], paths, clients * paths.len(), 250).await?)
}

/// One run on `server` (fresh, memory backend): open the clients' subscriptions as `streams`
/// says, measure the idle RSS per client (the slope from a tenth of the clients to all of them,
/// so the process's fixed costs stay out), then publish `m.rounds` rounds and check that every
/// subscriber got every event of each of its channels once and in order. `kib_per_conn` of the
/// run is the RSS per client (per `m.channels` subscriptions).
#[allow(clippy::cast_precision_loss)]
pub async fn mux_vs_single(
    server: &ServerProc,
    m: &MuxVsSingle,
    streams: Streams,
) -> Result<Run, Error> {
    let paths = m.paths(streams);
    let k = m.channels as u64;
    let clients = m.clients.max(1);
    let low = (clients / 10).max(1).min(clients);
    // Memory: before any connection, at a tenth of the clients, at all of them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = server.rss_kib();
    let mut conns = open_clients(server, &paths, low).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_low = server.rss_kib();
    conns.extend(open_clients(server, &paths, clients - low).await?);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_high = server.rss_kib();
    let sessions = stats(server.addr()).await?.sessions;
    let per_client = if clients > low {
        rss_high.saturating_sub(rss_low) as f64 / (clients - low) as f64
    } else {
        rss_high.saturating_sub(rss0) as f64 / clients as f64
    };
    let connections = conns.len();

    // Delivery: rounds of `burst` events to every channel, each once every subscriber has the
    // previous one (a round stays far below the session queue's 1,024 events per channel).
    let total = m.rounds * m.burst;
    // Per connection: every event of each of its channels.
    let per_conn = total * (k / paths.len() as u64);
    let subscriptions = clients as u64 * k;
    let progress = Arc::new(AtomicU64::new(0));
    let (cpu0, sys0, w0) = (server.cpu(), server.sys_cpu(), server.write_syscalls());
    let t0 = Instant::now();
    let deadline = t0 + m.timeout * u32::try_from(m.rounds.max(1)).unwrap_or(u32::MAX);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let p = progress.clone();
            tokio::spawn(async move { c.read_counting(per_conn, deadline, Some(&p)).await })
        })
        .collect();
    let mut publish_errors = 0;
    let mut publishing = Duration::ZERO;
    let mut stalled = None;
    for round in 0..m.rounds {
        let start = Instant::now();
        let q = PublishParams {
            channels: m.channels,
            count: m.burst,
            pad: m.pad,
            first: round * m.burst,
            ..PublishParams::default()
        };
        publish_errors += publish(server.addr(), &q).await?.errors;
        publishing += start.elapsed();
        let want = subscriptions * (round + 1) * m.burst;
        let round_deadline = start + m.timeout;
        let mut ended = false;
        while progress.load(Ordering::Relaxed) < want && Instant::now() < round_deadline {
            ended = tasks.iter().all(tokio::task::JoinHandle::is_finished);
            if ended {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if progress.load(Ordering::Relaxed) < want {
            stalled = Some(if ended {
                format!("round {round}: every stream ended before it had every event")
            } else {
                format!(
                    "round {round} did not reach every subscriber within {:?}",
                    m.timeout
                )
            });
            break;
        }
    }
    if stalled.is_some() {
        for t in &tasks {
            t.abort();
        }
    }
    let mut run = Run {
        subscribers: clients * m.channels,
        channels: m.channels,
        events: total,
        expected: subscriptions * total,
        errors: publish_errors,
        publish_secs: publishing.as_secs_f64(),
        kib_per_conn: per_client,
        ..Run::default()
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut last = t0;
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
    let (cpu1, sys1, w1) = (server.cpu(), server.sys_cpu(), server.write_syscalls());
    run.lost = run.expected.saturating_sub(run.delivered);
    run.secs = (last - t0).as_secs_f64();
    run.publishes_per_s = (total * k) as f64 / run.publish_secs.max(1e-9);
    run.deliveries_per_s = run.delivered as f64 / run.secs.max(1e-9);
    run.cpu_s = cpu1 - cpu0;
    run.deliveries_per_cpu_s = run.delivered as f64 / run.cpu_s.max(0.01);
    run.sys_share = (sys1 - sys0) / run.cpu_s.max(0.01);
    run.writes_per_delivery = (w1 - w0) as f64 / run.delivered.max(1) as f64;
    run.percentiles(&hist);
    run.peak_rss_kib = server.peak_rss_kib();
    let expected_sessions = clients * m.channels;
    if sessions != expected_sessions {
        run.errors += 1;
    }
    run.note = format!(
        "{clients} clients, {connections} connections, {} subscriptions (server sessions {sessions}); \
         RSS {rss0} KiB before, {rss_low} KiB at {low} clients, {rss_high} KiB at {clients}: \
         {per_client:.2} KiB per client, {:.2} KiB per subscription; \
         {} rounds of {} event(s) per channel, {} server writes",
        expected_sessions,
        per_client / m.channels.max(1) as f64,
        m.rounds,
        m.burst,
        w1 - w0,
    );
    if let Some(why) = stalled {
        run.errors += 1;
        run.note.push_str(&format!("; {why}"));
    }
    Ok(run)
}
