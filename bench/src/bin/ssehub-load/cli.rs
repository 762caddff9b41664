//! Command-line parsing of `ssehub-load`.

use std::path::PathBuf;

use ssehub_bench::server::Kind;

use crate::Error;

/// The command line.
#[derive(Debug)]
pub(crate) struct Args {
    /// `--smoke`: every scenario tiny.
    pub(crate) smoke: bool,
    /// `--scenarios 1,2,..`: which scenarios to run, in order.
    pub(crate) scenarios: Vec<u32>,
    /// `--json FILE`: where the report goes.
    pub(crate) json: PathBuf,
    /// `--chart FILE.png`: also run and draw the throughput chart.
    pub(crate) chart: Option<PathBuf>,
    /// `--serve ssehub|baseline`: be that server instead of the load generator.
    pub(crate) serve: Option<Kind>,
    /// `--port P` of the server.
    pub(crate) port: u16,
    /// `--backend memory|redis://..|nats://..` of the server.
    pub(crate) backend: String,
    /// `--metrics`: the server records metrics.
    pub(crate) metrics: bool,
    /// `--crowd-worker SPEC`: be a client process of scenario 13 (SPEC: a
    /// `driver::WorkerSpec` in JSON) instead of the load generator.
    pub(crate) crowd_worker: Option<String>,
}

/// Parse the process's arguments.
pub(crate) fn args() -> Result<Args, Error> {
    let mut a = Args {
        smoke: false,
        scenarios: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
        json: PathBuf::from("bench-results.json"),
        chart: None,
        serve: None,
        port: 0,
        backend: "memory".into(),
        metrics: false,
        crowd_worker: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--scenarios" => {
                a.scenarios = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--json" => a.json = value()?.into(),
            "--chart" => a.chart = Some(value()?.into()),
            "--serve" => {
                a.serve = Some(match value()?.as_str() {
                    "ssehub" => Kind::Ssehub,
                    "baseline" => Kind::Baseline,
                    other => return Err(format!("unknown server {other:?}").into()),
                });
            }
            "--port" => a.port = value()?.parse()?,
            "--backend" => a.backend = value()?,
            "--metrics" => a.metrics = true,
            "--crowd-worker" => a.crowd_worker = Some(value()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(a)
}
