//! Allocations per publish must not grow with the number of subscribers: the hub frames an
//! event once and shares the bytes, so each extra session costs no allocation.

use std::alloc::System;

use futures_util::StreamExt;
use ssehub_bench::server::BenchEvent;
use ssehub_core::{ChannelManager, Session, SubscribeOptions};
use ssehub_memory::MemoryBroker;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PUBLISHES: usize = 200;

async fn round(manager: &ChannelManager<BenchEvent>, ev: &BenchEvent, sessions: &mut [Session]) {
    manager.publish("c", ev).await.expect("publish");
    for s in sessions {
        assert!(s.next().await.is_some());
    }
}

/// Allocations (and bytes) per publish-and-drain with `n` subscribers, after a warm-up.
fn per_publish(n: usize) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let manager = ChannelManager::<BenchEvent>::builder(MemoryBroker::new())
            .build()
            .expect("manager");
        let mut sessions: Vec<Session> = Vec::with_capacity(n);
        for _ in 0..n {
            sessions.push(
                manager
                    .subscribe("c", SubscribeOptions::new())
                    .await
                    .expect("session"),
            );
        }
        let ev = BenchEvent {
            n: 1,
            t: 2,
            pad: "padding",
        };
        for _ in 0..50 {
            round(&manager, &ev, &mut sessions).await;
        }
        let region = Region::new(GLOBAL);
        for _ in 0..PUBLISHES {
            round(&manager, &ev, &mut sessions).await;
        }
        let change = region.change();
        #[allow(clippy::cast_precision_loss)]
        (
            (change.allocations + change.reallocations) as f64 / PUBLISHES as f64,
            change.bytes_allocated as f64 / PUBLISHES as f64,
        )
    })
}

#[test]
fn allocations_per_publish_do_not_grow_with_subscribers() {
    let (a10, b10) = per_publish(10);
    let (a1000, b1000) = per_publish(1000);
    eprintln!(
        "allocations per publish: {a10:.1} with 10 subscribers ({b10:.0} bytes), \
         {a1000:.1} with 1000 ({b1000:.0} bytes)"
    );
    assert!(
        a1000 <= a10 + 2.0,
        "allocations per publish grow with subscribers: {a10:.1} with 10, {a1000:.1} with 1000"
    );
}
