//! Scenario 11: the hub over HTTP. One channel, its subscribers fed in rounds published
//! in-process (the bench server's `POST /publish` loop) or through the `ssehub` hub's HTTP API
//! on keep-alive connections, one request per event or in batches; fresh servers for each run.

use std::path::PathBuf;

use ssehub_bench::driver::{self, HubProc, Publish, Rounds, Run, ServerProc, Target};
use ssehub_bench::server::Kind;

use crate::Error;
use crate::sizes::Sizes;

/// The runs of scenario 11: (a) in-process, (b) HTTP single, (c) HTTP batch, (d) HTTP single
/// on 4 connections at once; then (a) to (c) again without subscribers (the publish path alone).
pub(crate) async fn scenario11(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    // Before anything runs: a missing hub binary is an error, in `--smoke` too.
    let bin = HubProc::binary(exe)?;
    eprintln!("  the hub: {}", bin.display());
    let batch = format!("HTTP batch of {}, 1 keep-alive conn", z.s11_batch);
    let cases = [
        ("in-process, 1 publisher", Publish::InProcess),
        (
            "HTTP single, 1 keep-alive conn",
            Publish::Single { connections: 1 },
        ),
        (batch.as_str(), Publish::Batch { size: z.s11_batch }),
        (
            "HTTP single, 4 keep-alive conns",
            Publish::Single { connections: 4 },
        ),
    ];
    // `SSEHUB_HUB_BURST=B`: the same events in rounds of B instead (B over the session queue's
    // 1,024 events shows what a burst the subscribers cannot absorb does).
    let (rounds, burst) = match std::env::var("SSEHUB_HUB_BURST") {
        Ok(b) => {
            let b: u64 = b
                .parse()
                .map_err(|e| format!("SSEHUB_HUB_BURST={b:?}: {e}"))?;
            let b = b.max(1);
            ((z.s11_rounds * z.s11_burst / b).max(1), b)
        }
        Err(_) => (z.s11_rounds, z.s11_burst),
    };
    let mut runs = Vec::new();
    // Each way with the subscribers, then the first three with none: the publish path alone.
    let without = cases.iter().take(3).map(|(l, p)| (*l, p.clone(), 0));
    let cases: Vec<_> = cases
        .iter()
        .map(|(l, p)| (*l, p.clone(), z.s11_subs))
        .chain(without)
        .collect();
    for (label, publish, subscribers) in cases {
        let r = Rounds {
            subscribers,
            rounds,
            burst,
            pad: 64,
            publish,
            timeout: z.timeout,
        };
        let (server, mut run) = if matches!(r.publish, Publish::InProcess) {
            let s = ServerProc::start(exe, Kind::Ssehub, "memory", false).await?;
            ("ssehub", driver::rounds(Target::Bench(&s), &r).await?)
        } else {
            let h = HubProc::start(&bin, "memory").await?;
            ("hub", driver::rounds(Target::Hub(&h), &r).await?)
        };
        run.scenario = 11;
        run.server = server.into();
        run.label = if subscribers == 0 {
            format!("{label}, no subscribers")
        } else {
            label.into()
        };
        eprintln!(
            "  done: {} {}: {:.0} publishes/s, {:.0} deliveries/s",
            run.server, run.label, run.publishes_per_s, run.deliveries_per_s
        );
        runs.push(run);
    }
    Ok(runs)
}
