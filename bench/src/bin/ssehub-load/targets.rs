//! The targets of `BENCHMARKS.md`, checked against the runs.

use serde::Serialize;
use ssehub_bench::driver::Run;

/// One target and whether this run meets it.
#[derive(Serialize)]
pub(crate) struct Target {
    /// Scenario number.
    pub(crate) scenario: u32,
    /// What is promised.
    pub(crate) target: String,
    /// What was measured.
    pub(crate) measured: String,
    /// Whether the measurement meets the target.
    pub(crate) holds: bool,
}

/// Every target whose runs are in `runs`.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn targets(runs: &[Run]) -> Vec<Target> {
    let mut t = Vec::new();
    if let (Some(s), Some(b)) = (
        find(runs, 1, "ssehub", "burst"),
        find(runs, 1, "baseline", "burst"),
    ) {
        let r = s.deliveries_per_cpu_s / b.deliveries_per_cpu_s.max(1e-9);
        t.push(Target {
            scenario: 1,
            target: ">= 2x the baseline's deliveries per server CPU-second".into(),
            measured: format!(
                "{r:.2}x ({:.0} vs {:.0})",
                s.deliveries_per_cpu_s, b.deliveries_per_cpu_s
            ),
            holds: r >= 2.0,
        });
    }
    if let (Some(s), Some(b)) = (
        find(runs, 2, "ssehub", "100 ev/s"),
        find(runs, 2, "baseline", "100 ev/s"),
    ) {
        let r = s.cpu_s / b.cpu_s.max(1e-9);
        t.push(Target {
            scenario: 2,
            target: "<= half the baseline's server CPU".into(),
            measured: format!("{r:.2}x ({:.2} s vs {:.2} s)", s.cpu_s, b.cpu_s),
            holds: r <= 0.5,
        });
        t.push(Target {
            scenario: 2,
            target: "p99 latency <= 5 ms".into(),
            measured: format!("{} us (baseline {} us)", s.p99_us, b.p99_us),
            holds: s.p99_us <= 5000,
        });
    }
    if let Some(s) = find(runs, 3, "ssehub", "idle") {
        let b = find(runs, 3, "baseline", "idle").map_or(0.0, |b| b.kib_per_conn);
        t.push(Target {
            scenario: 3,
            target: "<= 8 KB of server memory per idle connection".into(),
            measured: format!("{:.2} KiB (baseline {b:.2} KiB)", s.kib_per_conn),
            holds: s.kib_per_conn <= 8.0,
        });
        t.push(Target {
            scenario: 3,
            target: "memory per idle connection <= the baseline's (same run)".into(),
            measured: format!("{:.2} KiB vs {b:.2} KiB", s.kib_per_conn),
            holds: s.kib_per_conn <= b,
        });
    }
    for name in ["memory", "redis", "nats"] {
        if let Some(s) = find(runs, 8, "ssehub", &format!("{name} idle channels")) {
            t.push(Target {
                scenario: 8,
                target: format!("{name}: <= 2 KiB per idle channel beyond its sessions"),
                measured: format!("{:.2} KiB", s.kib_per_conn),
                holds: s.kib_per_conn <= 2.0,
            });
        }
    }
    if let Some(s) = find(runs, 9, "ssehub", "http/2 idle streams") {
        let b = find(runs, 9, "baseline", "http/2 idle streams").map_or(0.0, |b| b.kib_per_conn);
        t.push(Target {
            scenario: 9,
            target: "<= 4 KiB of server memory per idle HTTP/2 stream".into(),
            measured: format!("{:.2} KiB (baseline {b:.2} KiB)", s.kib_per_conn),
            holds: s.kib_per_conn <= 4.0,
        });
    }
    let mem_burst = runs
        .iter()
        .find(|r| r.scenario == 5 && r.label == "memory x1 burst");
    let mem_rate = runs
        .iter()
        .find(|r| r.scenario == 5 && r.label == "memory x1 100 ev/s");
    for name in ["redis", "nats"] {
        let burst = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == format!("{name} x2 burst"));
        let rate = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == format!("{name} x2 100 ev/s"));
        let mem_batched = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == "memory x1 burst, publish_many");
        let batched = runs
            .iter()
            .find(|r| r.scenario == 5 && r.label == format!("{name} x2 burst, publish_many"));
        if let (Some(m), Some(x)) = (mem_batched, batched) {
            let r = x.deliveries_per_s / m.deliveries_per_s.max(1e-9);
            t.push(Target {
                scenario: 5,
                target: format!(
                    "{name}, one publisher with publish_many: >= 85% of the memory backend's deliveries/s"
                ),
                measured: format!(
                    "{:.0}% ({:.0} vs {:.0})",
                    r * 100.0,
                    x.deliveries_per_s,
                    m.deliveries_per_s
                ),
                holds: r >= 0.85,
            });
        }
        if let (Some(m), Some(x)) = (mem_burst, burst) {
            let r = x.deliveries_per_s / m.deliveries_per_s.max(1e-9);
            t.push(Target {
                scenario: 5,
                target: format!(
                    "{name}, one publisher awaiting each publish: >= 85% of the memory backend's deliveries/s"
                ),
                measured: format!(
                    "{:.0}% ({:.0} vs {:.0})",
                    r * 100.0,
                    x.deliveries_per_s,
                    m.deliveries_per_s
                ),
                holds: r >= 0.85,
            });
        }
        if let (Some(m), Some(x)) = (mem_rate, rate) {
            let added = x.p50_us as f64 - m.p50_us as f64;
            t.push(Target {
                scenario: 5,
                target: format!("{name}: <= 1 ms added p50 latency"),
                measured: format!("{added:+.0} us ({} vs {} us)", x.p50_us, m.p50_us),
                holds: added <= 1000.0,
            });
        }
    }
    for server in ["ssehub", "baseline"] {
        if let (Some(no), Some(with)) = (
            find(runs, 6, server, "no slow"),
            find(runs, 6, server, "with slow"),
        ) {
            let loss = 1.0 - with.deliveries_per_s / no.deliveries_per_s.max(1e-9);
            let cut = with.note.contains("-> cut off");
            t.push(Target {
                scenario: 6,
                target: format!("{server}: others lose < 5% throughput; the slow one is cut off at its queue bound"),
                measured: format!(
                    "{:+.1}% throughput ({:.0} vs {:.0} deliveries/s), p99 {} vs {} us; {}",
                    -loss * 100.0,
                    with.deliveries_per_s,
                    no.deliveries_per_s,
                    with.p99_us,
                    no.p99_us,
                    if cut { "cut off" } else { "NOT cut off" }
                ),
                holds: loss < 0.05 && cut,
            });
        }
    }
    if let (Some(idle), Some(during), Some(storm)) = (
        find(runs, 7, "ssehub", "probe, idle"),
        find(runs, 7, "ssehub", "probe, during the storm"),
        find(runs, 7, "ssehub", "storm"),
    ) {
        let r = during.p50_us as f64 / idle.p50_us.max(1) as f64;
        t.push(Target {
            scenario: 7,
            target: "resume storm: publishing elsewhere keeps p50 within 2x of idle".into(),
            measured: format!(
                "{r:.2}x ({} vs {} us; p99 {} vs {} us)",
                during.p50_us, idle.p50_us, during.p99_us, idle.p99_us
            ),
            holds: r <= 2.0,
        });
        t.push(Target {
            scenario: 7,
            target: "resume storm: server memory per non-reading resumer <= one replay page (32 x 4.1 KiB) + hyper's write buffer (408 KiB) + 20 KiB, whatever the history".into(),
            measured: format!("{:.1} KiB per client", storm.kib_per_conn),
            holds: storm.kib_per_conn <= 32.0 * 4.1 + 408.0 + 20.0,
        });
    }
    t
}

/// The run of `scenario` on `server` labelled `label`.
pub(crate) fn find<'a>(
    runs: &'a [Run],
    scenario: u32,
    server: &str,
    label: &str,
) -> Option<&'a Run> {
    runs.iter()
        .find(|r| r.scenario == scenario && r.server == server && r.label == label)
}
