//! The scenarios on one server per kind on the memory backend (1-4, 6, 7, 9) and the chart's
//! runs.

use std::path::{Path, PathBuf};

use ssehub_bench::driver::{self, Fanout, Run, ServerProc};
use ssehub_bench::server::{Kind, PublishParams};

use crate::Error;
use crate::sizes::Sizes;

/// The servers compared: ssehub, then the baseline.
const KINDS: [Kind; 2] = [Kind::Ssehub, Kind::Baseline];

/// One channel `c`: `count` events at `rate` per second (0: a burst), `pad` bytes each.
fn one_channel(count: u64, rate: f64, pad: usize) -> PublishParams {
    PublishParams {
        channel: "c".into(),
        channels: 0,
        count,
        rate,
        pad,
        batch: 0,
        ..PublishParams::default()
    }
}

/// Start one server of `kind`, run `f` on it, label the run.
async fn single(
    exe: &PathBuf,
    scenario: u32,
    kind: Kind,
    label: &str,
    f: &Fanout,
) -> Result<Run, Error> {
    let s = ServerProc::start(exe, kind, "memory", f.slow).await?;
    let mut run = driver::fanout(std::slice::from_ref(&s), f).await?;
    run.scenario = scenario;
    run.server = kind.as_str().into();
    run.label = label.into();
    eprintln!("  done: {} {}", run.server, run.label);
    Ok(run)
}

/// Scenario 1: one channel, a burst.
pub(crate) async fn scenario1(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    for kind in KINDS {
        let f = Fanout {
            paths: vec!["/sse/c".into()],
            subscribers: z.s1_subs,
            publish: one_channel(z.s1_events, 0.0, 64),
            slow: false,
            timeout: z.timeout,
        };
        runs.push(single(exe, 1, kind, "burst", &f).await?);
    }
    Ok(runs)
}

/// Scenario 2: one channel at 100 events/s.
pub(crate) async fn scenario2(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    for kind in KINDS {
        let f = Fanout {
            paths: vec!["/sse/c".into()],
            subscribers: z.s2_subs,
            publish: one_channel(z.s2_events, 100.0, 64),
            slow: false,
            timeout: z.timeout,
        };
        runs.push(single(exe, 2, kind, "100 ev/s", &f).await?);
    }
    Ok(runs)
}

/// Scenario 3: memory per idle connection.
pub(crate) async fn scenario3(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    for kind in KINDS {
        let s = ServerProc::start(exe, kind, "memory", false).await?;
        let mut run = driver::idle(&s, z.s3_low, z.s3_high).await?;
        run.scenario = 3;
        run.server = kind.as_str().into();
        run.label = "idle".into();
        runs.push(run);
    }
    Ok(runs)
}

/// Scenario 4: many channels, a few subscribers each.
pub(crate) async fn scenario4(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    for kind in KINDS {
        let f = Fanout {
            paths: (0..z.s4_channels).map(|c| format!("/sse/{c}")).collect(),
            subscribers: z.s4_channels * z.s4_subs_per,
            publish: PublishParams {
                channel: String::new(),
                channels: z.s4_channels,
                count: z.s4_events,
                rate: 0.0,
                pad: 64,
                batch: 0,
                ..PublishParams::default()
            },
            slow: false,
            timeout: z.timeout,
        };
        runs.push(single(exe, 4, kind, "channels", &f).await?);
    }
    Ok(runs)
}

/// Scenario 6: one channel without and with a subscriber that never reads.
pub(crate) async fn scenario6(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    for kind in KINDS {
        for slow in [false, true] {
            let f = Fanout {
                paths: vec!["/sse/c".into()],
                subscribers: z.s6_subs,
                publish: one_channel(z.s6_events, z.s6_rate, 1024),
                slow,
                timeout: z.timeout,
            };
            let label = if slow { "with slow" } else { "no slow" };
            runs.push(single(exe, 6, kind, label, &f).await?);
        }
    }
    Ok(runs)
}

/// Scenario 7: the resume storm, ssehub only.
pub(crate) async fn scenario7(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    let s = ServerProc::start(exe, Kind::Ssehub, "memory", false).await?;
    for mut run in driver::resume_storm(&s, &z.storm).await? {
        run.scenario = 7;
        run.server = "ssehub".into();
        runs.push(run);
    }
    Ok(runs)
}

/// Scenario 9: memory per idle HTTP/2 stream.
pub(crate) async fn scenario9(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    for kind in KINDS {
        let s = ServerProc::start(exe, kind, "memory", false).await?;
        let mut run = driver::idle_h2(&s, z.s9_conns, z.s9_low, z.s9_high).await?;
        run.scenario = 9;
        run.server = kind.as_str().into();
        run.label = "http/2 idle streams".into();
        eprintln!("  done: {} {}", run.server, run.note);
        runs.push(run);
    }
    Ok(runs)
}

/// The chart's runs (scenario 0): deliveries/s of one burst against the subscriber count, drawn
/// to `path`.
pub(crate) async fn chart(exe: &PathBuf, z: &Sizes, path: &Path) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::new();
    let mut chart_series = (Vec::new(), Vec::new());
    eprintln!("chart");
    for &subs in &z.chart_subs {
        for kind in KINDS {
            let f = Fanout {
                paths: vec!["/sse/c".into()],
                subscribers: subs,
                publish: one_channel(z.chart_events, 0.0, 64),
                slow: false,
                timeout: z.timeout,
            };
            let run = single(exe, 0, kind, &format!("chart {subs}"), &f).await?;
            let point = (
                u32::try_from(subs).unwrap_or(u32::MAX),
                run.deliveries_per_s,
            );
            match kind {
                Kind::Ssehub => chart_series.0.push(point),
                Kind::Baseline => chart_series.1.push(point),
            }
            runs.push(run);
        }
    }
    ssehub_bench::chart::draw(path, &chart_series.0, &chart_series.1)?;
    eprintln!("chart written to {}", path.display());
    Ok(runs)
}
