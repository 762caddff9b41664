//! The scenarios across broker backends: 5 (ssehub processes sharing Redis or NATS against one
//! on memory) and 8 (memory per idle channel on each backend).

use std::path::PathBuf;

use ssehub_bench::driver::{self, Fanout, Run, ServerProc};
use ssehub_bench::server::{Kind, PublishParams};

use crate::Error;
use crate::sizes::Sizes;

/// Scenario 5: two ssehub processes sharing Redis, then NATS, against one on the memory backend.
pub(crate) async fn scenario5(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut out = Vec::new();
    use ssehub_test_support::server::BrokerServer as _;
    let redis = ssehub_test_support::redis::RedisServer::start(
        ssehub_test_support::redis::RedisOptions::new(),
    )
    .await?;
    let nats = ssehub_test_support::nats::NatsServer::start(
        ssehub_test_support::nats::NatsOptions::default(),
    )
    .await?;
    let backends = [
        ("memory", "memory".to_owned(), 1),
        ("redis", redis.url(), 2),
        ("nats", nats.url(), 2),
    ];
    for (name, url, processes) in &backends {
        for (what, count, rate, batch) in [
            ("burst", z.s5_burst, 0.0, 0),
            ("burst, publish_many", z.s5_burst, 0.0, 500),
            ("100 ev/s", z.s5_rate_events, 100.0, 0),
        ] {
            // A burst lasts ~0.15 s on 2 shared cores: one run of it moves by tens of percent
            // between sittings. Bursts are run three times (fresh servers each) and the median
            // counts; the note lists all three.
            let repeats = if rate > 0.0 || z.s5_burst < 100 { 1 } else { 3 };
            let mut runs = Vec::new();
            for _ in 0..repeats {
                let mut servers = Vec::new();
                for _ in 0..*processes {
                    servers.push(ServerProc::start(exe, Kind::Ssehub, url, false).await?);
                }
                let n = out.len() * 3 + runs.len();
                let f = Fanout {
                    paths: vec![format!("/sse/{name}{n}")],
                    subscribers: z.s5_subs,
                    publish: PublishParams {
                        channel: format!("{name}{n}"),
                        channels: 0,
                        count,
                        rate,
                        pad: 64,
                        batch,
                        ..PublishParams::default()
                    },
                    slow: false,
                    timeout: z.timeout,
                };
                runs.push(driver::fanout(&servers, &f).await?);
            }
            runs.sort_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
            let all: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}", r.deliveries_per_s))
                .collect();
            let errors: u64 = runs.iter().map(|r| r.errors).sum();
            let mut run = runs.swap_remove(runs.len() / 2);
            run.errors = errors;
            if repeats > 1 {
                run.note = format!(
                    "median of {repeats} runs (deliveries/s: {}){}{}",
                    all.join(", "),
                    if run.note.is_empty() { "" } else { "; " },
                    run.note
                );
            }
            run.scenario = 5;
            run.server = "ssehub".into();
            run.label = format!("{name} x{processes} {what}");
            eprintln!("  done: {}", run.label);
            out.push(run);
        }
    }
    Ok(out)
}

/// Scenario 8: memory per idle channel, ssehub on each backend (the baseline on its own
/// broadcast channels for reference): `n` connections on `n` channels against `n` on one.
pub(crate) async fn scenario8(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    use ssehub_test_support::server::BrokerServer as _;
    let redis = ssehub_test_support::redis::RedisServer::start(
        ssehub_test_support::redis::RedisOptions::new(),
    )
    .await?;
    let nats = ssehub_test_support::nats::NatsServer::start(
        ssehub_test_support::nats::NatsOptions::default(),
    )
    .await?;
    let mut out = Vec::new();
    for (kind, name, url) in [
        (Kind::Ssehub, "memory", "memory".to_owned()),
        (Kind::Ssehub, "redis", redis.url()),
        (Kind::Ssehub, "nats", nats.url()),
        (Kind::Baseline, "memory", "memory".to_owned()),
    ] {
        let spread = ServerProc::start(exe, kind, &url, false).await?;
        let one = ServerProc::start(exe, kind, &url, false).await?;
        let mut run = driver::idle_channels(&spread, &one, z.s8_channels).await?;
        run.scenario = 8;
        run.server = kind.as_str().into();
        run.label = format!("{name} idle channels");
        eprintln!("  done: {} {}: {}", run.server, run.label, run.note);
        out.push(run);
    }
    Ok(out)
}
