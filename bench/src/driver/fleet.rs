//! The fleet (scenario 10): several servers on one broker, every channel subscribed twice over
//! multiplexed connections, rounds to every channel, and a broker restart.

use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::process::publish;
use super::{Error, Run, ServerProc};
use crate::client;
use crate::server::PublishParams;

/// What the fleet scenario does.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// Channels; each is subscribed twice, on two different servers when there are several.
    pub channels: usize,
    /// Rounds: each publishes one event to every channel, in a random order.
    pub rounds: u64,
    /// Give up waiting after this long (per phase).
    pub timeout: Duration,
}

/// Wait until `progress` reaches `target` or `deadline`; when it got there.
async fn reach(progress: &std::sync::atomic::AtomicU64, target: u64, deadline: Instant) -> Instant {
    while progress.load(std::sync::atomic::Ordering::Relaxed) < target && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// The fleet scenario: `servers` share one broker; every channel is subscribed by two
/// connections of the multiplexed endpoint (connection `c` carries channels `c` and
/// `c + channels/2`), spread round robin over the servers; every round publishes one event to
/// each channel (in a random order) through the first server. `objects` describes the
/// broker-side objects once every channel is live, before the first round. Then `restart` (when given) takes
/// the broker away and brings it back, and one more round is published (each event retried
/// until accepted): the recovery time is from the broker's return until every subscriber got
/// that round.
pub async fn fleet(
    servers: &[ServerProc],
    f: &Fleet,
    objects: impl AsyncFnOnce() -> String,
    restart: Option<impl AsyncFnOnce()>,
) -> Result<Run, Error> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let addrs: Vec<SocketAddr> = servers.iter().map(ServerProc::addr).collect();
    let n = f.channels.max(2);
    let paths: Vec<String> = (0..n)
        .map(|c| format!("/mux?channel=bench/{c}&channel=bench/{}", (c + n / 2) % n))
        .collect();
    let conns = client::open_many(&addrs, &paths, n, 250).await?;
    // Every channel is live now (each connection's head came after its subscriptions).
    let objects = objects().await;
    let recovery_rounds = u64::from(restart.is_some());
    let per_conn = 2 * (f.rounds + recovery_rounds);
    let progress = Arc::new(AtomicU64::new(0));
    let cpu0: f64 = servers.iter().map(ServerProc::cpu).sum();
    let t0 = Instant::now();
    let deadline = t0 + f.timeout * 3;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let progress = progress.clone();
            tokio::spawn(async move { c.read_counting(per_conn, deadline, Some(&progress)).await })
        })
        .collect();
    let round = |count: u64, first: u64, retry: bool| PublishParams {
        channels: n,
        count,
        shuffle: true,
        first,
        retry,
        pad: 64,
        ..PublishParams::default()
    };
    let answer = publish(addrs[0], &round(f.rounds, 0, false)).await?;
    let publish_secs = t0.elapsed().as_secs_f64();
    let live = 2 * n as u64 * f.rounds;
    let t1 = reach(&progress, live, t0 + f.timeout).await;
    let delivered_live = progress.load(Ordering::Relaxed);
    let cpu1: f64 = servers.iter().map(ServerProc::cpu).sum();
    let rss: Vec<u64> = servers.iter().map(ServerProc::rss_kib).collect();
    let mut run = Run {
        subscribers: 2 * n,
        channels: n,
        events: f.rounds + recovery_rounds,
        expected: 2 * n as u64 * (f.rounds + recovery_rounds),
        errors: answer.errors,
        publish_secs,
        ..Run::default()
    };
    #[allow(clippy::cast_precision_loss)]
    {
        run.secs = (t1 - t0).as_secs_f64();
        run.deliveries_per_s = delivered_live as f64 / run.secs.max(1e-9);
        run.cpu_s = cpu1 - cpu0;
        run.deliveries_per_cpu_s = delivered_live as f64 / run.cpu_s.max(0.01);
    }
    let mut recovery = String::from("no restart");
    if let Some(restart) = restart {
        restart().await;
        let back = Instant::now();
        let answer = publish(addrs[0], &round(1, f.rounds, true)).await?;
        let published = back.elapsed().as_secs_f64();
        run.errors += answer.errors;
        let done = reach(&progress, run.expected, back + f.timeout).await;
        recovery = format!(
            "after the broker restart: the round published in {published:.2} s ({} refused), every subscriber had it {:.2} s after the broker was back",
            answer.errors,
            (done - back).as_secs_f64()
        );
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut gaps = 0;
    // The live rounds' latencies only: the round after a restart measures recovery.
    let live = usize::try_from(2 * f.rounds).unwrap_or(usize::MAX);
    for t in tasks {
        let r = t.await?;
        run.absorb(&r, &mut hist, live);
        gaps += r.gaps;
    }
    run.lost = run.expected.saturating_sub(run.delivered);
    run.percentiles(&hist);
    run.peak_rss_kib = servers.iter().map(ServerProc::peak_rss_kib).sum();
    let per_node: Vec<String> = rss
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    run.note = format!(
        "RSS per node (MiB, after the live rounds): {}; broker objects: {objects}; {recovery}; gaps {gaps}",
        per_node.join(" / ")
    );
    Ok(run)
}
