//! Fan-out runs: subscribers on one or more servers, one publish request, every delivery
//! verified and timed.

use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::process::{publish, stats};
use super::{Error, Run, ServerProc};
use crate::client::{self, Conn};
use crate::server::PublishParams;

/// What one fan-out run does.
#[derive(Clone, Debug)]
pub struct Fanout {
    /// Paths subscribed, round robin (e.g. one per channel).
    pub paths: Vec<String>,
    /// Subscribers (round robin over paths and servers).
    pub subscribers: usize,
    /// What to publish.
    pub publish: PublishParams,
    /// Add one subscriber that never reads (scenario 6).
    pub slow: bool,
    /// Give up waiting after this long.
    pub timeout: Duration,
}

/// Run one fan-out against `servers` (published through the first).
pub async fn fanout(servers: &[ServerProc], f: &Fanout) -> Result<Run, Error> {
    let addrs: Vec<SocketAddr> = servers.iter().map(ServerProc::addr).collect();
    let conns = client::open_many(&addrs, &f.paths, f.subscribers, 250).await?;
    let slow: Option<Conn> = if f.slow {
        Some(client::connect(addrs[0], &f.paths[0], Some(4096)).await?)
    } else {
        None
    };
    let channels = if f.publish.channels == 0 {
        1
    } else {
        f.publish.channels
    };
    let per_sub = f.publish.count;
    let cpu0: f64 = servers.iter().map(ServerProc::cpu).sum();
    let sys0: f64 = servers.iter().map(ServerProc::sys_cpu).sum();
    let w0: u64 = servers.iter().map(ServerProc::write_syscalls).sum();
    let t0 = Instant::now();
    let deadline = t0 + f.timeout;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(c.read_events(per_sub, deadline)))
        .collect();
    let answer = publish(addrs[0], &f.publish).await?;
    let publish_secs = t0.elapsed().as_secs_f64();
    let mut run = Run {
        subscribers: f.subscribers,
        channels,
        events: per_sub,
        expected: f.subscribers as u64 * per_sub,
        errors: answer.errors,
        publish_secs,
        ..Run::default()
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut last = t0;
    for t in tasks {
        let r = t.await?;
        run.absorb(&r, &mut hist, usize::MAX);
        if let Some(at) = r.last_at {
            last = last.max(at);
        }
    }
    let cpu1: f64 = servers.iter().map(ServerProc::cpu).sum();
    let sys1: f64 = servers.iter().map(ServerProc::sys_cpu).sum();
    let w1: u64 = servers.iter().map(ServerProc::write_syscalls).sum();
    run.lost = run.expected.saturating_sub(run.delivered);
    run.secs = (last - t0).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    {
        run.deliveries_per_s = run.delivered as f64 / run.secs.max(1e-9);
        run.publishes_per_s = (per_sub * channels as u64) as f64 / publish_secs.max(1e-9);
        run.cpu_s = cpu1 - cpu0;
        run.deliveries_per_cpu_s = run.delivered as f64 / run.cpu_s.max(0.01);
        run.sys_share = (sys1 - sys0) / run.cpu_s.max(0.01);
        run.writes_per_delivery = (w1 - w0) as f64 / run.delivered.max(1) as f64;
    }
    run.percentiles(&hist);
    run.peak_rss_kib = servers.iter().map(ServerProc::peak_rss_kib).sum();
    if let Some(conn) = slow {
        let st = stats(addrs[0]).await?;
        // Now read what the slow one was sent: a prefix of the events, then the end.
        let r = conn
            .read_events(per_sub, Instant::now() + Duration::from_secs(15))
            .await;
        let cut = r.ended && r.events < per_sub && r.gaps == 0;
        run.note = format!(
            "slow subscriber: got {} of {} events, stream ended: {}, server-side cut-offs: {} -> {}",
            r.events,
            per_sub,
            r.ended,
            st.slow_disconnects,
            if cut { "cut off" } else { "NOT cut off" }
        );
        // Being cut off depends on sizes (the smoke run is too small to overflow anything), so
        // it is a target, not an error; what the slow one did get must be a clean prefix.
        if r.duplicates > 0 || r.gaps > 0 || r.error.is_some() {
            run.errors += 1;
        }
    }
    Ok(run)
}
