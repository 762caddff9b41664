//! What idempotent publishing costs on the memory backend: 200,000 publishes through a
//! `ChannelManager` (each with a generated key of its own) with the window on, against the same
//! with the window off, in one run. Generated keys are not remembered in process (nothing
//! resends there), so the two should match; a first version that remembered them ran at 0.44×. A measurement, not a CI test (it asserts nothing about
//! time): `cargo test -p ssehub-memory --release --test publish_cost -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use ssehub_core::ChannelManager;
use ssehub_memory::MemoryBroker;

async fn rate(window: Duration) -> f64 {
    const N: u64 = 200_000;
    let broker = MemoryBroker::builder()
        .idempotency_window(window)
        .history(1024)
        .build();
    let manager = ChannelManager::<u64>::builder(broker)
        .build()
        .expect("manager");
    let start = Instant::now();
    for i in 0..N {
        manager.publish("cost", &i).await.expect("publish");
    }
    N as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement, run by hand"]
async fn idempotency_window_cost() {
    // Warm up, then alternate to share the machine's noise.
    rate(Duration::ZERO).await;
    let mut off = Vec::new();
    let mut on = Vec::new();
    for _ in 0..3 {
        off.push(rate(Duration::ZERO).await);
        on.push(rate(Duration::from_secs(120)).await);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut off), median(&mut on));
    eprintln!(
        "window off: {off:.0} publishes/s; window on: {on:.0} publishes/s; on/off {:.2}",
        on / off
    );
}
