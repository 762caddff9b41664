//! Scenario 12: multiplexed versus single streams. The same subscriptions (every client on the
//! same 10 channels) served as (a) one multiplexed connection per client and (b) one
//! single-channel connection per channel, each in a fresh ssehub server on the memory backend.

use std::path::PathBuf;

use ssehub_bench::driver::{self, Run, ServerProc, Streams};
use ssehub_bench::server::Kind;

use crate::Error;
use crate::sizes::Sizes;

/// The label of run (a).
pub(crate) const MULTIPLEXED: &str = "(a) multiplexed";
/// The label of run (b).
pub(crate) const SINGLE: &str = "(b) single";

/// Scenario 12: (a) then (b), each on a fresh server: idle memory per client, then rounds
/// published round robin to the channels.
pub(crate) async fn scenario12(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut m = z.mux.clone();
    // `SSEHUB_MUX_BURST=B`: B events per channel per round instead of 1 (the rounds scaled down
    // to as many events in all).
    if let Ok(b) = std::env::var("SSEHUB_MUX_BURST") {
        let b: u64 = b
            .parse()
            .map_err(|e| format!("SSEHUB_MUX_BURST={b:?}: {e}"))?;
        let b = b.max(1);
        m.rounds = (m.rounds * m.burst / b).max(1);
        m.burst = b;
    }
    // (b) holds clients × channels connections in this process (and as many in the server's):
    // fewer clients when they would not fit in the soft fd limit.
    let nofile = usize::try_from(ssehub_bench::raise_fd_limit()).unwrap_or(usize::MAX);
    let fit = nofile.saturating_sub(200) / m.channels.max(1);
    if fit < m.clients {
        eprintln!(
            "  {} clients of {} channels do not fit in the fd limit {nofile}: {fit} clients",
            m.clients, m.channels
        );
        m.clients = fit.max(1);
    }
    let mut runs = Vec::new();
    for (streams, label) in [
        (Streams::Multiplexed, MULTIPLEXED),
        (Streams::Single, SINGLE),
    ] {
        let s = ServerProc::start(exe, Kind::Ssehub, "memory", false).await?;
        let mut run = driver::mux_vs_single(&s, &m, streams).await?;
        run.scenario = 12;
        run.server = "ssehub".into();
        run.label = match streams {
            Streams::Multiplexed => format!("{label}, 1 conn x {} channels", m.channels),
            Streams::Single => format!("{label}, {} conns x 1 channel", m.channels),
        };
        eprintln!(
            "  done: {}: {:.2} KiB per client, {:.0} deliveries/s, {:.0} deliveries/CPU-s",
            run.label, run.kib_per_conn, run.deliveries_per_s, run.deliveries_per_cpu_s
        );
        runs.push(run);
    }
    Ok(runs)
}
