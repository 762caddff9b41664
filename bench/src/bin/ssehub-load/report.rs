//! The report: the Markdown table on stdout, the JSON file, the machine description, and the
//! exit status.

use std::fmt::Write as _;

use serde::Serialize;
use ssehub_bench::driver::Run;

use crate::Error;
use crate::cli::Args;
use crate::targets::{Target, find, targets};

/// The JSON report.
#[derive(Serialize)]
struct Report<'a> {
    smoke: bool,
    machine: String,
    runs: &'a [Run],
    targets: &'a [Target],
}

/// CPUs, CPU model and RAM of this machine.
pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!("{cpus} CPUs ({model}), {} MiB RAM", mem / 1024)
}

/// Check the targets, print the table, write the JSON report to `a.json`; exit with status 1 if
/// any run lost or duplicated events or had errors.
pub(crate) fn finish(a: &Args, runs: &[Run]) -> Result<(), Error> {
    let targets = targets(runs);
    println!("{}", table(runs, &targets));
    let report = Report {
        smoke: a.smoke,
        machine: machine(),
        runs,
        targets: &targets,
    };
    std::fs::write(&a.json, serde_json::to_string_pretty(&report)?)?;
    println!("JSON written to {}", a.json.display());
    let bad: Vec<&Run> = runs
        .iter()
        .filter(|r| r.lost > 0 || r.duplicates > 0 || r.errors > 0)
        .collect();
    if !bad.is_empty() {
        for r in bad {
            eprintln!(
                "FAILED: scenario {} {} {}: lost {}, duplicates {}, errors {} {}",
                r.scenario, r.server, r.label, r.lost, r.duplicates, r.errors, r.note
            );
        }
        std::process::exit(1);
    }
    Ok(())
}

/// `a / b` as `1.23x`, or `-` when `b` is zero.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// The Markdown tables: every run, then the targets.
#[allow(clippy::cast_precision_loss)]
fn table(runs: &[Run], targets: &[Target]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| sc | server | run | subs | delivered/expected | deliveries/s | ratio | server CPU s | deliveries/CPU-s | ratio | kernel share | writes/delivery | p50 us | p99 us | p99.9 us | peak RSS MiB |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        let base = if r.server == "ssehub" {
            find(runs, r.scenario, "baseline", &r.label)
        } else {
            None
        };
        let (r1, r2) = base.map_or(("".into(), "".into()), |b| {
            (
                ratio(r.deliveries_per_s, b.deliveries_per_s),
                ratio(r.deliveries_per_cpu_s, b.deliveries_per_cpu_s),
            )
        });
        if matches!(r.scenario, 3 | 8 | 9) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | - | - | - | - | - | - | - | - | - | - | - | {:.1} |",
                r.scenario,
                r.server,
                r.label,
                r.subscribers,
                r.peak_rss_kib as f64 / 1024.0
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {}/{} | {:.0} | {} | {:.2} | {:.0} | {} | {:.0}% | {:.2} | {} | {} | {} | {:.1} |",
            r.scenario,
            r.server,
            r.label,
            r.subscribers,
            r.delivered,
            r.expected,
            r.deliveries_per_s,
            r1,
            r.cpu_s,
            r.deliveries_per_cpu_s,
            r2,
            r.sys_share * 100.0,
            r.writes_per_delivery,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    for r in runs.iter().filter(|r| r.scenario == 5) {
        #[allow(clippy::cast_precision_loss)]
        let per = r.publish_secs * 1e6 / r.events.max(1) as f64;
        let _ = writeln!(
            s,
            "\nscenario 5 {}: publishing took {:.3} s ({per:.0} us per event, one publisher {})",
            r.label,
            r.publish_secs,
            if r.label.contains("publish_many") {
                "with publish_many batches"
            } else {
                "awaiting each publish"
            }
        );
    }
    hub_table(&mut s, runs);
    mux_table(&mut s, runs);
    crowd_table(&mut s, runs);
    for r in runs.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(
            s,
            "\nscenario {} {} {}: {}",
            r.scenario, r.server, r.label, r.note
        );
    }
    let _ = writeln!(s, "\n| sc | target | measured | holds |\n|---|---|---|---|");
    for t in targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.scenario,
            t.target,
            t.measured,
            if t.holds { "yes" } else { "**no**" }
        );
    }
    s
}

/// Scenario 11's own table: publishes/s beside deliveries/s, each run against the in-process
/// one with as many subscribers.
fn hub_table(s: &mut String, runs: &[Run]) {
    let hub: Vec<&Run> = runs.iter().filter(|r| r.scenario == 11).collect();
    let base_of = |r: &Run| {
        hub.iter()
            .find(|b| b.server == "ssehub" && b.subscribers == r.subscribers)
            .copied()
    };
    let Some(first) = hub.first() else {
        return;
    };
    let _ = writeln!(
        s,
        "\nscenario 11, the hub over HTTP ({} subscribers of one channel, or none; ratios to the in-process run with as many):\n\n\
         | run | publishes/s | ratio | events/s to every subscriber | deliveries/s | ratio | server CPU s | deliveries/CPU-s | ratio | writes/delivery | p50 us | p99 us | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|",
        first.subscribers
    );
    for r in &hub {
        let base = base_of(r).unwrap_or(r);
        #[allow(clippy::cast_precision_loss)]
        let (rss, events_s) = (
            r.peak_rss_kib as f64 / 1024.0,
            r.deliveries_per_s / r.subscribers.max(1) as f64,
        );
        let _ = writeln!(
            s,
            "| {} {} | {:.0} | {} | {events_s:.0} | {:.0} | {} | {:.2} | {:.0} | {} | {:.2} | {} | {} | {rss:.1} |",
            r.server,
            r.label,
            r.publishes_per_s,
            fine_ratio(r.publishes_per_s, base.publishes_per_s),
            r.deliveries_per_s,
            fine_ratio(r.deliveries_per_s, base.deliveries_per_s),
            r.cpu_s,
            r.deliveries_per_cpu_s,
            fine_ratio(r.deliveries_per_cpu_s, base.deliveries_per_cpu_s),
            r.writes_per_delivery,
            r.p50_us,
            r.p99_us,
        );
    }
}

/// Scenario 12's own table: (a) one multiplexed connection per client against (b) one
/// connection per channel, and (a)/(b).
#[allow(clippy::cast_precision_loss)]
fn mux_table(s: &mut String, runs: &[Run]) {
    let find = |prefix: &str| {
        runs.iter()
            .find(|r| r.scenario == 12 && r.label.starts_with(prefix))
    };
    let (a, b) = (find(crate::mux::MULTIPLEXED), find(crate::mux::SINGLE));
    let Some(first) = a.or(b) else {
        return;
    };
    let _ = writeln!(
        s,
        "\nscenario 12, multiplexed versus single streams ({} clients, each on the same {} channels; \
         memory per client is the RSS slope from a tenth of the clients to all of them):\n\n\
         | run | connections | subscriptions | idle KiB per client | idle KiB per subscription | delivered/expected | deliveries/s | server CPU s | deliveries/CPU-s | kernel share | writes/delivery | p50 us | p99 us | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        first.subscribers / first.channels.max(1),
        first.channels
    );
    for r in [a, b].into_iter().flatten() {
        let k = r.channels.max(1);
        let clients = r.subscribers / k;
        let connections = if r.label.starts_with(crate::mux::MULTIPLEXED) {
            clients
        } else {
            r.subscribers
        };
        let _ = writeln!(
            s,
            "| {} | {connections} | {} | {:.2} | {:.3} | {}/{} | {:.0} | {:.2} | {:.0} | {:.0}% | {:.3} | {} | {} | {:.1} |",
            r.label,
            r.subscribers,
            r.kib_per_conn,
            r.kib_per_conn / k as f64,
            r.delivered,
            r.expected,
            r.deliveries_per_s,
            r.cpu_s,
            r.deliveries_per_cpu_s,
            r.sys_share * 100.0,
            r.writes_per_delivery,
            r.p50_us,
            r.p99_us,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    if let (Some(a), Some(b)) = (a, b) {
        let _ = writeln!(
            s,
            "| (a)/(b) | {} | {} | {} | {} | | {} | {} | {} | | {} | {} | {} | {} |",
            fine_ratio(
                a.subscribers as f64 / a.channels.max(1) as f64,
                b.subscribers as f64
            ),
            fine_ratio(a.subscribers as f64, b.subscribers as f64),
            fine_ratio(a.kib_per_conn, b.kib_per_conn),
            fine_ratio(a.kib_per_conn, b.kib_per_conn),
            fine_ratio(a.deliveries_per_s, b.deliveries_per_s),
            fine_ratio(a.cpu_s, b.cpu_s),
            fine_ratio(a.deliveries_per_cpu_s, b.deliveries_per_cpu_s),
            fine_ratio(a.writes_per_delivery, b.writes_per_delivery),
            fine_ratio(a.p50_us as f64, b.p50_us as f64),
            fine_ratio(a.p99_us as f64, b.p99_us as f64),
            fine_ratio(a.peak_rss_kib as f64, b.peak_rss_kib as f64),
        );
    }
}

/// Scenario 13's own table: N connections on one channel on each server, then the ratios
/// (a)/(b) (ssehub lean against the baseline), (a)/(d) (lean against hyper) and (c)/(a) (Redis
/// against memory).
#[allow(clippy::cast_precision_loss)]
fn crowd_table(s: &mut String, runs: &[Run]) {
    use crate::crowd::{BASELINE, HYPER, LEAN, LEAN_REDIS};
    let find = |label: &str| runs.iter().find(|r| r.scenario == 13 && r.label == label);
    let all: Vec<&Run> = [LEAN, BASELINE, LEAN_REDIS, HYPER]
        .into_iter()
        .filter_map(find)
        .collect();
    let Some(first) = all.first() else {
        return;
    };
    let ms = |us: u64| us as f64 / 1e3;
    let cpu_us = |r: &Run| r.cpu_s * 1e6 / r.delivered.max(1) as f64;
    // The lean driver's send(2) calls are not counted (see the note under the table).
    let writes = |r: &Run| {
        if r.label.contains("lean") {
            "- (send)".to_owned()
        } else {
            format!("{:.3}", r.writes_per_delivery)
        }
    };
    let _ = writeln!(
        s,
        "\nscenario 13, {} connections on one channel, each from its own source address in \
         127.0.0.0/8 (idle memory: server RSS with all of them idle against none; latency: \
         publish -> receive of every delivery; \"reach all\": the largest of each round's, when \
         its one event had reached every connection):\n\n\
         | run | server | connections | idle KiB per connection | delivered/expected | server CPU s | CPU us per delivery | deliveries/CPU-s | kernel share | writes/delivery | p50 ms | p99 ms | max ms | reach all, per round, ms | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        first.subscribers
    );
    for r in &all {
        let rounds: Vec<String> = r
            .rounds_max_us
            .iter()
            .map(|us| format!("{:.0}", ms(*us)))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {}/{} | {:.2} | {:.2} | {:.0} | {:.0}% | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
            r.label,
            r.server,
            r.subscribers,
            r.kib_per_conn,
            r.delivered,
            r.expected,
            r.cpu_s,
            cpu_us(r),
            r.deliveries_per_cpu_s,
            r.sys_share * 100.0,
            writes(r),
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us),
            rounds.join(", "),
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    for (name, a, b) in [
        ("(a)/(b) lean/baseline", LEAN, BASELINE),
        ("(a)/(d) lean/hyper", LEAN, HYPER),
        ("(c)/(a) redis/memory", LEAN_REDIS, LEAN),
    ] {
        let (Some(a), Some(b)) = (find(a), find(b)) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {name} | | | {} | | {} | {} | {} | | | {} | {} | {} | | {} |",
            fine_ratio(a.kib_per_conn, b.kib_per_conn),
            fine_ratio(a.cpu_s, b.cpu_s),
            fine_ratio(cpu_us(a), cpu_us(b)),
            fine_ratio(a.deliveries_per_cpu_s, b.deliveries_per_cpu_s),
            fine_ratio(a.p50_us as f64, b.p50_us as f64),
            fine_ratio(a.p99_us as f64, b.p99_us as f64),
            fine_ratio(a.max_us as f64, b.max_us as f64),
            fine_ratio(a.peak_rss_kib as f64, b.peak_rss_kib as f64),
        );
    }
    let _ = writeln!(
        s,
        "\nwrites/delivery counts write(2) and writev(2) (`syscw` of /proc/<pid>/io): hyper \
         writes with writev, the lean driver with send(2), which `syscw` does not count."
    );
}

/// `a / b` to two significant digits at least (`0.0021x`), or `-` when `b` is zero.
fn fine_ratio(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "-".into();
    }
    let r = a / b;
    // Two digits after the first significant one, and at least two decimals.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let decimals = if r > 0.0 && r < 0.1 {
        (1.0 - r.log10().floor()) as usize
    } else {
        2
    };
    format!("{r:.decimals$}x")
}
