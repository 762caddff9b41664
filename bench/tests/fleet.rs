//! The fleet as a test: the load generator's scenario 10 (three ssehub processes per broker,
//! every channel subscribed by two multiplexed connections on two processes, rounds to every
//! channel in a random order, then — Redis and NATS — a broker restart and one more round) on
//! memory, Redis, Redis Cluster and NATS JetStream, sized for CI (2,000 channels instead of
//! 10,000). The load generator exits non-zero on any lost, duplicated or out-of-order delivery
//! and on any refused publish; NATS must hold no JetStream consumer for the live channels.

use std::process::Command;

#[test]
fn every_subscriber_of_a_fleet_gets_every_event_once_in_order_across_a_broker_restart() {
    let json = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new(env!("CARGO_BIN_EXE_ssehub-load"))
        .args(["--smoke", "--scenarios", "10", "--json"])
        .arg(json.path())
        .env("SSEHUB_FLEET_CHANNELS", "2000")
        .output()
        .expect("run the load generator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json.path()).expect("report")).expect("json");
    let runs = report["runs"].as_array().expect("runs");
    let labels: Vec<&str> = runs.iter().filter_map(|r| r["label"].as_str()).collect();
    for backend in ["memory", "redis (3", "redis cluster", "nats jetstream"] {
        assert!(
            labels.iter().any(|l| l.contains(backend)),
            "no fleet run on {backend}: {labels:?}"
        );
    }
    for run in runs {
        assert_eq!(run["expected"], run["delivered"], "{run}");
        assert_eq!(run["lost"], 0, "{run}");
        assert_eq!(run["duplicates"], 0, "{run}");
        assert_eq!(run["errors"], 0, "{run}");
    }
    let nats = runs
        .iter()
        .find(|r| r["label"].as_str().is_some_and(|l| l.contains("nats")))
        .expect("nats run");
    let note = nats["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("broker objects: 0 JetStream consumers"),
        "{note}"
    );
    assert!(note.contains("(0 refused)"), "{note}");
}
