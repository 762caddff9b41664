//! `ssehub-load`: the load generator. See `BENCHMARKS.md` at the repository root.
//!
//! ```text
//! ssehub-load [--smoke] [--scenarios 1,2,3,4,5,6,7,8,9,10,11,12,13] [--json FILE] [--chart FILE.png]
//! ssehub-load --serve ssehub|baseline --port P [--backend memory|redis://..|nats://..] [--metrics]
//! ```
//!
//! `--smoke` runs every scenario tiny and exits non-zero only on lost or duplicated events or
//! errors, never on timing.
//!
//! Scenario 11 starts the hub binary, `ssehub` beside this executable (or `$SSEHUB_HUB_BIN`):
//! build it with the same profile (`cargo build [--release] -p ssehub-server`).
//!
//! Scenario 13 holds 100,000 connections: the load generator raises its descriptor limit (soft
//! and hard, where it may: `CAP_SYS_RESOURCE`) before it starts the servers, which inherit it;
//! where one process cannot hold them all, they are spread over as many server processes and
//! client processes (`ssehub-load --crowd-worker SPEC`, started by the load generator itself)
//! as the limit needs.

// A command-line tool: its report goes to stdout.
#![allow(clippy::print_stdout)]

mod backends;
mod cli;
mod crowd;
mod fleet;
mod hub;
mod mux;
mod report;
mod single;
mod sizes;
mod targets;

use ssehub_bench::driver::Run;
use ssehub_bench::server;

use crate::cli::Args;
use crate::sizes::Sizes;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let a = cli::args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(kind) = a.serve {
        return rt
            .block_on(server::serve(kind, a.port, &a.backend, a.metrics))
            .map_err(|e| e.to_string().into());
    }
    if let Some(spec) = &a.crowd_worker {
        return rt.block_on(ssehub_bench::driver::crowd_worker(serde_json::from_str(
            spec,
        )?));
    }
    rt.block_on(drive(a))
}

/// Run the scenarios of `a` (then the chart's runs), print and write the report; exit non-zero
/// on any lost or duplicated event or error.
async fn drive(a: Args) -> Result<(), Error> {
    let nofile = ssehub_bench::raise_fd_limit();
    let hard = ssehub_bench::fd_limits().1;
    let exe = std::env::current_exe()?;
    let z = Sizes::new(a.smoke);
    if a.scenarios.contains(&11) {
        // A missing hub binary fails now, not after the other scenarios ran.
        ssehub_bench::driver::HubProc::binary(&exe)?;
    }
    if a.scenarios.contains(&13) {
        // So does a descriptor limit too low for scenario 13's connections.
        crowd::check_fd_limit(&z)?;
    }
    let mut runs: Vec<Run> = Vec::new();
    eprintln!(
        "ssehub-load: {} (fd limit soft {nofile}, hard {hard})",
        report::machine()
    );
    for &sc in &a.scenarios {
        eprintln!("scenario {sc}");
        match sc {
            1 => runs.extend(single::scenario1(&exe, &z).await?),
            2 => runs.extend(single::scenario2(&exe, &z).await?),
            3 => runs.extend(single::scenario3(&exe, &z).await?),
            4 => runs.extend(single::scenario4(&exe, &z).await?),
            5 => runs.extend(backends::scenario5(&exe, &z).await?),
            6 => runs.extend(single::scenario6(&exe, &z).await?),
            7 => runs.extend(single::scenario7(&exe, &z).await?),
            8 => runs.extend(backends::scenario8(&exe, &z).await?),
            9 => runs.extend(single::scenario9(&exe, &z).await?),
            10 => runs.extend(fleet::scenario10(&exe, &z).await?),
            11 => runs.extend(hub::scenario11(&exe, &z).await?),
            12 => runs.extend(mux::scenario12(&exe, &z).await?),
            13 => runs.extend(crowd::scenario13(&exe, &z).await?),
            other => return Err(format!("no scenario {other}").into()),
        }
    }
    if let Some(path) = &a.chart {
        runs.extend(single::chart(&exe, &z, path).await?);
    }
    report::finish(&a, &runs)
}
